"""The ``evaluate`` section: which rows choose each candidate's threshold, and how."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ontime.config import StrictModel


class EvaluateConfig(StrictModel):
    valid_part: Literal["train_valid", "finetune_valid"] = Field(
        description="rows that choose each candidate's threshold; none of them may have trained on it"
    )
    threshold: Literal["f1", "cost"]
    cost_fp: float = Field(gt=0, description="cost of a false alarm (threshold: cost)")
    cost_fn: float = Field(gt=0, description="cost of a missed delay (threshold: cost)")
