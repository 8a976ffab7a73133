"""The ``backtest`` section: the study's test months and the windows before each."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from ontime.config import StrictModel
from ontime.config.finetune import check_strategies

MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class BacktestConfig(StrictModel):
    """The ``backtest`` section of params.yaml."""

    test_months: list[str] = Field(min_length=1, description="test months, YYYY-MM, ascending")
    finetune_months: int = Field(ge=1, description="months before each test month to fine-tune on")
    train_months: int | None = Field(
        ge=1, description="months before the fine-tune window to train on; null = all since the data start"
    )
    strategies: list[str] = Field(
        min_length=1, description="fine-tune strategies to backtest (finetune.strategy's is the ensemble's)"
    )

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, strategies: list[str]) -> list[str]:
        return check_strategies(strategies)

    @field_validator("test_months")
    @classmethod
    def _months(cls, months: list[str]) -> list[str]:
        bad = [m for m in months if not MONTH.match(m)]
        if bad:
            raise ValueError(f"{bad}: write months as YYYY-MM, e.g. 2013-07")
        if months != sorted(set(months)):
            raise ValueError(f"{months}: list each month once, in ascending order")
        return months
