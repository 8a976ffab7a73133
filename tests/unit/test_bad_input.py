"""Bad input fails its stage with one clear message and leaves no output behind."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pytest

from ontime.data import clean, collect
from ontime.errors import ConfigError, DataError
from ontime.io import atomic_outputs
from tests.conftest import BIN, REPO, env, write_params

TABLE = "day,x,n,cat,target\n2013-01-0{d},{x},{n},{c},{t}\n"


def write_table(path: Path, rows: Sequence[tuple[object, ...]], header: str = "day,x,n,cat,target") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [header, *(",".join(str(v) for v in row) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def good_rows(n: int = 40) -> list[tuple[object, ...]]:
    return [(f"2013-01-{1 + i % 28:02d}", i * 0.5, i, "abc"[i % 3], i % 2) for i in range(n)]


def table_params(work: Path, *extra: str) -> Path:
    return write_params(
        work / "params.yaml",
        [
            "data=table",
            "data.tables.table=data/external/table.csv",
            "+data.dtypes.table.n=Int64",
            "+data.dtypes.table.day=Date",
            "+clean.tables.table.ranges.n=[0,100]",
            *extra,
        ],
    )


def run_stage(work: Path, stage: str, params: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    if stage == "collect":
        collect.main(str(params), "data/raw")
    elif stage == "clean":
        clean.main(str(params), "data/raw", "data/clean", "metrics/clean.json")


def assert_nothing_written(work: Path) -> None:
    leftovers = [p for p in (work / "data").rglob("*") if "external" not in p.parts]
    leftovers += list((work / "metrics").glob("*")) if (work / "metrics").exists() else []
    assert not leftovers, leftovers


@pytest.fixture
def work(tmp_path: Path) -> Path:
    write_table(tmp_path / "data/external/table.csv", good_rows())
    return tmp_path


def test_good_table_collects(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_stage(work, "collect", table_params(work), monkeypatch)
    raw = pl.read_parquet(work / "data/raw/table.parquet")
    assert raw.schema["n"] == pl.Int64
    assert raw.schema["day"] == pl.Date
    assert raw.schema["x"] == pl.Float64
    assert raw.schema["cat"] == pl.String
    assert raw.height == 40


def test_missing_source_file(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = table_params(work, "data.tables.table=data/external/nope*.csv")
    with pytest.raises(DataError, match=r"data/external/nope\*\.csv: no file matches; check data.tables"):
        run_stage(work, "collect", params, monkeypatch)
    assert_nothing_written(work)


def test_missing_column(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_table(work / "data/external/table.csv", [r[:2] + r[3:] for r in good_rows()], "day,x,cat,target")
    with pytest.raises(DataError, match=r"table table .*missing column\(s\) \['n'\].*data.dtypes.table"):
        run_stage(work, "collect", table_params(work), monkeypatch)
    assert_nothing_written(work)


def test_wrong_type_names_column_and_value(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = good_rows()
    rows[7] = ("2013-01-08", 1.0, "seven", "a", 1)
    write_table(work / "data/external/table.csv", rows)
    with pytest.raises(
        DataError, match=r"column 'n' has 1 value\(s\) that are not Int64, for example 'seven'"
    ):
        run_stage(work, "collect", table_params(work), monkeypatch)
    assert_nothing_written(work)


def test_out_of_range_value(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = good_rows()
    rows[3] = ("2013-01-04", 1.0, 500, "a", 1)
    write_table(work / "data/external/table.csv", rows)
    params = table_params(work)
    run_stage(work, "collect", params, monkeypatch)
    with pytest.raises(
        DataError,
        match=r"column 'n' has 1 value\(s\) outside \[0.0, 100.0\], for example 500"
        r".*widen clean.tables.table.ranges.n",
    ):
        run_stage(work, "clean", params, monkeypatch)
    assert not (work / "data/clean").exists()
    assert not (work / "metrics/clean.json").exists()


def test_month_13_in_flights_is_out_of_range() -> None:
    flights = pl.DataFrame({"month": [1, 13], "day": [1, 2]})
    rules = collect_rules_for_flights()
    with pytest.raises(DataError, match=r"table flights: column 'month' .*for example 13"):
        clean.clean_table(flights, rules, table="flights")


def collect_rules_for_flights() -> clean.TableRules:
    return clean.TableRules(
        key=[],
        drop_missing=[],
        fill={},
        ranges={"month": (1, 12), "day": (1, 31)},
        outliers={},
        references={},
        formats={},
        normalize={},
    )


def test_empty_table(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_table(work / "data/external/table.csv", [])
    with pytest.raises(DataError, match=r"table table .*no rows; check the source"):
        run_stage(work, "collect", table_params(work), monkeypatch)
    assert_nothing_written(work)


def test_target_with_one_class(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_table(work / "data/external/table.csv", [(*r[:4], 0) for r in good_rows()])
    params = table_params(work)
    run_stage(work, "collect", params, monkeypatch)
    with pytest.raises(
        DataError, match=r"label from column 'target' has one class \(0 positive of 40 rows\)"
    ):
        run_stage(work, "clean", params, monkeypatch)
    assert not (work / "data/clean").exists()


def test_non_binary_target_asks_for_a_rule(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_table(work / "data/external/table.csv", [(*r[:4], i % 5) for i, r in enumerate(good_rows())])
    params = table_params(work)
    run_stage(work, "collect", params, monkeypatch)
    with pytest.raises(DataError, match=r"not binary.*clean\.label\.threshold"):
        run_stage(work, "clean", params, monkeypatch)


def make_sqlite(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (day TEXT, x REAL, n INTEGER, cat TEXT, target INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", good_rows())
    return path


def test_sql_source_reads_a_query(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = make_sqlite(work / "data/external/db.sqlite")
    params = table_params(
        work,
        "data.source=sql",
        f"data.uri=sqlite:///{db}",
        "data.tables.table='SELECT * FROM t WHERE n < 30'",
        f"data.dep={db}",  # collect's DVC dependency: the database file
    )
    run_stage(work, "collect", params, monkeypatch)
    raw = pl.read_parquet(work / "data/raw/table.parquet")
    assert raw.height == 30
    assert raw.schema["day"] == pl.Date
    assert raw.schema["n"] == pl.Int64


def test_bad_sql_query(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = make_sqlite(work / "data/external/db.sqlite")
    params = table_params(
        work,
        "data.source=sql",
        f"data.uri=sqlite:///{db}",
        "data.tables.table='SELECT * FROM nope'",
        f"data.dep={db}",
    )
    with pytest.raises(
        DataError, match=r"table table: SQL query failed: no such table: nope.*fix data.tables.table"
    ):
        run_stage(work, "collect", params, monkeypatch)
    assert_nothing_written(work)


def test_missing_sqlite_file_is_not_silently_created(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = table_params(
        work, "data.source=sql", "data.uri=sqlite:///data/external/missing.db", "data.tables.table='SELECT 1'"
    )
    with pytest.raises(DataError, match=r"SQLite file data/external/missing.db not found; fix data.uri"):
        run_stage(work, "collect", params, monkeypatch)
    assert not (work / "data/external/missing.db").exists()


def test_unknown_config_key_via_cli(work: Path) -> None:
    params = table_params(work)
    params.write_text(params.read_text().replace("data:\n", "data:\n  colour: blue\n", 1))
    proc = subprocess.run(
        [str(BIN / "ontime"), "collect", "--params", str(params), "--out", "data/raw"],
        cwd=work,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "data.colour: unknown key; remove it or check its spelling" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert_nothing_written(work)


def test_config_error_type(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        run_stage(work, "collect", work / "missing.yaml", monkeypatch)


def test_atomic_outputs_leave_nothing_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "out"
    metrics = tmp_path / "m.json"

    def half_written_stage() -> None:
        with atomic_outputs(final, metrics) as (tmp_dir, tmp_m):
            tmp_dir.mkdir()
            (tmp_dir / "half.parquet").write_bytes(b"partial")
            tmp_m.write_text("{}")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        half_written_stage()
    assert list(tmp_path.iterdir()) == []
    with atomic_outputs(final) as (tmp_dir,):
        tmp_dir.mkdir()
        (tmp_dir / "x").write_text("1")
    assert (final / "x").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_cli_help_explains_each_stage() -> None:
    proc = subprocess.run(
        [str(BIN / "ontime"), "--help"], capture_output=True, text=True, env=env(), cwd=REPO
    )
    assert proc.returncode == 0
    for stage in ("params", "collect", "clean", "featurize", "split"):
        assert stage in proc.stdout
    sub = subprocess.run([str(BIN / "ontime"), "clean", "--help"], capture_output=True, text=True, env=env())
    assert "de-duplicate" in sub.stdout
    assert "--metrics" in sub.stdout


def test_atomic_outputs_remove_what_a_killed_stage_left(tmp_path: Path) -> None:
    final, other = tmp_path / "clean", tmp_path / "clean.json"
    stale_dir = tmp_path / ".clean.k3j_x9ab.tmp"  # a folder output, named as tempfile.mkstemp did
    stale_dir.mkdir()
    (stale_dir / "half.parquet").write_bytes(b"partial")
    stale_file = tmp_path / ".clean.0f3a9c1e.tmp"
    stale_file.write_text("partial")
    kept = [
        tmp_path / ".clean.json.0f3a9c1e.tmp",  # another output's: left to that output's stage
        tmp_path / ".clean.notes.tmp",  # not a name atomic_outputs makes
        tmp_path / "clean.0f3a9c1e.tmp",
    ]
    for path in kept:
        path.write_text("keep")
    with atomic_outputs(final) as (tmp_dir,):
        assert not stale_dir.exists()
        assert not stale_file.exists()
        assert tmp_dir.parent == tmp_path
        assert tmp_dir.name.startswith(".clean.")
        assert tmp_dir.name.endswith(".tmp")
        tmp_dir.mkdir()
        (tmp_dir / "x").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["clean", *(p.name for p in kept)])
    with atomic_outputs(other) as (tmp_m,):
        tmp_m.write_text("{}")
    assert not kept[0].exists()
    # git ignores the temporary names: a killed stage does not show up in `git status`
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "data/.clean.0f3a9c1e.tmp", "metrics/.clean.json.ab12cd34.tmp"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert ignored.stdout.split() == ["data/.clean.0f3a9c1e.tmp", "metrics/.clean.json.ab12cd34.tmp"]
