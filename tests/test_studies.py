"""Studies (studies/dvc.yaml): the walk-forward backtest, the strategy comparison and the learning
curve, run by DVC in a real git+DVC repo on the smoke profile with tiny models, and their parts.

The repo's data stages run in-process (as in test_data_stages), then `dvc repro -s` runs train and
the three studies, each with the command dvc.yaml / studies/dvc.yaml give it.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from ontime.candidates import VALID_PART
from ontime.candidates.torch_model import TorchCandidate
from ontime.config.backtest import BacktestConfig
from ontime.config.learning_curve import LearningCurveConfig
from ontime.config.split import Window
from ontime.config.strategies import StrategiesConfig
from ontime.studies import markdown_table
from ontime.studies.backtest import month_start, summarise, windows
from ontime.studies.learning_curve import most_recent
from tests.conftest import SHRUNK, TINY, copy_repo, run, run_stages, write_params

MONTHS = ["2013-03", "2013-04"]  # conf/experiment/smoke.yaml's backtest.test_months
TZ = "America/New_York"


# ------------------------------------------------------------------------------------- units ---
def test_month_arithmetic_and_windows_move_with_the_test_month() -> None:
    assert month_start("2013-01", -1) == dt.date(2012, 12, 1)
    assert month_start("2013-12", 1) == dt.date(2014, 1, 1)
    cfg = BacktestConfig(test_months=["2013-07"], finetune_months=1, train_months=None, strategies=["head"])
    w = windows("2013-07", cfg, dt.date(2013, 1, 1))
    assert w == {
        "train": Window(start=dt.date(2013, 1, 1), end=dt.date(2013, 6, 1)),
        "finetune": Window(start=dt.date(2013, 6, 1), end=dt.date(2013, 7, 1)),
        "test": Window(start=dt.date(2013, 7, 1), end=dt.date(2013, 8, 1)),
    }
    cfg2 = cfg.model_copy(update={"finetune_months": 2, "train_months": 3})
    w2 = windows("2013-07", cfg2, dt.date(2013, 1, 1))
    assert (w2["train"].start, w2["train"].end, w2["finetune"].start) == (
        dt.date(2013, 2, 1),
        dt.date(2013, 5, 1),
        dt.date(2013, 5, 1),
    )


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("test_months", ["2013-7"], "YYYY-MM"),
        ("test_months", ["2013-13"], "YYYY-MM"),
        ("test_months", ["2013-08", "2013-07"], "ascending"),
        ("strategies", ["lora"], "not a fine-tune strategy"),
    ],
)
def test_backtest_config_names_the_mistake(field: str, value: Any, says: str) -> None:
    good = {"test_months": ["2013-07"], "finetune_months": 1, "train_months": None, "strategies": ["head"]}
    with pytest.raises(ValidationError, match=says):
        BacktestConfig(**{**good, field: value})


def test_other_study_configs_refuse_bad_values() -> None:
    with pytest.raises(ValidationError, match="not a fine-tune strategy"):
        StrategiesConfig(names=["head", "prompt"])
    with pytest.raises(ValidationError, match="once"):
        StrategiesConfig(names=["head", "head"])
    with pytest.raises(ValidationError, match="ascending"):
        LearningCurveConfig(shares=[0.5, 0.25])
    with pytest.raises(ValidationError, match=r"\(0, 1\]"):
        LearningCurveConfig(shares=[0.5, 1.5])


def test_most_recent_keeps_the_newest_rows_in_table_order() -> None:
    t = [dt.datetime(2013, 1, d) for d in (5, 1, 9, 3, 7, 2)]
    df = pl.DataFrame({"t": t, "i": range(6)})
    kept = most_recent(df, 0.5, "t")
    assert kept.get_column("i").to_list() == [0, 2, 4]  # days 5, 9, 7: the newest three, table order
    assert most_recent(df, 0.01, "t").get_column("i").to_list() == [2]  # at least one row
    assert most_recent(df, 0.5, None).get_column("i").to_list() == [3, 4, 5]


def test_summary_means_and_differences() -> None:
    months = [
        {"roc_auc": {"base": 0.60, "finetuned_head": 0.62, "lgbm_train": 0.61}},
        {"roc_auc": {"base": 0.70, "finetuned_head": 0.69, "lgbm_train": 0.65}},
    ]
    s = summarise(months, ["head"])
    assert s["mean_roc_auc"] == {"base": 0.65, "finetuned_head": 0.655, "lgbm_train": 0.63}
    assert s["finetuned_minus_base"]["head"] == {"mean": 0.005, "months_above": 1, "months": 2}
    assert s["base_minus_lgbm_train"]["months_above"] == 1
    assert s["base_minus_lgbm_train"]["mean"] == pytest.approx(0.02)
    assert s["best_mean"] == "finetuned_head"


def test_markdown_table_cells() -> None:
    text = markdown_table(["a", "b", "c"], [[0.123456, None, "x"], [float("nan"), 3, 1.0]])
    assert text.splitlines() == [
        "| a | b | c |",
        "|---|---|---|",
        "| 0.1235 |  | x |",
        "| nan | 3 | 1.0000 |",
    ]


# ------------------------------------------------------------------------------ through DVC ---
@pytest.fixture(scope="session")
def studied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git+DVC repo whose data stages ran (smoke profile, tiny model), then train and the three
    studies through `dvc repro -s`. Session scope: built once per worker even when pytest-xdist
    interleaves other files' tests with these (a module fixture would be built again)."""
    root = copy_repo(tmp_path_factory.mktemp("studies") / "repo")
    write_params(root / "params.yaml", [*SHRUNK, *TINY])
    run_stages(root, root / "params.yaml")
    out = run(["dvc", "repro", "-s", "analyze", "train", "studies/dvc.yaml"], root).stdout
    for stage in ("analyze", "train", "backtest", "strategies", "learning_curve"):
        assert f"Running stage '{stage}'" in out or f"studies/dvc.yaml:{stage}'" in out, out
    return root


def features(root: Path) -> pl.DataFrame:
    return pl.read_parquet(root / "data/features/features.parquet")


def month_rows(df: pl.DataFrame, start: dt.date, end: dt.date) -> int:
    def at(d: dt.date) -> dt.datetime:
        return dt.datetime(d.year, d.month, d.day)

    t = pl.col("time_hour").dt.convert_time_zone(TZ).dt.replace_time_zone(None)
    return df.filter((t >= at(start)) & (t < at(end))).height


def test_backtest_walks_forward_month_by_month(studied: Path) -> None:
    metrics = json.loads((studied / "metrics/backtest.json").read_text())
    assert [m["month"] for m in metrics["months"]] == MONTHS
    df = features(studied)
    for m in metrics["months"]:
        first = month_start(m["month"])
        rows = m["rows"]
        # test = the whole month; fine-tune = the month before (its last 5 days validate); train =
        # the month before that (smoke: backtest.train_months 1), its last 5 days validating
        assert rows["test"] == month_rows(df, first, month_start(m["month"], 1))
        assert rows["finetune"] + rows["finetune_valid"] == month_rows(df, month_start(m["month"], -1), first)
        assert rows["finetune_valid"] == month_rows(df, first - dt.timedelta(days=5), first)
        assert rows["train"] + rows["train_valid"] == month_rows(
            df, month_start(m["month"], -2), month_start(m["month"], -1)
        )
        expected = {
            "base",
            "finetuned_head",
            "finetuned_adapter",
            "lgbm_train",
            "lgbm_all",
            "linear",
            "ens_weighted",
            "ens_stacking",
        }
        assert set(m["roc_auc"]) == expected
        assert all(0.5 < auc < 1 for auc in m["roc_auc"].values()), m["roc_auc"]
        # the adapter strategy trains fewer weights than the whole model, more than none
        assert m["models"]["finetuned_adapter"]["trainable_parameters"] > 0
    means = metrics["mean_roc_auc"]
    for name, mean in means.items():
        assert mean == pytest.approx(np.mean([m["roc_auc"][name] for m in metrics["months"]]), abs=1e-6)
    for strategy in ("head", "adapter"):
        diffs = [m["roc_auc"][f"finetuned_{strategy}"] - m["roc_auc"]["base"] for m in metrics["months"]]
        assert metrics["finetuned_minus_base"][strategy]["mean"] == pytest.approx(np.mean(diffs), abs=1e-6)
    table = (studied / "reports/studies/backtest/backtest.md").read_text()
    for line in ("| 2013-03 |", "| 2013-04 |", "| mean |", "Fine-tuned minus base"):
        assert line in table
    points = json.loads((studied / "reports/studies/backtest/points.json").read_text())
    assert len(points) == len(MONTHS) * 8
    assert {(p["month"], p["candidate"]): p["roc_auc"] for p in points}[("2013-04", "linear")] == (
        metrics["months"][1]["roc_auc"]["linear"]
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
        "Backtest: test ROC AUC by month": 2 * 8,  # points: months x models
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
