"""The ``gate`` section: how a challenger is compared with the serving champion, and the margin."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ontime.config import StrictModel


class GateConfig(StrictModel):
    """The ``gate`` section of params.yaml."""

    metric: Literal["roc_auc", "pr_auc", "neg_log_loss", "neg_brier"] = Field(
        default="roc_auc", description="what is compared (higher is better)"
    )
    margin: float = Field(default=0.002, ge=0, description="promote only when challenger - champion >= this")
    confidence: float = Field(
        default=0.95, gt=0, lt=1, description="the paired bootstrap interval; its lower end must be > 0"
    )
    bootstrap: int = Field(default=1000, ge=100, description="resamples of the rows (seeded)")
    min_rows: int = Field(default=1000, ge=1, description="fewer labelled rows in the window: no decision")
