"""The report stage and `ontime monitor` on the shrunk real data: real Evidently reports and a real
workspace reopened from disk; a known shift is found, random halves of one window are not drift."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from evidently.ui.service.base import SeriesFilter
from evidently.ui.service.storage.local.base import InMemoryDataStorage
from evidently.ui.workspace import Workspace
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ontime.config.monitor import MonitorConfig
from ontime.config.report import ReportConfig
from ontime.errors import DataError
from ontime.io import read_json, write_json
from ontime.reports import adapters, builders, monitor, stage
from ontime.reports.workspace import snapshot_id
from ontime.serving.requestlog import RequestLog, log_files, record
from ontime.spec import FeatureSpec, read_part
from tests.conftest import SHRUNK, compose_params

REPORT = {
    "sample_rows": 3000,
    "drift_share_threshold": 0.3,
    "stattest_threshold": None,
    "min_roc_auc": 0.65,
    "max_missing_share": 0.2,
    "top_drifted": 5,
    "workspace_project": "ontime",
}
MONITOR = {
    "drift_share_threshold": 0.3, "min_rows": 50, "sample_rows": 3000, "identifiers": ["flight", "tailnum"],
}  # fmt: skip
# The injected shift: flights three times as long, departures eight hours later, and half a standard
# deviation more on weather and destination columns (so that enough features move to cross 0.3).
NUDGED = [
    "wx_temp", "wx_dewp", "wx_humid", "wx_wind_dir", "wx_wind_speed", "wx_pressure", "wx_visib",
    "dest_lat", "dest_lon", "dest_alt", "sched_block_minutes", "plane_age", "plane_seats",
]  # fmt: skip
REPORT_NAMES = ("data_quality", "drift_train_vs_test", "classification_test")
# snapshots shown on the window pages (drift_train_vs_test, classification_test), with no page of their own
PAGE_PARTS = ("label_drift_train_vs_test", "prediction_drift_valid_vs_test")
# the report set of one run on the smoke data, in bytes (39 MB a run on the full data before, with
# Evidently's 3.5 MB script in every page and every plot embedded twice)
MAX_REPORT_BYTES = 10_000_000


def shift(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(
        pl.col("distance") * 3,
        (pl.col("cal_hour") + 8) % 24,
        *(pl.col(c) + 0.5 * pl.col(c).std() for c in NUDGED),
    )


def write_report_params(path: Path, **monitor_overrides: object) -> Path:
    params = compose_params(SHRUNK)
    params["report"] = dict(REPORT)
    params["monitor"] = {**MONITOR, **monitor_overrides}
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def numeric(df: pl.DataFrame, spec: FeatureSpec) -> np.ndarray:
    return df.select(pl.col(spec.numeric).cast(pl.Float64).fill_null(0.0)).to_numpy()


def months(df: pl.DataFrame, time_column: str) -> list[str]:
    return sorted(df.get_column(time_column).dt.strftime("%Y-%m").unique().to_list())


@pytest.fixture(scope="module")
def spec(data_run: Path) -> FeatureSpec:
    return FeatureSpec.load(data_run / "data/features/spec.json")


@pytest.fixture(scope="module")
def report_run(data_run: Path, spec: FeatureSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report stage on the smoke data, with a logistic regression as the champion `base`."""
    out = tmp_path_factory.mktemp("report")
    split = data_run / "data/split"
    train = read_part(split, "train", spec)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(numeric(train, spec), train.get_column(spec.target).to_numpy())
    (out / "predictions").mkdir()
    for file, part in (("test", "test"), ("valid", "finetune_valid")):  # as the evaluate stage writes
        rows = read_part(split, part, spec)
        rows.select(spec.time_column, spec.target).with_columns(
            pl.Series("base", model.predict_proba(numeric(rows, spec))[:, 1])
        ).write_parquet(out / f"predictions/{file}.parquet")
    write_json(out / "select.json", {"champion": "base", "threshold": 0.3})
    stage.main(
        str(write_report_params(out / "params.yaml")), str(data_run / "data/clean"), str(split),
        str(data_run / "data/features/spec.json"), str(out / "predictions"), str(out / "select.json"),
        str(out / "reports"), str(out / "workspace"), str(out / "report.json"),
    )  # fmt: skip
    return out


def expected_months(data_run: Path, spec: FeatureSpec) -> tuple[list[str], list[str]]:
    """(months outside the training window, months of the test window)."""
    assert spec.time_column is not None
    split = data_run / "data/split"
    later = pl.concat([read_part(split, p, spec) for p in stage.LATER_PARTS], how="vertical_relaxed")
    return months(later, spec.time_column), months(read_part(split, "test", spec), spec.time_column)


def expected_pages(data_run: Path, spec: FeatureSpec) -> tuple[list[str], dict[str, str]]:
    """(the HTML pages, the monthly reports left out as the window's twin -> that window's report).
    A month is a twin when it holds every test row and nothing else (counted, not compared)."""
    assert spec.time_column is not None
    drift_months, test_months = expected_months(data_run, spec)
    split = data_run / "data/split"
    later = pl.concat([read_part(split, p, spec) for p in stage.LATER_PARTS], how="vertical_relaxed")
    test_rows = read_part(split, "test", spec).height
    rows = later.group_by(pl.col(spec.time_column).dt.strftime("%Y-%m").alias("m")).len()
    per_month = dict(zip(rows.get_column("m").to_list(), rows.get_column("len").to_list(), strict=True))
    twins = {f"drift_{m}": "drift_train_vs_test" for m in drift_months if per_month[m] == test_rows}
    if len(test_months) == 1:
        twins[f"classification_{test_months[0]}"] = "classification_test"
    monthly = [*(f"drift_{m}" for m in drift_months), *(f"classification_{m}" for m in test_months)]
    return [*REPORT_NAMES, *(n for n in monthly if n not in twins)], twins


def window_text(df: pl.DataFrame, name: str, time_column: str, sample_rows: int | None = None) -> str:
    """How a title names ``df``, written out here independently of the code under test."""
    days = df.get_column(time_column)
    seen = f", sample of {sample_rows:,}" if sample_rows is not None and df.height > sample_rows else ""
    return f"{name} {days.min().date()}..{days.max().date()} ({df.height:,} rows{seen})"


def test_report_writes_every_report_and_a_summary(
    data_run: Path, spec: FeatureSpec, report_run: Path
) -> None:
    drift_months, _ = expected_months(data_run, spec)
    names, twins = expected_pages(data_run, spec)
    for name in names:
        html = report_run / "reports" / f"{name}.html"
        assert html.stat().st_size > 100_000, html  # Evidently's page, its script apart
        assert read_json(report_run / "reports" / f"{name}.json")["metrics"], name
    for name in PAGE_PARTS:
        assert read_json(report_run / "reports" / f"{name}.json")["metrics"], name
    assert sorted(p.stem for p in (report_run / "reports").glob("*.html")) == sorted(names)
    # the validation months' quality: in the workspace (dashboard) and as JSON, not as pages
    assert spec.time_column is not None
    validated = [
        f"classification_valid_{m}"
        for m in months(pl.read_parquet(report_run / "predictions/valid.parquet"), spec.time_column)
    ]
    assert validated
    json_files = sorted(p.stem for p in (report_run / "reports").glob("*.json"))
    assert json_files == sorted([*names, *PAGE_PARTS, *validated])

    summary = read_json(report_run / "report.json")
    assert set(summary) >= {"drift_share", "drifted_features", "top_drifted", "monthly_drift_share",
                            "champion_test_roc_auc", "failed_tests"}  # fmt: skip
    assert 0 <= summary["drift_share"] <= 1
    assert summary["drifted_features"] == round(summary["drift_share"] * len(spec.columns))
    assert len(summary["top_drifted"]) == REPORT["top_drifted"]
    assert {t["feature"] for t in summary["top_drifted"]} <= set(spec.columns)
    assert list(summary["monthly_drift_share"]) == drift_months  # a twin month too: the window's share
    assert summary["same_as_window"] == twins
    for twin in twins:
        if twin.startswith("drift_"):
            assert summary["monthly_drift_share"][twin[6:]] == summary["drift_share"]
    failed = summary["failed_tests"]
    assert failed["total"] == sum(v for k, v in failed.items() if k != "total")
    assert failed["data_quality"] == 0  # no column of the clean flights is a fifth missing
    # January against February: the calendar alone drifts past 0.3, and the test says so
    assert (summary["drift_share"] > REPORT["drift_share_threshold"]) == (failed["drift_train_vs_test"] == 1)

    # Evidently's numbers are the summary's, and its ROC AUC is scikit-learn's
    drift_json = read_json(report_run / "reports/drift_train_vs_test.json")
    share = [m["value"]["share"] for m in drift_json["metrics"] if "DriftedColumnsCount" in m["metric_name"]]
    assert share[0] == pytest.approx(summary["drift_share"], abs=1e-6)
    preds = pl.read_parquet(report_run / "predictions/test.parquet")
    auc = roc_auc_score(preds.get_column(spec.target).to_numpy(), preds.get_column("base").to_numpy())
    assert summary["champion_test_roc_auc"] == pytest.approx(auc, abs=1e-6)
    assert (auc < REPORT["min_roc_auc"]) == (failed["classification_test"] == 1)


def test_quality_tests_fire_on_a_tight_missing_share(data_run: Path, spec: FeatureSpec) -> None:
    table = pl.read_parquet(data_run / "data/clean/flights.parquet").head(3000)
    worst = max(table.get_column(c).null_count() / table.height for c in table.columns)
    snapshot, max_missing = builders.quality(
        table, spec, max_missing_share=worst / 2, name="q", timestamp=None, tags=[], metadata={}
    )
    assert max_missing == pytest.approx(worst)
    failed = adapters.failed_tests(snapshot)
    # exactly the columns over the limit fail, one test each, and nothing else does
    over = sorted(c for c in table.columns if table.get_column(c).null_count() / table.height > worst / 2)
    assert over, "the smoke flights should have columns with missing values"
    named = sorted(f.split(":")[0] for f in failed)
    assert named == sorted(f"Column '{c}' missing values" for c in over), failed


def test_workspace_reopens_with_every_snapshot_and_the_dashboard(
    data_run: Path, spec: FeatureSpec, report_run: Path
) -> None:
    drift_months, _ = expected_months(data_run, spec)
    names, twins = expected_pages(data_run, spec)
    workspace = Workspace(str(report_run / "workspace"))
    (proj,) = workspace.list_projects()
    assert proj.name == REPORT["workspace_project"]
    assert proj.id == adapters.stable_uuid("project", proj.name)  # ids from names, not random
    runs = [workspace.get_run(proj.id, sid) for sid in workspace.list_runs(proj.id)]
    assert sorted(str(s) for s in workspace.list_runs(proj.id)) == sorted(
        str(snapshot_id(proj.name, r.name)) for r in runs
    )
    validated = [r.name for r in runs if "validation" in r.tags]
    assert validated
    assert all(n.startswith("classification_valid_") for n in validated)
    assert sorted(r.name for r in runs) == sorted([*names, *PAGE_PARTS, *validated])
    # every month has its point in the dashboard's series: a twin's is its window's snapshot
    monthly = sorted((r.timestamp, r.metadata["month"]) for r in runs if {"drift", "monthly"} <= set(r.tags))
    assert [m for _, m in monthly] == drift_months
    _, test_months = expected_months(data_run, spec)
    scored = sorted(
        r.metadata["month"]
        for r in runs
        if {"classification", "monthly"} <= set(r.tags) and "validation" not in r.tags
    )
    assert scored == test_months
    by_name = {r.name: r for r in runs}
    for twin, window in twins.items():
        assert "monthly" in by_name[window].tags
        assert by_name[window].metadata["month"] == twin[-7:]
    assert all(r.metadata["title"] for r in runs)  # what each compares, in the UI's snapshot list too
    assert [t for t, _ in monthly] == [dt.datetime(int(m[:4]), int(m[5:]), 1) for m in drift_months]
    board = workspace.get_dashboard(proj.id)
    assert [t.title for t in board.tabs] == ["Drift", "Model quality"]
    for tab in board.tabs:
        assert len(tab.panels) == len(set(tab.panels))
    assert {v.metric.rsplit(":", 1)[-1] for p in board.panels for v in p.values} == {
        "DriftedColumnsCount",
        "RocAuc",
        "MeanValue",  # the guides: each test's threshold drawn beside its series
    }


def series(workspace: Path, title: str) -> tuple[list[dt.datetime], dict[str, list[float]]]:
    """A dashboard panel's data as the Evidently UI's server computes it (its own storage code):
    the timestamps of its points and each series' values, by legend."""
    ws = Workspace(str(workspace))
    (proj,) = ws.list_projects()
    (panel,) = [p for p in ws.get_dashboard(proj.id).panels if p.title == title]
    filters = [
        SeriesFilter(tags=v.tags, metadata=v.metadata, metric=v.metric, metric_labels=v.metric_labels)
        for v in panel.values
    ]
    data = asyncio.run(InMemoryDataStorage(str(workspace)).get_data_series(proj.id, filters, None, None))
    legends = [v.legend or "" for v in panel.values]
    return [s.timestamp for s in data.sources], {legends[s.filter_index]: s.values for s in data.series}


def test_dashboard_shows_every_labelled_month_from_zero_with_thresholds(
    data_run: Path, spec: FeatureSpec, report_run: Path
) -> None:
    """ROC AUC by month has a point per month of validation and test rows, equal to scikit-learn's on
    those rows, beside the test's floor; drift by month beside its threshold; series are bars (their
    axis starts at 0, a line plot's at the data's minimum); the panels only monitoring fills say so."""
    assert spec.time_column is not None
    tc = spec.time_column
    ws = Workspace(str(report_run / "workspace"))
    (proj,) = ws.list_projects()
    board = ws.get_dashboard(proj.id)
    assert {p.plot_params["plot_type"] for p in board.panels} == {"counter", "bar"}
    served = [p for p in board.panels if any("served" in v.tags for v in p.values)]
    assert len(served) == 2
    assert all("ontime monitor" in (p.subtitle or "") for p in served)

    summary = read_json(report_run / "report.json")
    expected: dict[str, float] = {}
    stamped: dict[
        dt.datetime, float
    ] = {}  # a test month's point is at its 1st, a validation one's at its first day
    for part in ("valid", "test"):
        rows = pl.read_parquet(report_run / f"predictions/{part}.parquet")
        for month in months(rows, tc):
            got = rows.filter(pl.col(tc).dt.strftime("%Y-%m") == month)
            auc = roc_auc_score(got.get_column(spec.target), got.get_column("base"))
            expected[f"{part} {month}"] = auc
            first = got.get_column(tc).min().replace(hour=0, minute=0, second=0, tzinfo=None)
            stamped[first.replace(day=1) if part == "test" else first] = auc
    assert len(expected) >= 2
    assert any(k.startswith("valid") for k in expected)
    assert summary["monthly_roc_auc"].keys() == expected.keys()
    for key, value in expected.items():
        assert summary["monthly_roc_auc"][key] == pytest.approx(value, abs=1e-6), key

    stamps, values = series(report_run / "workspace", "Champion ROC AUC by month: validation and test rows")
    assert stamps == sorted(stamps)
    assert stamps == sorted(stamped)
    assert values["ROC AUC"] == pytest.approx([stamped[t] for t in stamps], abs=1e-9)
    assert values["floor (test fails below)"] == pytest.approx([REPORT["min_roc_auc"]] * len(expected))

    drift_months, _ = expected_months(data_run, spec)
    stamps, values = series(
        report_run / "workspace", "Drifted share of features by month, against the training window"
    )
    assert len(stamps) == len(values["drifted share"]) == len(drift_months)
    assert values["drifted share"] == pytest.approx(list(summary["monthly_drift_share"].values()), abs=1e-6)
    assert values["threshold (test fails above)"] == pytest.approx(
        [REPORT["drift_share_threshold"]] * len(drift_months)
    )
    # the guides stay off the pages
    assert "guide_" not in (report_run / "reports/classification_test.html").read_text(encoding="utf-8")


def test_each_report_names_its_windows_rows_and_samples(
    data_run: Path, spec: FeatureSpec, report_run: Path
) -> None:
    """The first screen says what is compared: the windows' days, rows and samples, in the page's
    title and header (plain HTML, before any script) and in the snapshot's title."""
    assert spec.time_column is not None
    tc, n = spec.time_column, REPORT["sample_rows"]
    split = data_run / "data/split"
    reference = pl.concat([read_part(split, p, spec) for p in stage.TRAINING_PARTS], how="vertical_relaxed")
    test = read_part(split, "test", spec)
    table = pl.read_parquet(data_run / "data/clean/flights.parquet")
    table = table.with_columns(pl.col(tc).dt.convert_time_zone(str(test.schema[tc].time_zone)))
    train_sampled = window_text(reference, "train+train_valid", tc, n)
    expected = {
        "data_quality": [window_text(table, "table flights", tc, n)],
        "drift_train_vs_test": [
            train_sampled,
            window_text(test, "test", tc, n),
            window_text(reference, "train+train_valid", tc),  # label drift: every row
            window_text(test, "test", tc),
        ],
        "classification_test": [
            window_text(test, "test", tc),
            window_text(pl.read_parquet(report_run / "predictions/valid.parquet"), "validation", tc),
            "Calibration",
        ],
    }
    assert f", sample of {n:,})" in train_sampled  # the smoke windows are larger than the sample
    drift_months, _ = expected_months(data_run, spec)
    later = pl.concat([read_part(split, p, spec) for p in stage.LATER_PARTS], how="vertical_relaxed")
    names, _ = expected_pages(data_run, spec)
    for month in drift_months:
        if f"drift_{month}" in names:
            rows = later.filter(pl.col(tc).dt.strftime("%Y-%m") == month)
            expected[f"drift_{month}"] = [train_sampled, window_text(rows, f"month {month}", tc, n)]
    for name, texts in expected.items():
        page = (report_run / "reports" / f"{name}.html").read_text()
        title = page.split("<title>", 1)[1].split("</title>", 1)[0]
        header = page.split("<header", 1)[1].split("</header>", 1)[0]
        assert texts[0] in title, (name, title)
        for text in texts:
            assert text in header, (name, text, header)
    summary = read_json(report_run / "report.json")
    assert train_sampled in summary["reports"]["drift_train_vs_test"]
    workspace = Workspace(str(report_run / "workspace"))
    (proj,) = workspace.list_projects()
    runs = [workspace.get_run(proj.id, sid) for sid in workspace.list_runs(proj.id)]
    titles = {r.name: r.metadata["title"] for r in runs}
    assert titles == summary["reports"]


def test_label_and_prediction_drift_are_the_parts_positive_rates_and_means(
    data_run: Path, spec: FeatureSpec, report_run: Path
) -> None:
    split = data_run / "data/split"
    reference = pl.concat([read_part(split, p, spec) for p in stage.TRAINING_PARTS], how="vertical_relaxed")
    test = read_part(split, "test", spec)
    rate = {
        "reference": reference.get_column(spec.target).mean(),
        "current": test.get_column(spec.target).mean(),
    }
    assert rate["reference"] != pytest.approx(rate["current"], abs=1e-3)  # the smoke windows differ
    summary = read_json(report_run / "report.json")
    label = summary["label_drift"]
    assert label["reference_positive_rate"] == pytest.approx(rate["reference"], abs=1e-6)
    assert label["current_positive_rate"] == pytest.approx(rate["current"], abs=1e-6)
    assert label["drift_score"] is not None
    # Evidently's own figure (every row, not a sample) is the part's rate
    shown = read_json(report_run / "reports/label_drift_train_vs_test.json")
    (count,) = [m["value"] for m in shown["metrics"] if "CategoryCount" in m["metric_name"]]
    assert count["share"] == pytest.approx(rate["current"], abs=1e-9)
    assert count["count"] == test.get_column(spec.target).sum()
    header = (report_run / "reports/drift_train_vs_test.html").read_text().split("</header>", 1)[0]
    assert f"{rate['reference']:.1%} vs " in header
    assert f": {rate['current']:.1%};" in header

    valid = pl.read_parquet(report_run / "predictions/valid.parquet")
    preds = pl.read_parquet(report_run / "predictions/test.parquet")
    predicted = summary["prediction_drift"]
    assert predicted["champion"] == "base"
    assert predicted["reference_mean_prediction"] == pytest.approx(valid.get_column("base").mean(), abs=1e-6)
    assert predicted["current_mean_prediction"] == pytest.approx(preds.get_column("base").mean(), abs=1e-6)
    assert predicted["current_positive_rate"] == pytest.approx(rate["current"], abs=1e-6)
    shown = read_json(report_run / "reports/prediction_drift_valid_vs_test.json")
    (mean,) = [m["value"] for m in shown["metrics"] if "MeanValue" in m["metric_name"]]
    assert mean == pytest.approx(preds.get_column("base").mean(), abs=1e-9)


def test_calibration_table_adds_up_to_the_test_window(spec: FeatureSpec, report_run: Path) -> None:
    preds = pl.read_parquet(report_run / "predictions/test.parquet")
    bins = read_json(report_run / "report.json")["calibration"]
    assert len(bins) >= 3
    assert sum(b["rows"] for b in bins) == preds.height
    positives = sum(b["positive_rate"] * b["rows"] for b in bins)
    assert positives == pytest.approx(preds.get_column(spec.target).sum(), abs=0.05)  # rates rounded
    mean = sum(b["mean_prediction"] * b["rows"] for b in bins) / preds.height
    assert mean == pytest.approx(preds.get_column("base").mean(), abs=1e-5)
    for b in bins:  # each bin's mean lies in the bin
        low, high = (float(x) for x in b["bin"].split("-"))
        assert low <= b["mean_prediction"] <= high, b
    page = (report_run / "reports/classification_test.html").read_text()
    assert f'"{bins[0]["rows"]:,}"' in page  # the table's cells, in the page's data


def test_report_set_has_no_duplicates_and_one_shared_script(report_run: Path) -> None:
    folder = report_run / "reports"
    files = tree(folder)
    by_content: dict[bytes, list[str]] = {}
    for name, content in files.items():
        by_content.setdefault(content, []).append(name)
    assert [names for names in by_content.values() if len(names) > 1] == []
    script = f"{adapters.ASSETS}/{adapters.script_name()}"
    assert [n for n in files if n.startswith(adapters.ASSETS)] == [script]
    lib = files[script]
    pages = {n: c for n, c in files.items() if n.endswith(".html")}
    assert len(pages) >= 5
    for name, content in pages.items():
        assert f'<script src="{script}"></script>'.encode() in content, name  # relative: works offline
        assert lib[:2000] not in content, name  # not embedded again
        assert b'"additionalGraphs"' not in content, name  # each plot once, in the graph table
    total = sum(len(c) for c in files.values())
    assert total < MAX_REPORT_BYTES, total


def test_same_rows_finds_a_month_equal_to_the_window() -> None:
    window = pl.DataFrame({"t": [1, 2, 3], "x": ["a", "b", None]})
    assert stage.same_rows({"2013-11": window.head(2), "2013-12": window.clone()}, window) == "2013-12"
    assert stage.same_rows({"2013-12": window.head(2)}, window) is None
    assert stage.same_rows({"2013-12": window.with_columns(pl.lit("z").alias("x"))}, window) is None


def test_known_shift_is_detected_and_random_halves_are_not(data_run: Path, spec: FeatureSpec) -> None:
    split = data_run / "data/split"
    window = pl.concat([read_part(split, p, spec) for p in stage.TRAINING_PARTS], how="vertical_relaxed")
    window = window.sample(fraction=1.0, shuffle=True, seed=7)
    first, second = window.head(window.height // 2), window.tail(window.height - window.height // 2)
    options = {"drift_share_threshold": 0.3, "stattest_threshold": None, "sample_rows": 3000, "seed": 0}

    same = builders.drift(first, second, spec, **options, name="halves")
    assert same.share <= 0.3
    assert not same.failed

    shifted = builders.drift(first, shift(second), spec, **options, name="shifted")
    assert shifted.share > 0.3
    assert len(shifted.failed) == 1
    top = {t["feature"] for t in shifted.top(5)}
    assert {"distance", "cal_hour"} <= top, shifted.top(5)


# --------------------------------------------------------------------------------- monitor ---
def write_log(path: Path, features: pl.DataFrame, extra: tuple[str, ...] = ()) -> Path:
    """A request log as the service writes it (its own writer), one request a second, then ``extra``
    lines as they are."""
    start = dt.datetime(2026, 11, 28, 15, tzinfo=dt.UTC)
    writer = RequestLog(path)
    writer.write(
        record(
            ts=start + dt.timedelta(seconds=i), request_id=f"r{i}", model_version="ontime-delay:test",
            features=row, probability=0.3, decision=0,
        )
        for i, row in enumerate(features.to_dicts())
    )  # fmt: skip
    writer.close()
    with path.open("a") as f:
        f.writelines(f"{line}\n" for line in extra)
    return path


@pytest.fixture
def served(data_run: Path, spec: FeatureSpec, report_run: Path, tmp_path: Path) -> dict[str, Path]:
    """Paths for one monitor run: params, reference, spec, a copy of the report stage's workspace
    (the pipeline's), the monitor's own workspace (not there yet)."""
    shutil.copytree(report_run / "workspace", tmp_path / "pipeline")
    return {
        "params": write_report_params(tmp_path / "params.yaml"),
        "reference": data_run / "data/split/train.parquet",
        "spec": data_run / "data/features/spec.json",
        "pipeline": tmp_path / "pipeline",
        "workspace": tmp_path / "monitoring",
        "html": tmp_path / "monitor.html",
    }


def run_monitor(served: dict[str, Path], log: Path) -> int:
    return monitor.main(
        str(served["params"]), str(log), str(served["reference"]), str(served["spec"]),
        str(served["workspace"]), str(served["html"]), str(served["pipeline"]),
    )  # fmt: skip


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def snapshot_ids(workspace: Path) -> dict[str, list[str]]:
    ws = Workspace(str(workspace))
    return {str(p.id): sorted(str(s) for s in ws.list_runs(p.id)) for p in ws.list_projects()}


def test_monitor_flags_drifted_traffic_and_adds_to_the_workspace(
    spec: FeatureSpec, served: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = snapshot_ids(served["pipeline"])
    pipeline_files = tree(served["pipeline"])
    traffic = pl.read_parquet(served["reference"]).select(spec.columns).sample(300, seed=11)
    junk = ("not json", '{"ts": "2026-11-28T16:00:00+00:00"}', '{"features": [1, 2]}', '{"features": {"dist')
    assert run_monitor(served, write_log(tmp_path / "calm.jsonl", traffic, junk)) == 0
    calm = json.loads(capsys.readouterr().out)
    assert calm["requests"] == 300
    assert calm["skipped_lines"] == len(junk)
    assert calm["drift_share"] <= MONITOR["drift_share_threshold"]
    assert served["html"].stat().st_size > 100_000
    (project_id,) = pipeline
    assert calm["pipeline_snapshots"] == len(pipeline[project_id])
    # the monitor's workspace: the pipeline's project, dashboard and snapshots, and the served one
    first = snapshot_ids(served["workspace"])
    assert list(first) == [project_id]
    # the copies are the pipeline's snapshot files, byte for byte, under the same ids
    copies = served["workspace"] / project_id / "snapshots"
    for path in sorted((served["pipeline"] / project_id / "snapshots").glob("*.json")):
        assert (copies / path.name).read_bytes() == path.read_bytes(), path.name
    assert set(pipeline[project_id]) < set(first[project_id])
    assert len(first[project_id]) == len(pipeline[project_id]) + 1
    ws = Workspace(str(served["workspace"]))
    assert ws.get_dashboard(project_id) == Workspace(str(served["pipeline"])).get_dashboard(project_id)
    stamps, values = series(
        served["workspace"], "Drifted share of features in served traffic (ontime monitor)"
    )
    assert len(stamps) == 1
    assert values["drifted share"] == [pytest.approx(calm["drift_share"], abs=1e-6)]
    assert values["threshold (test fails above)"] == pytest.approx([MONITOR["drift_share_threshold"]])

    assert run_monitor(served, write_log(tmp_path / "shifted.jsonl", shift(traffic))) == 1
    assert json.loads(capsys.readouterr().out)["drift_share"] > MONITOR["drift_share_threshold"]

    after = snapshot_ids(served["workspace"])
    assert set(first[project_id]) < set(after[project_id])  # added to; nothing lost
    assert len(after[project_id]) == len(pipeline[project_id]) + 2
    new = [ws.get_run(project_id, s) for s in set(after[project_id]) - set(pipeline[project_id])]
    assert all(set(r.tags) == {"drift", "served"} for r in new)
    assert {r.timestamp for r in new} == {dt.datetime(2026, 11, 28, 15, 4, 59)}  # the last request
    assert tree(served["pipeline"]) == pipeline_files  # the pipeline's output is never written to

    # the pipeline ran again without one report: its copy goes, the served snapshots stay
    gone = pipeline[project_id][0]
    (served["pipeline"] / project_id / "snapshots" / f"{gone}.json").unlink()
    assert run_monitor(served, write_log(tmp_path / "calm.jsonl", traffic)) == 0
    capsys.readouterr()
    last = snapshot_ids(served["workspace"])[project_id]
    assert gone not in last
    assert set(after[project_id]) - {gone} < set(last)
    assert len(last) == len(pipeline[project_id]) - 1 + 3


# what clients may leave out of a request: the schedule counts and the weather forecast
OPTIONAL = ["origin_hour_departures", "tail_leg_of_day", "tail_legs_of_day"]
WEATHER = [
    "wx_temp", "wx_dewp", "wx_humid", "wx_wind_dir", "wx_wind_speed", "wx_wind_gust", "wx_precip",
    "wx_pressure", "wx_visib",
]  # fmt: skip


def test_monitor_reports_features_null_in_every_request_instead_of_failing(
    spec: FeatureSpec,
    served: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Clients that never send the optional fields: a summary (those columns all-null, not tested),
    never Evidently's "empty column" error; a stuck input is reported and still tested."""
    empty = [c for c in [*OPTIONAL, *WEATHER] if c in spec.columns]
    assert len(empty) >= 10, spec.columns  # the smoke data has the schedule counts and the weather
    traffic = (
        pl.read_parquet(served["reference"])
        .select(spec.columns)
        .sample(300, seed=5)
        .with_columns(*(pl.lit(None).alias(c) for c in empty), pl.lit(1000.0).alias("distance"))
    )
    caplog.set_level("INFO", logger="ontime")
    code = run_monitor(served, write_log(tmp_path / "optional.jsonl", traffic))
    summary = json.loads(capsys.readouterr().out)
    assert code == (1 if summary["drift"] else 0)
    assert sorted(summary["all_null"]) == sorted(empty)
    assert {c: summary["skipped"][c] for c in empty} == dict.fromkeys(empty, "all_null")
    assert {c: summary["missing_share"][c] for c in empty} == dict.fromkeys(empty, 1.0)
    assert summary["missing_share"]["distance"] == 0.0
    assert not set(empty) & set(summary["drift_tested"])
    # the rest left out: the ids, and columns with one value in the traffic and the (smoke) reference
    ids = {"flight": "identifier", "tailnum": "identifier"}
    same = {c for c, why in summary["skipped"].items() if why == "constant"}
    assert summary["skipped"] == {
        **dict.fromkeys(empty, "all_null"),
        **ids,
        **dict.fromkeys(same, "constant"),
    }
    reference = pl.read_parquet(served["reference"])
    assert all(reference.get_column(c).drop_nulls().n_unique() == 1 for c in same), same
    assert sorted(summary["drift_tested"]) == sorted(set(spec.columns) - set(summary["skipped"]))
    assert summary["tested_features"] == len(spec.columns) - len(empty) - 2 - len(same)
    assert summary["drifted_features"] == round(summary["drift_share"] * summary["tested_features"])
    # distance stuck at one value: reported as constant, still tested (and found drifted)
    assert "distance" in set(summary["constant"]) & set(summary["drift_tested"])
    assert "distance" in {t["feature"] for t in summary["top_drifted"]}
    text = caplog.text
    assert "not drift-tested: origin_hour_departures (null in every request)" in text
    assert "null in every request (clients never send them?)" in text
    assert "not drift-tested: flight (an identifier (monitor.identifiers))" in text


def test_monitor_reports_identifiers_and_leaves_them_out_of_the_drift_test(
    spec: FeatureSpec, served: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows resampled from the reference: no drift; flight and tailnum (thousands of rare values) are
    described, not tested (tested, they would drift); an identifier the data lacks is ignored."""
    reference = pl.read_parquet(served["reference"])
    traffic = reference.select(spec.columns).sample(300, seed=7)
    log_path = write_log(tmp_path / "calm.jsonl", traffic)
    served["params"] = write_report_params(
        tmp_path / "ids.yaml", identifiers=["flight", "tailnum", "registration"]
    )
    assert run_monitor(served, log_path) == 0
    summary = json.loads(capsys.readouterr().out)
    assert not summary["drift"]
    assert sorted(summary["identifiers"]) == ["flight", "tailnum"]
    assert {summary["skipped"][c] for c in ("flight", "tailnum")} == {"identifier"}
    assert not {"flight", "tailnum"} & set(summary["drift_tested"])
    assert "registration" not in summary["skipped"]
    for column, stats in summary["identifiers"].items():
        values = traffic.get_column(column)
        assert stats["distinct"] == values.drop_nulls().n_unique() > 50, column
        assert stats["unseen_share"] == 0.0, column  # every value comes from the reference
        assert stats["missing_share"] == round(values.null_count() / traffic.height, 6), column

    # the same traffic with every column tested: the ids are what drifts
    cfg = MonitorConfig(**{**MONITOR, "identifiers": []})
    report = ReportConfig(**REPORT)
    requests = monitor.read_request_log(log_path, spec)
    result, unfiltered = monitor.monitor(requests, reference, spec, cfg, report, seed=42, log_name="calm")
    assert unfiltered["identifiers"] == {}
    assert {"flight", "tailnum"} <= set(unfiltered["drift_tested"])
    assert result.p_values
    assert max(result.scores["flight"], result.scores["tailnum"]) < 0.05


def test_monitor_select_columns_skips_what_cannot_be_tested() -> None:
    """Which columns Evidently gets: no all-null one (it refuses them), no constant one (nothing to
    test), no identifier; a column constant only in the served traffic is tested."""
    spec = FeatureSpec(
        target="y", time_column=None, numeric=["a", "b", "c", "d", "e"], categorical=["id", "k"],
        features=[{"name": n} for n in ["a", "b", "c", "d", "e", "id", "k"]],
    )  # fmt: skip
    reference = pl.DataFrame({
        "a": [1.0, 2.0, 3.0, 4.0], "b": [5.0] * 4, "c": [1.0, 2.0, 3.0, 4.0], "d": [None, float("nan")] * 2,
        "e": [1.0, 2.0, 3.0, 4.0], "id": ["x1", "x2", "x3", None], "k": ["p"] * 4,
    })  # fmt: skip
    current = pl.DataFrame({
        "a": [None] * 4, "b": [5.0, None, 5.0, 5.0], "c": [7.0] * 4, "d": [1.0, 2.0, 3.0, 4.0],
        "e": [1.0, None, 2.0, 3.0], "id": ["x1", "x9", "x9", None], "k": ["p"] * 4,
    }, schema_overrides={"a": pl.Float64})  # fmt: skip
    columns = monitor.select_columns(current, reference, reference, spec, ["id", "missing_id"])
    assert columns.tested == ["c", "e"]
    assert columns.skipped == {
        "a": "all_null", "b": "constant", "d": "all_null_in_reference", "id": "identifier", "k": "constant",
    }  # fmt: skip
    assert columns.all_null == ["a"]
    assert columns.constant == ["b", "c", "k"]
    assert columns.missing_share == {"a": 1.0, "b": 0.25, "c": 0.0, "d": 0.0, "e": 0.25, "id": 0.25, "k": 0.0}
    assert columns.identifiers == {
        "id": {"missing_share": 0.25, "distinct": 2, "unseen_share": round(2 / 3, 6)}
    }


def test_monitor_does_not_write_into_the_pipeline_workspace(
    spec: FeatureSpec, served: dict[str, Path], tmp_path: Path
) -> None:
    traffic = pl.read_parquet(served["reference"]).select(spec.columns).head(100)
    served["workspace"] = served["pipeline"]
    before = tree(served["pipeline"])
    with pytest.raises(DataError, match="is the report stage's workspace"):
        run_monitor(served, write_log(tmp_path / "log.jsonl", traffic))
    assert tree(served["pipeline"]) == before


# The report stage's outputs (reports/evidently, reports/workspace) are byte-identical across two
# processes: tests/pipeline/test_lineage.py compares them, with every other output, between two
# fresh builds of the smoke pipeline.


def test_monitor_refuses_bad_logs_with_clear_errors(
    spec: FeatureSpec, served: dict[str, Path], tmp_path: Path
) -> None:
    traffic = pl.read_parquet(served["reference"]).select(spec.columns).head(200)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        run_monitor(served, tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match=r"\['distance'\]"):
        run_monitor(served, write_log(tmp_path / "old.jsonl", traffic.drop("distance")))
    with pytest.raises(DataError, match="min_rows"):
        run_monitor(served, write_log(tmp_path / "few.jsonl", traffic.head(10)))
    with pytest.raises(DataError, match="none of its"):
        run_monitor(served, write_log(tmp_path / "junk.jsonl", traffic.head(0), ("nope", "[1]")))
    blank = traffic.with_columns(
        pl.lit(None).alias(c) for c in spec.columns if c not in ("flight", "tailnum")
    )
    with pytest.raises(DataError, match=r"no feature is left to drift-test \(carrier: null in every request"):
        run_monitor(served, write_log(tmp_path / "blank.jsonl", blank))
    assert not served["html"].exists()


def test_monitor_reads_the_rotated_logs_oldest_first(
    spec: FeatureSpec,
    served: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A log rotated by the service's writer: every entry of every file, oldest first (a malformed
    line in a rotated file counted); `ontime monitor` without --log reads $ONTIME_REQUEST_LOG."""
    traffic = pl.read_parquet(served["reference"]).select(spec.columns).sample(300, seed=11)
    path = tmp_path / "logs/requests.jsonl"
    start = dt.datetime(2026, 11, 28, 15, tzinfo=dt.UTC)
    writer = RequestLog(path, max_bytes=60_000, backups=20)
    for i, row in enumerate(traffic.to_dicts()):  # one flight a request, as /predict_one
        writer.write(
            [
                record(
                    ts=start + dt.timedelta(seconds=i), request_id=f"r{i}", model_version="ontime-delay:test",
                    features=row, probability=0.3, decision=0,
                )
            ]
        )  # fmt: skip
    writer.close()
    files = log_files(path)
    assert [f.name for f in files[-3:]] == ["requests.jsonl.2", "requests.jsonl.1", "requests.jsonl"]
    assert len(files) >= 4
    with files[1].open("a") as f:
        f.write("not json\n")
    requests = monitor.read_request_log(path, spec)
    assert requests.files == [str(f) for f in files]
    assert requests.features.height == 300
    assert requests.skipped == 1
    distance = traffic.get_column("distance").cast(pl.Float64).to_list()
    assert requests.features.get_column("distance").to_list() == distance  # in the order written
    assert (requests.first, requests.last) == (
        dt.datetime(2026, 11, 28, 15),
        dt.datetime(2026, 11, 28, 15, 4, 59),
    )

    monkeypatch.setenv("ONTIME_REQUEST_LOG", str(path))
    code = monitor.main(
        str(served["params"]), None, str(served["reference"]), str(served["spec"]),
        str(served["workspace"]), str(served["html"]), str(served["pipeline"]),
    )  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (summary["requests"], summary["skipped_lines"]) == (300, 1)
    assert summary["log_files"] == [str(f) for f in files]


def test_monitor_never_writes_into_a_folder_that_is_not_a_workspace(
    spec: FeatureSpec, served: dict[str, Path], tmp_path: Path
) -> None:
    traffic = pl.read_parquet(served["reference"]).select(spec.columns).head(100)
    served["workspace"] = tmp_path / "notes"
    served["workspace"].mkdir()
    (served["workspace"] / "todo.txt").write_text("keep me\n")
    with pytest.raises(DataError, match="not an Evidently workspace"):
        run_monitor(served, write_log(tmp_path / "log.jsonl", traffic))
    assert [p.name for p in served["workspace"].iterdir()] == ["todo.txt"]
    assert not served["html"].exists()
