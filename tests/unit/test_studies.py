"""The studies' parts (studies/dvc.yaml: walk-forward backtest, strategy comparison, learning
curve): periods, configs, summaries, the selection regret. The studies run through DVC in
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
from ontime.studies.backtest import label, regret, summarise
from ontime.studies.learning_curve import most_recent

TZ = "America/New_York"


# ------------------------------------------------------------------------------------- units ---
def test_a_period_is_named_by_its_days() -> None:
    window = Window(start=dt.date(2013, 11, 1), end=dt.date(2013, 12, 1))
    assert label("fold 1", window) == "fold 1 (2013-11-01 to 2013-11-30)"


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("folds", [1, 1], "once"),
        ("folds", [0, 1], "from 1"),
        ("folds", [], "at least 1"),
        ("strategies", ["lora"], "not a fine-tune strategy"),
    ],
)
def test_backtest_config_names_the_mistake(field: str, value: Any, says: str) -> None:
    good = {"folds": [1, 2, 3], "strategies": ["head"]}
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
    periods = [
        {"roc_auc": {"base": 0.60, "finetuned_head": 0.62, "lgbm_train": 0.61}},
        {"roc_auc": {"base": 0.70, "finetuned_head": 0.69, "lgbm_train": 0.65}},
    ]
    s = summarise(periods, ["head"], "adapter")  # head is not finetune.strategy: finetuned_head
    assert s["mean_roc_auc"] == {"base": 0.65, "finetuned_head": 0.655, "lgbm_train": 0.63}
    assert s["finetuned_minus_base"]["head"] == {"mean": 0.005, "periods_above": 1, "periods": 2}
    assert s["base_minus_lgbm_train"]["periods_above"] == 1
    assert s["base_minus_lgbm_train"]["mean"] == pytest.approx(0.02)
    assert s["best_mean"] == "finetuned_head"


def test_the_chosen_strategy_is_the_finetuned_candidate() -> None:
    periods = [{"roc_auc": {"base": 0.60, "finetuned": 0.63, "lgbm_train": 0.61}}]
    assert summarise(periods, ["head"], "head")["finetuned_minus_base"]["head"]["mean"] == pytest.approx(0.03)


def test_selection_regret_simulates_each_rule_on_the_periods_before() -> None:
    # a wins the first two periods, b the next two; c has the best validation figures in every one.
    scores = [
        {"a": 0.70, "b": 0.60, "c": 0.50},
        {"a": 0.72, "b": 0.62, "c": 0.50},
        {"a": 0.60, "b": 0.71, "c": 0.55},
        {"a": 0.61, "b": 0.71, "c": 0.56},
    ]
    periods = [
        {"period": f"p{i}", "roc_auc": s, "valid_roc_auc": {"a": 0.6, "b": 0.6, "c": 0.9}}
        for i, s in enumerate(scores)
    ]
    r = regret(periods, ["a", "b", "c"], folds=2)
    assert [m["period"] for m in r["periods"]] == ["p2", "p3"]  # two periods before each
    # p2: a had the best mean over p0-p1; p3: b over p1-p2 (0.665 against a's 0.66)
    assert [m["folds"] for m in r["periods"]] == ["a", "b"]
    assert [m["validation"] for m in r["periods"]] == ["c", "c"]
    assert [m["best"] for m in r["periods"]] == ["b", "b"]
    assert r["mean"] == {
        "best": pytest.approx(0.71),
        "folds": pytest.approx(0.655),
        "validation": pytest.approx(0.555),
    }
    assert r["fixed"] == {"a": pytest.approx(0.605), "b": pytest.approx(0.71), "c": pytest.approx(0.555)}
    assert regret(periods[:2], ["a"], folds=2)["periods"] == []


def test_markdown_table_cells() -> None:
    text = markdown_table(["a", "b", "c"], [[0.123456, None, "x"], [float("nan"), 3, 1.0]])
    assert text.splitlines() == [
        "| a | b | c |",
        "|---|---|---|",
        "| 0.1235 |  | x |",
        "| nan | 3 | 1.0000 |",
    ]
