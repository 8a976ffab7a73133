"""The data stages through real `dvc repro` / `dvc exp run` in a temporary git+DVC repository."""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from ontime.compare import short as compare_short
from tests.conftest import SMOKE_GRAPH, SMOKE_WRITERS, SmokeRepo, run

DATA_STAGES = ("collect", "clean", "featurize", "split")


def ran(output: str) -> set[str]:
    return {s for s in DATA_STAGES if f"Running stage '{s}'" in output}


def test_dvc_repro_data_stages(smoke_repo: SmokeRepo) -> None:
    # The session's smoke run ran every stage once (its fixture checks); a clone pulled from the
    # remote (with the run cache) is up to date without running anything.
    repo = smoke_repo.clone("data-stages")
    dag = run(["dvc", "dag", "split"], repo).stdout
    for stage in DATA_STAGES:
        assert stage in dag
    for part in ("train", "train_valid", "finetune", "finetune_valid", "test"):
        assert pl.read_parquet(repo / f"data/split/{part}.parquet").height > 0
    split = json.loads((repo / "metrics/split.json").read_text())
    assert split["test"]["first"].startswith("2013-02-10")
    clean = json.loads((repo / "metrics/clean.json").read_text())
    assert clean["tables"]["flights"]["rows_in"] == 336_776

    # Nothing changed: a repro runs nothing and DVC reports everything up to date.
    second = run(["dvc", "repro", "split"], repo)
    assert ran(second.stdout) == set(), second.stdout
    assert "up to date" in run(["dvc", "status", "split"], repo).stdout.lower()
    # DVC metrics are model quality only (evaluate, select, report, and the studies' ROC AUC from
    # studies/dvc.yaml); a stage's own figures (rows, counts, windows) stay files beside them and do
    # not crowd `dvc exp show`.
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    workspace = shown[""]["data"]
    studies = {"metrics/backtest.json", "metrics/strategies.json", "metrics/learning_curve.json"}
    assert set(workspace) == {
        "metrics/evaluate.json",
        "metrics/select.json",
        "metrics/report.json",
        *studies,
    }, workspace
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    assert workspace["metrics/evaluate.json"]["data"] == evaluation

    # A clean parameter re-runs clean and what follows, never collect (Hydra composes conf/ here).
    overrides = [a for o in (*SMOKE_GRAPH, "clean.label.threshold=30") for a in ("-S", o)]
    exp = run(["dvc", "exp", "run", *overrides, "split"], repo)
    assert ran(exp.stdout) == {"clean", "featurize", "split"}, exp.stdout
    rate_30 = json.loads((repo / "metrics/clean.json").read_text())["label"]["positive_rate"]
    assert rate_30 < clean["label"]["positive_rate"]
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    thresholds = [
        exp["data"]["params"]["params.yaml"]["data"]["clean"]["label"]["threshold"]
        for commit in shown
        for exp in commit.get("experiments") or []
        for exp in exp["revs"]
    ]
    assert 30 in thresholds, thresholds


def test_generic_table_through_dvc(repo: Path) -> None:
    # A table of our own: a timestamp, numbers, a category, a 0/1 target, written by the test.
    n = 600
    rows = [
        {
            "when": f"2021-{1 + i % 6:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00",
            "amount": float(i % 97) * 1.5,
            "clicks": i % 13,
            "segment": "abcd"[i % 4],
            "churned": int((i % 97) > 60),
            "customer_id": f"c{i}",
        }
        for i in range(n)
    ]
    (repo / "data/external").mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_csv(repo / "data/external/customers.csv")
    run(
        [
            "ontime", "params",
            "data=table",
            "data.tables.table=data/external/customers.csv",
            "+data.dtypes.table.when=Datetime",
            "clean.label.column=churned",
            "featurize.time_column=when",
            "featurize.derived=[calendar,holidays]",
            "featurize.exclude=[customer_id]",
            "split.method=time",
            "split.windows.train={start: '2021-01-01', end: '2021-04-01'}",
            "split.windows.finetune={start: '2021-04-01', end: '2021-05-15'}",
            "split.windows.test={start: '2021-05-15', end: '2021-07-01'}",
            "split.valid_days=7",
        ],
        repo,
    )  # fmt: skip
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "own table"], repo)
    out = run(["dvc", "repro", "split"], repo)
    assert ran(out.stdout) == set(DATA_STAGES), out.stdout

    spec = json.loads((repo / "data/features/spec.json").read_text())
    kinds = {f["name"]: f["kind"] for f in spec["features"]}
    assert spec["time_column"] == "when"
    assert kinds["segment"] == "categorical"
    assert kinds["amount"] == "numeric"
    assert "churned" not in kinds
    assert "customer_id" not in kinds
    assert "when" not in kinds
    assert {"cal_month", "cal_weekday", "days_to_holiday"} <= set(kinds)
    split = json.loads((repo / "metrics/split.json").read_text())
    assert sum(v["rows"] for v in split.values()) == n
    test = pl.read_parquet(repo / "data/split/test.parquet")
    assert test.get_column("when").dt.month().min() >= 5


@pytest.mark.xdist_group(SMOKE_WRITERS)  # DVC in the origin (its lock), an experiment packages
def test_dvc_repro_whole_graph(smoke_repo: SmokeRepo) -> None:
    repo = smoke_repo.origin  # the whole graph ran there once for the session; read-only here
    later = (
        "train",
        "finetune",
        "baseline",
        "linear",
        "svm",
        "ensemble",
        "fold@1",
        "fold@2",
        "evaluate",
        "select",
    )
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert set(metrics) == {
        "base", "finetuned", "lgbm_train", "lgbm_all", "linear", "svm", "ens_weighted", "ens_stacking",
    }  # fmt: skip
    champion = json.loads((repo / "metrics/select.json").read_text())["champion"]
    card = json.loads((repo / "models/champion/model_card.json").read_text())
    assert card["champion"] == champion
    allowed = yaml.safe_load((repo / "params.yaml").read_text())["select"]["candidates"]
    # chosen on the folds (select.prefer higher_mean): the best mean fold ROC AUC of the allowed ones
    means = {r["candidate"]: r["mean"] for r in card["selection"]["table"]}
    assert set(means) == set(allowed)
    assert means[champion] == max(means.values())
    assert (repo / "models/champion/MODEL_CARD.md").read_text().startswith(f"# Model card: {champion}")
    for block in metrics.values():
        assert 0 < block["threshold"] < 1
        assert block["test"]["roc_auc"] > 0.55
        assert set(block["test"]) >= {"accuracy", "precision", "recall", "f1", "pr_auc", "log_loss", "brier"}

    # dvc exp show: one column per candidate and metric
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    workspace = shown[0]["data"]["metrics"]
    assert (
        workspace["metrics/evaluate.json"]["data"]["base"]["test"]["roc_auc"]
        == metrics["base"]["test"]["roc_auc"]
    )
    table = run(["dvc", "exp", "show", "--no-pager", "--md"], repo).stdout
    assert "base.test.roc_auc" in table
    assert "lgbm_all.test.roc_auc" in table
    assert "rows_in" not in table  # the clean stage's counts are not metrics

    # `ontime compare`: which experiment is best, in a 120-column terminal
    compared = run(["ontime", "compare"], repo).stdout
    assert max(len(line) for line in compared.splitlines()) <= 120, compared
    row = next(line for line in compared.splitlines() if line.startswith("workspace"))
    selected = json.loads((repo / "metrics/select.json").read_text())
    assert row.split()[1] in (champion, compare_short(champion)), compared
    valid, test = (float(v) for v in row.split()[2:4])
    assert valid == round(metrics[champion]["valid"]["roc_auc"], 3), compared
    assert test == round(metrics[champion]["test"]["roc_auc"], 3) == round(selected["test_roc_auc"], 3)

    # dvc plots: training curves and the evaluation plots render
    plots = run(["dvc", "plots", "show", "--json"], repo).stdout
    for name in ("valid/roc_auc", "ROC curve (test window)", "Calibration (test window)", "confusion"):
        assert name in plots, name

    # a train param re-runs train and what uses its model, and the folds (which train the same way),
    # never the data stages, baseline, linear or svm
    clone = smoke_repo.clone("train-lr")
    # (up to select: package and report would follow as any model change's do)
    exp = run(
        ["dvc", "exp", "run", *(f"-S{o}" for o in SMOKE_GRAPH), "-S", "train.lr=0.003", "select"], clone
    )
    ran_now = {s for s in ("split", *later) if f"Running stage '{s}'" in exp.stdout}
    assert ran_now == {"train", "finetune", "ensemble", "fold@1", "fold@2", "evaluate", "select"}, exp.stdout


def test_grid_search_through_the_queue(smoke_repo: SmokeRepo) -> None:
    # A clone with the run cache pulled: queued runs restore the unchanged stages instead of running
    # them. A grid over a report setting (the classification test's bar): the queue's mechanics, with
    # only the report stage to run.
    repo = smoke_repo.clone("grid")
    overrides = [f"-S{o}" for o in SMOKE_GRAPH]
    run(["dvc", "exp", "run", "--queue", *overrides, "-S", "report.min_roc_auc=0.5,0.99"], repo)
    run(["dvc", "queue", "start", "-j", "2"], repo)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2, status
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    runs = sorted(
        (
            exp["data"]["params"]["params.yaml"]["data"]["report"]["min_roc_auc"],
            exp["data"]["metrics"]["metrics/report.json"]["data"]["failed_tests"]["classification_test"],
        )
        for commit in shown
        for group in commit.get("experiments") or []
        for exp in group["revs"]
    )
    # the champion's test ROC AUC passes the 0.5 bar and fails the 0.99 one: one more failed test
    assert [bar for bar, _ in runs] == [0.5, 0.99], runs
    assert runs[1][1] == runs[0][1] + 1, runs
