"""Studies (studies/dvc.yaml): the walk-forward backtest, the strategy comparison and the learning
curve, run by DVC on a clone of the session's smoke pipeline (smoke profile, tiny models)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from ontime.candidates import VALID_PART
from ontime.candidates.torch_model import TorchCandidate
from ontime.config import load_params, section
from ontime.config.split import SplitConfig
from ontime.studies.backtest import label
from ontime.training.folds import fold_windows
from tests.conftest import SmokeRepo, run


# ------------------------------------------------------------------------------ through DVC ---
@pytest.fixture(scope="session")
def studied(smoke_repo: SmokeRepo) -> Path:
    """A clone of the session's smoke pipeline (smoke profile, tiny model; pulled with the run
    cache, so train and the data stages are there), then the three studies through
    `dvc repro studies/dvc.yaml`, each with the command studies/dvc.yaml gives it."""
    root = smoke_repo.clone("studies")
    out = run(["dvc", "repro", "studies/dvc.yaml"], root).stdout
    for stage in ("backtest", "strategies", "learning_curve"):
        assert f"studies/dvc.yaml:{stage}'" in out, out
    assert "Running stage 'train'" not in out, out  # the smoke pipeline's model, not a new one
    return root


def features(root: Path) -> pl.DataFrame:
    return pl.read_parquet(root / "data/features/features.parquet")


def test_backtest_walks_forward_over_the_folds_and_the_test_window(studied: Path) -> None:
    metrics = json.loads((studied / "metrics/backtest.json").read_text())
    params = load_params(studied / "params.yaml")
    split_cfg = section(params, "split", SplitConfig, source="params.yaml")
    days = params["select"]["fold_days"]
    periods = metrics["periods"]
    # folds 3, 2, 1 (the oldest first), then the test window
    expected = [label(f"fold {k}", fold_windows(split_cfg.windows, k, days)["test"]) for k in (3, 2, 1)]
    assert [m["period"] for m in periods] == [*expected, label("test", split_cfg.windows["test"])]
    assert [m["reused"] for m in periods] == [False, True, True, True]  # select's folds and the test: read
    candidates = {
        *("base", "finetuned", "lgbm_train", "lgbm_all", "linear", "svm", "ens_weighted", "ens_stacking")
    }
    for m in periods:
        assert set(m["roc_auc"]) == candidates | {"finetuned_adapter"}, m["period"]  # finetuned: head
        assert all(0.5 < auc < 1 for auc in m["roc_auc"].values()), m["roc_auc"]
        assert m["models"]["finetuned_adapter"]["trainable_parameters"] > 0
    # a reused fold scores its members exactly as the fold stage predicted them (its ensembles are
    # weighted on the backtest's other fold periods); the test window is evaluate's
    members = candidates - {"ens_weighted", "ens_stacking"}
    fold = pl.read_parquet(studied / "data/folds/1/predictions.parquet")
    assert set(fold.columns) == members | {"time_hour", "label"}
    y = fold.get_column("label").to_numpy()
    for name in members:
        assert periods[2]["roc_auc"][name] == pytest.approx(roc_auc_score(y, fold.get_column(name)), abs=1e-6)
    evaluated = json.loads((studied / "metrics/evaluate.json").read_text())
    for name in candidates:
        assert periods[3]["roc_auc"][name] == pytest.approx(evaluated[name]["test"]["roc_auc"], abs=1e-6)
    means = metrics["mean_roc_auc"]
    for name, mean in means.items():
        assert mean == pytest.approx(np.mean([m["roc_auc"][name] for m in periods]), abs=1e-6)
    diffs = [m["roc_auc"]["finetuned_adapter"] - m["roc_auc"]["base"] for m in periods]
    assert metrics["finetuned_minus_base"]["adapter"]["mean"] == pytest.approx(np.mean(diffs), abs=1e-6)
    # the selection regret: periods with two before them (fold 1, the test window); on the test
    # window the fold rule serves what select served
    selection = metrics["selection"]
    assert [r["period"] for r in selection["periods"]] == [m["period"] for m in periods[2:]]
    champion = json.loads((studied / "metrics/select.json").read_text())["champion"]
    assert selection["periods"][-1]["folds"] == champion
    table = (studied / "reports/studies/backtest/backtest.md").read_text()
    for line in (f"| {expected[0]} |", "| mean |", "Fine-tuned minus base", "## Selection regret"):
        assert line in table
    points = json.loads((studied / "reports/studies/backtest/points.json").read_text())
    assert len(points) == len(periods) * 9
    assert {(p["period"], p["candidate"]): p["roc_auc"] for p in points}[(expected[1], "linear")] == (
        periods[1]["roc_auc"]["linear"]
    )


def test_strategy_comparison_starts_from_the_trained_model(studied: Path) -> None:
    rows = json.loads((studied / "metrics/strategies.json").read_text())
    assert list(rows) == ["adapter", "head", "none (trained model)"]  # sorted JSON keys
    base = TorchCandidate.load(studied / "models/train")
    valid = pl.read_parquet(studied / f"data/split/{VALID_PART}.parquet")
    test = pl.read_parquet(studied / "data/split/test.parquet")
    none = rows["none (trained model)"]
    assert none["valid_roc_auc"] == pytest.approx(
        roc_auc_score(valid.get_column("label"), base.predict_proba(valid)), abs=1e-6
    )
    assert none["test_roc_auc"] == pytest.approx(
        roc_auc_score(test.get_column("label"), base.predict_proba(test)), abs=1e-6
    )
    head, adapter = rows["head"], rows["adapter"]
    total = sum(p.numel() for p in base.model.parameters())
    assert head["parameters"] == total  # head: the same network, only its head learns
    assert 0 < head["trainable_parameters"] < total
    assert adapter["parameters"] > total  # adapter: new weights added to the network
    assert adapter["trainable_parameters"] == adapter["parameters"] - total + head["trainable_parameters"]
    table = (studied / "reports/studies/strategies/strategies.md").read_text()
    assert "| adapter |" in table
    assert "trainable parameters" in table


def test_learning_curve_grows_the_newest_rows(studied: Path) -> None:
    shares = json.loads((studied / "metrics/learning_curve.json").read_text())["shares"]
    train = pl.read_parquet(studied / "data/split/train.parquet")
    assert [s["share"] for s in shares] == [0.5, 1.0]
    assert [s["train_rows"] for s in shares] == [round(0.5 * train.height), train.height]
    assert shares[0]["first"] > shares[1]["first"]  # the half share starts later: newest rows kept
    # the whole train part is the train stage's computation: the same model (deterministic training)
    base = TorchCandidate.load(studied / "models/train")
    test = pl.read_parquet(studied / "data/split/test.parquet")
    auc = roc_auc_score(test.get_column("label"), base.predict_proba(test))
    assert shares[1]["neural"]["test_roc_auc"] == pytest.approx(auc, abs=1e-6)
    for s in shares:
        for model in ("neural", "lightgbm"):
            assert 0.5 < s[model]["test_roc_auc"] < 1
            assert 0.5 < s[model]["valid_roc_auc"] < 1


def test_studies_are_up_to_date_and_outside_the_main_run(studied: Path) -> None:
    status = run(["dvc", "status", "studies/dvc.yaml"], studied).stdout
    assert "up to date" in status, status
    # `dvc repro` reproduces the stages `dvc stage list` lists: dvc.yaml's (the smoke_repo fixture
    # checks that a whole `dvc repro` runs none of these)
    main = run(["dvc", "stage", "list", "--name-only"], studied).stdout.split()
    studies = run(["dvc", "stage", "list", "--name-only", "studies/dvc.yaml"], studied).stdout.split()
    assert "train" in main
    assert not {"backtest", "strategies", "learning_curve"} & {s.rpartition(":")[2] for s in main}
    assert [s.rpartition(":")[2] for s in studies] == ["backtest", "strategies", "learning_curve"]
    spec = yaml.safe_load((studied / "studies/dvc.yaml").read_text())
    for name, stage in spec["stages"].items():
        assert stage["wdir"] == "..", name
        assert (studied / next(iter(stage["metrics"][0]))).is_file(), name
    plots = json.loads(run(["dvc", "plots", "show", "--json"], studied).stdout)
    titles = {
        "Backtest: test ROC AUC by period": 4 * 9,  # points: periods x models
        "Fine-tuning strategies: ROC AUC": 3 * 2,  # (none, head, adapter) x (valid, test)
        "Learning curve: ROC AUC by training rows": 2 * 4,  # shares x (2 models x 2 parts)
    }
    errors = [e for e in plots.get("errors") or [] if e["name"] in titles]
    assert not errors, errors  # e.g. a data path not relative to studies/ (top-level plots are)
    for title, n in titles.items():
        (plot,) = plots["data"][title]
        assert plot["type"] == "vega", title
        values = plot["content"]["data"]["values"]
        assert len(values) == n, (title, values)
        assert all(0.5 < float(v["roc_auc"]) < 1 for v in values), title
