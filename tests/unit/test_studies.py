"""The studies' parts (studies/dvc.yaml: walk-forward backtest, strategy comparison, learning
curve): month arithmetic, windows, configs, summaries. The studies run through DVC in
tests/pipeline/test_studies.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from ontime.config.backtest import BacktestConfig
from ontime.config.learning_curve import LearningCurveConfig
from ontime.config.split import Window
from ontime.config.strategies import StrategiesConfig
from ontime.studies import markdown_table
from ontime.studies.backtest import month_start, summarise, windows
from ontime.studies.learning_curve import most_recent

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
