"""The ``backtest`` section: the study's periods (select's folds, further back) and its strategies."""

from __future__ import annotations

from pydantic import Field, field_validator

from ontime.config import StrictModel
from ontime.config.finetune import check_strategies


class BacktestConfig(StrictModel):
    """The ``backtest`` section of params.yaml."""

    folds: list[int] = Field(
        min_length=1,
        description="periods before the test window, as select's folds (k: the split moved back "
        "k * select.fold_days days); those in select.folds are read from the fold stages",
    )
    strategies: list[str] = Field(
        min_length=1, description="fine-tune strategies to backtest (finetune.strategy's is the ensemble's)"
    )

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, strategies: list[str]) -> list[str]:
        return check_strategies(strategies)

    @field_validator("folds")
    @classmethod
    def _folds(cls, folds: list[int]) -> list[int]:
        if len(set(folds)) != len(folds) or any(k < 1 for k in folds):
            raise ValueError(f"{folds}: list each fold once, as whole numbers from 1 (1: the nearest)")
        return folds
