"""`ontime monitor --outcomes`: the served model's quality once late labels arrive, on a synthetic
request log written by the service's own writer, with real Evidently snapshots in a real workspace.
Every figure is checked against scikit-learn on rows joined here independently."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import zoneinfo
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from evidently.ui.service.base import SeriesFilter
from evidently.ui.service.storage.local.base import InMemoryDataStorage
from evidently.ui.workspace import Workspace
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from ontime.cli import main
from ontime.errors import DataError
from ontime.io import write_json
from ontime.reports import quality
from ontime.reports.monitor import scored_entries
from ontime.reports.workspace import open_workspace, project, snapshot_id
from ontime.serving.requestlog import RequestLog, flight_key, record
from tests.conftest import compose_params

UTC = dt.UTC
KEY = ["carrier", "flight", "origin", "time_hour"]
TZ = "America/New_York"
LOCAL = zoneinfo.ZoneInfo(TZ)
SERVED_AT = dt.datetime(2026, 11, 28, 15, tzinfo=UTC)  # a replay: served long after the flights' days
REFERENCE_AUC = 0.70
MAX_DROP = 0.05
THRESHOLD = 0.3
PROJECT = "ontime"
DAILY = ("roc_auc", "pr_auc", "log_loss", "brier", "mean_probability", "positive_rate")


# ------------------------------------------------------------------------------------ inputs ---
def flights(days: int = 4, per_day: int = 150, *, seed: int = 0, signal: bool = True) -> list[dict[str, Any]]:
    """Served flights of local days from 2013-12-01, 05:00 to 23:00 local (23:00 is 04:00 UTC the next
    day): their key as the service logs it, features, probability and true label. ``signal``: the
    probability ranks the labels (ROC AUC about 0.88), else it is noise (about 0.5)."""
    rng = np.random.default_rng(seed)
    out = []
    for d in range(days):
        for i in range(per_day):
            local = dt.datetime(2013, 12, 1 + d, 5 + i % 19, tzinfo=LOCAL)
            values = {
                "carrier": ("UA", "AA", "B6")[i % 3],
                "flight": 1000 + i,  # an integer in a request
                "origin": ("EWR", "JFK", "LGA")[i % 3],
                "time_hour": local.astimezone(UTC),
            }
            label = int(rng.random() < 0.3)
            noise = rng.normal(0, 0.15)
            p = 0.3 + 0.25 * (label - 0.3) + noise if signal else rng.random()
            out.append(
                {
                    "key": flight_key(values, KEY),
                    "day": local.date(),
                    "label": label,
                    "probability": float(np.clip(p, 0.001, 0.999)),
                    "features": {"x": float(rng.normal()), "c": str(rng.choice(["a", "b", "c"]))},
                }
            )
    return out


def write_log(path: Path, served: list[dict[str, Any]], *, start: dt.datetime = SERVED_AT) -> Path:
    """The request log as the service writes it (its writer and ``record``), one request a second."""
    writer = RequestLog(path)
    for i, f in enumerate(served):
        writer.write(
            [
                record(
                    ts=start + dt.timedelta(seconds=i), request_id=f"r{i}", model_version="ontime-delay:v1",
                    key=f["key"], features=f["features"], probability=f["probability"],
                    decision=int(f["probability"] >= THRESHOLD),
                )
            ]
        )  # fmt: skip
    writer.close()
    return path


def write_outcomes(path: Path, labels: list[tuple[str, int]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"key": k, "label": y}) + "\n" for k, y in labels))
    return path


@pytest.fixture(scope="module")
def base_params() -> dict[str, Any]:
    return compose_params()


@pytest.fixture
def setup(tmp_path: Path, base_params: dict[str, Any]) -> dict[str, Path]:
    """Params (the real config, default data: serve.key carrier|flight|origin|time_hour), a feature
    spec of two features, a reference with the same distribution as the served ones, a model card."""
    rng = np.random.default_rng(1)
    reference = pl.DataFrame({"x": rng.normal(size=2000), "c": rng.choice(["a", "b", "c"], size=2000)})
    reference.write_parquet(tmp_path / "train.parquet")
    write_json(
        tmp_path / "spec.json",
        {
            "target": "label",
            "time_column": None,
            "features": [
                {"name": "x", "kind": "numeric", "dtype": "Float64", "nullable": False},
                {"name": "c", "kind": "categorical", "dtype": "String", "nullable": False},
            ],
        },
    )
    write_json(
        tmp_path / "model_card.json",
        {"champion": "linear", "valid_part": "finetune_valid", "threshold": THRESHOLD,
         "valid_metrics": {"roc_auc": REFERENCE_AUC}},
    )  # fmt: skip
    return {
        "params": write_params(tmp_path / "params.yaml", base_params),
        "reference": tmp_path / "train.parquet",
        "spec": tmp_path / "spec.json",
        "card": tmp_path / "model_card.json",
        "workspace": tmp_path / "monitoring",
        "html": tmp_path / "monitor.html",
    }


def write_params(path: Path, params: dict[str, Any], **quality_overrides: Any) -> Path:
    params = json.loads(json.dumps(params, default=str))
    params["monitor"]["quality"] = {
        "window_days": 7, "min_labelled": 200, "max_roc_auc_drop": MAX_DROP, **quality_overrides,
    }  # fmt: skip
    params["monitor"]["sample_rows"] = 3000
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run_monitor(
    setup: dict[str, Path], log: Path, outcomes: Path | None, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any] | None, str]:
    """``ontime monitor`` through the command's own entry point: (exit code, summary, stderr)."""
    argv = [
        "monitor", "--params", str(setup["params"]), "--log", str(log),
        "--reference", str(setup["reference"]),
        "--spec", str(setup["spec"]), "--workspace", str(setup["workspace"]), "--out", str(setup["html"]),
        "--pipeline-workspace", "", "--card", str(setup["card"]),
        *(["--outcomes", str(outcomes)] if outcomes is not None else []), *extra,
    ]  # fmt: skip
    code = main(argv)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


# ------------------------------------------------------------------------ independent answer ---
def expected(served: list[dict[str, Any]], labels: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Per local day of the key's hour: sklearn's figures on the newest entry per key with a label."""
    newest = {f["key"]: f for f in served}  # written in order: the last is the newest
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for key, f in newest.items():
        hour = dt.datetime.strptime(key.split("|")[3], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        by_day[hour.astimezone(LOCAL).date().isoformat()].append({**f, "label": labels.get(key)})
    out = {}
    for day, rows in sorted(by_day.items()):
        done = [r for r in rows if r["label"] is not None]
        y = np.array([r["label"] for r in done])
        p = np.array([r["probability"] for r in done])
        out[day] = {
            "predictions": len(rows),
            "labelled": len(done),
            "decision_rate": float(np.mean([r["probability"] >= THRESHOLD for r in rows])),
            "roc_auc": roc_auc_score(y, p) if 0 < y.sum() < len(y) else None,
            "pr_auc": average_precision_score(y, p) if 0 < y.sum() < len(y) else None,
            "log_loss": log_loss(y, p, labels=[0, 1]) if len(y) else None,
            "brier": brier_score_loss(y, p) if len(y) else None,
            "mean_probability": float(p.mean()) if len(y) else None,
            "positive_rate": float(y.mean()) if len(y) else None,
        }
    return out


def assert_close(got: float | None, want: float | None, what: str) -> None:
    if want is None:
        assert got is None, what
    else:
        assert got == pytest.approx(want, abs=1e-9), what


# ------------------------------------------------------------------------------------- tests ---
def test_daily_figures_equal_sklearn_on_the_joined_rows(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = flights()
    # 80% of the flights have an outcome; one outcome is for a flight never served
    rng = np.random.default_rng(2)
    labels = {f["key"]: f["label"] for f in served if rng.random() < 0.8}
    unknown = "ZZ|1|EWR|2013-12-02T15:00:00Z"
    outcomes = write_outcomes(tmp_path / "outcomes/a.jsonl", [*labels.items(), (unknown, 1)])
    code, summary, _ = run_monitor(setup, write_log(tmp_path / "log.jsonl", served), outcomes, capsys)
    assert summary is not None
    q = summary["quality"]
    want = expected(served, labels)
    # days are the flights' local days (from the key's hour), never the day they were served (2026)
    assert (
        [d["day"] for d in q["days"]]
        == list(want)
        == ["2013-12-01", "2013-12-02", "2013-12-03", "2013-12-04"]
    )
    assert q["day_of"] == "key:time_hour"
    for day in q["days"]:
        w = want[day["day"]]
        assert (day["predictions"], day["labelled"]) == (w["predictions"], w["labelled"])
        assert day["unlabelled_share"] == pytest.approx(1 - w["labelled"] / w["predictions"], abs=1e-12)
        assert day["decision_rate"] == pytest.approx(w["decision_rate"], abs=1e-12)
        for name in DAILY:
            assert_close(day[name], w[name], f"{day['day']} {name}")
    # the window pools the newest 7 days with labels: all four here
    done = [f for f in served if f["key"] in labels]
    y, p = np.array([labels[f["key"]] for f in done]), np.array([f["probability"] for f in done])
    assert q["window"]["days"] == list(want)
    assert q["window"]["labelled"] == len(done)
    assert_close(q["window"]["roc_auc"], roc_auc_score(y, p), "window roc_auc")
    assert_close(q["window"]["brier"], brier_score_loss(y, p), "window brier")
    # an outcome for a key never served is counted, not fatal
    assert q["unmatched_outcomes"] == 1
    assert (q["outcome_keys"], q["predictions"], q["labelled"]) == (len(labels) + 1, len(served), len(labels))
    assert (q["duplicates"], q["without_key"]) == (0, 0)
    assert q["status"] == "ok"
    assert q["floor"] == pytest.approx(REFERENCE_AUC - MAX_DROP)
    assert summary["drift"] is False
    assert summary["alerts"] == []
    assert code == 0


def test_join_keeps_the_newest_entry_of_a_key_and_counts_the_rest() -> None:
    served = flights(days=1, per_day=5)
    entries = [
        record(ts=SERVED_AT + dt.timedelta(seconds=s), request_id=str(s), model_version="m", key=k,
               features={}, probability=p, decision=int(p >= THRESHOLD))
        for s, k, p in [
            (0, served[0]["key"], 0.10),
            (9, served[0]["key"], 0.90),  # the retry, newest: kept
            (5, served[0]["key"], 0.50),  # written later, but older by ts
            (1, served[1]["key"], 0.20),
            (2, None, 0.30),  # no key (serve.key was empty): counted, ignored
        ]
    ]  # fmt: skip
    outcomes = quality.Outcomes(
        labels=pl.DataFrame(
            {"key": [served[0]["key"]], "label": [1]}, schema={"key": pl.String, "label": pl.Int8}
        ),
        files=["x.jsonl"],
        lines=1,
    )
    joined = quality.join(
        scored_entries(entries), outcomes, key_fields=KEY, time_column="time_hour", timezone=TZ
    )
    assert (joined.duplicates, joined.without_key, joined.unmatched_outcomes) == (2, 1, 0)
    rows = {k: (p, y) for k, p, y in joined.rows.select("key", "probability", "label").iter_rows()}
    assert rows == {served[0]["key"]: (0.90, 1), served[1]["key"]: (0.20, None)}


def test_conflicting_labels_across_files_fail_naming_the_key_and_files(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = flights(days=1, per_day=60)
    folder = tmp_path / "outcomes"
    key = served[3]["key"]
    write_outcomes(folder / "2013-12-01.jsonl", [(f["key"], f["label"]) for f in served])
    write_outcomes(
        folder / "late.jsonl", [(served[0]["key"], served[0]["label"]), (key, 1 - served[3]["label"])]
    )
    with pytest.raises(DataError, match="two different labels") as err:
        quality.read_outcomes(folder)
    assert key in str(err.value)
    assert "2013-12-01.jsonl:4" in str(err.value)
    assert "late.jsonl:2" in str(err.value)
    code, summary, stderr = run_monitor(setup, write_log(tmp_path / "log.jsonl", served), folder, capsys)
    assert (code, summary) == (2, None)
    assert key in stderr
    assert "late.jsonl" in stderr
    assert not setup["workspace"].exists()
    assert not setup["html"].exists()


def test_no_labels_yet_is_no_alert(
    setup: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    served = flights(days=2, per_day=60)
    # outcomes so far only for flights the service never saw
    outcomes = write_outcomes(
        tmp_path / "o.jsonl", [(f"ZZ|{i}|EWR|2013-12-01T15:00:00Z", i % 2) for i in range(5)]
    )
    with caplog.at_level(logging.INFO, logger="ontime.reports.monitor"):
        code, summary, _ = run_monitor(setup, write_log(tmp_path / "log.jsonl", served), outcomes, capsys)
    assert summary is not None
    q = summary["quality"]
    assert (q["status"], q["alert"], q["labelled"], q["unmatched_outcomes"]) == ("no labels", False, 0, 5)
    assert q["window"]["days"] == []
    assert q["window"]["roc_auc"] is None
    assert [d["labelled"] for d in q["days"]] == [0, 0]
    assert q["snapshots"] == []
    assert summary["alerts"] == []
    assert "quality no labels" in caplog.text
    assert code == 0


def test_a_quality_drop_exits_1_with_the_reason(
    setup: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    served = flights(signal=False)  # the model's probabilities no longer rank the flights
    outcomes = write_outcomes(tmp_path / "o.jsonl", [(f["key"], f["label"]) for f in served])
    with caplog.at_level(logging.INFO, logger="ontime.reports.monitor"):
        code, summary, _ = run_monitor(setup, write_log(tmp_path / "log.jsonl", served), outcomes, capsys)
    assert summary is not None
    q = summary["quality"]
    assert q["window"]["roc_auc"] < REFERENCE_AUC - MAX_DROP
    assert (q["status"], q["alert"]) == ("alert", True)
    assert f"{q['window']['roc_auc']:.4f} is below {REFERENCE_AUC - MAX_DROP:.4f}" in q["reason"]
    assert summary["drift"] is False  # the features did not move: the quality alone fires
    assert summary["alerts"] == ["quality"]
    assert "alert(s): quality: ROC AUC" in caplog.text
    assert "is below" in caplog.text
    assert code == 1


def test_too_few_labels_give_no_verdict(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], base_params: dict[str, Any]
) -> None:
    served = flights(signal=False)
    outcomes = write_outcomes(tmp_path / "o.jsonl", [(f["key"], f["label"]) for f in served])
    write_params(setup["params"], base_params, min_labelled=len(served) + 1)
    code, summary, _ = run_monitor(setup, write_log(tmp_path / "log.jsonl", served), outcomes, capsys)
    assert summary is not None
    assert summary["quality"]["status"] == "too few labels"
    assert summary["quality"]["window"]["roc_auc"] < REFERENCE_AUC - MAX_DROP  # bad, but too few to say
    assert (summary["alerts"], code) == ([], 0)


def test_window_is_the_newest_days_with_labels(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], base_params: dict[str, Any]
) -> None:
    served = flights(days=4)
    # day 4 has no labels yet: the window is the two newest days that have them, 2 and 3
    labels = {f["key"]: f["label"] for f in served if f["day"] < dt.date(2013, 12, 4)}
    outcomes = write_outcomes(tmp_path / "o.jsonl", list(labels.items()))
    write_params(setup["params"], base_params, window_days=2, min_labelled=10)
    code, summary, _ = run_monitor(setup, write_log(tmp_path / "log.jsonl", served), outcomes, capsys)
    assert summary is not None
    window = summary["quality"]["window"]
    assert window["days"] == ["2013-12-02", "2013-12-03"]
    inside = [f for f in served if f["day"] in (dt.date(2013, 12, 2), dt.date(2013, 12, 3))]
    y, p = np.array([f["label"] for f in inside]), np.array([f["probability"] for f in inside])
    assert window["labelled"] == len(inside)
    assert_close(window["roc_auc"], roc_auc_score(y, p), "window roc_auc")
    assert_close(window["log_loss"], log_loss(y, p), "window log_loss")
    assert code == 0


def series(workspace: Path, title: str) -> tuple[list[dt.datetime], dict[str, list[float]]]:
    """A dashboard panel's data as the Evidently UI's server computes it (its own storage code)."""
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


QUALITY_PANEL = "Champion ROC AUC per day of served traffic, with late labels (ontime monitor --outcomes)"


def test_snapshots_per_day_in_the_workspace_are_replaced_on_rerun(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = flights(days=3)
    labels = [(f["key"], f["label"]) for f in served]
    # day 3 has labels of one class only: figures without ROC AUC, and no Evidently snapshot
    labels = [
        (k, 0 if f["day"] == dt.date(2013, 12, 3) else y) for (k, y), f in zip(labels, served, strict=True)
    ]
    outcomes = write_outcomes(tmp_path / "o.jsonl", labels)
    log = write_log(tmp_path / "log.jsonl", served)
    # a pipeline workspace (its project, no snapshots): copying it must keep the quality snapshots
    pipeline = tmp_path / "pipeline"
    project(open_workspace(pipeline), PROJECT)
    code, summary, _ = run_monitor(setup, log, outcomes, capsys, "--pipeline-workspace", str(pipeline))
    assert summary is not None
    assert code == 0
    q = summary["quality"]
    one_class = q["days"][2]
    assert (one_class["roc_auc"], one_class["pr_auc"]) == (None, None)
    assert one_class["log_loss"] is not None
    assert one_class["positive_rate"] == 0.0
    names = [quality.snapshot_name(dt.date(2013, 12, d), "ontime-delay:v1") for d in (1, 2)]
    assert q["snapshots_one_class"] == [quality.snapshot_name(dt.date(2013, 12, 3), "ontime-delay:v1")]
    assert q["snapshots"] == [str(snapshot_id(PROJECT, n)) for n in names]

    ws = Workspace(str(setup["workspace"]))
    (proj,) = ws.list_projects()
    first = sorted(str(s) for s in ws.list_runs(proj.id))
    runs = {r.name: r for r in (ws.get_run(proj.id, s) for s in ws.list_runs(proj.id)) if r is not None}
    assert set(q["snapshots"]) < set(first)  # beside the drift snapshot
    for day, name in zip((1, 2), names, strict=True):
        assert {"quality", "served", "classification"} <= set(runs[name].tags)
        assert runs[name].timestamp == dt.datetime(2013, 12, day)
    # the dashboard's ROC AUC per day: one bar per day, as computed above, beside the alert's floor
    stamps, values = series(setup["workspace"], QUALITY_PANEL)
    assert stamps == [dt.datetime(2013, 12, 1), dt.datetime(2013, 12, 2)]
    assert values["ROC AUC"] == pytest.approx([d["roc_auc"] for d in q["days"][:2]], abs=1e-9)
    assert values["alert floor (validation ROC AUC - max drop)"] == pytest.approx(
        [REFERENCE_AUC - MAX_DROP] * 2
    )

    # again, with the same log and outcomes: the day snapshots are replaced, not added again
    code, again, _ = run_monitor(setup, log, outcomes, capsys, "--pipeline-workspace", str(pipeline))
    assert again is not None
    assert code == 0
    assert again["quality"]["snapshots"] == q["snapshots"]
    second = sorted(str(s) for s in ws.list_runs(proj.id))
    assert len(second) == len(first) + 1  # one more drift snapshot, no more quality ones
    assert set(first) < set(second)
    stamps, _ = series(setup["workspace"], QUALITY_PANEL)
    assert len(stamps) == 2


def test_a_small_log_is_judged_on_quality_alone(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], base_params: dict[str, Any]
) -> None:
    served = flights(days=1, per_day=30)  # fewer than monitor.min_rows=50: too few for drift
    outcomes = write_outcomes(tmp_path / "o.jsonl", [(f["key"], f["label"]) for f in served])
    write_params(setup["params"], base_params, min_labelled=10)
    log = write_log(tmp_path / "log.jsonl", served)
    code, summary, _ = run_monitor(setup, log, outcomes, capsys)
    assert summary is not None
    assert summary["drift"] is None
    assert "monitor.min_rows=50" in summary["drift_not_judged"]
    assert summary["html"] is None
    assert not setup["html"].exists()
    assert summary["quality"]["status"] == "ok"
    assert summary["quality"]["labelled"] == 30
    assert code == 0
    # without outcomes there is nothing to judge: an error, as before
    code, summary, stderr = run_monitor(setup, log, None, capsys)
    assert (code, summary) == (2, None)
    assert "monitor.min_rows" in stderr
