"""The ``select`` section: the metric that picks the champion, among which candidates."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ontime.config import StrictModel


class SelectConfig(StrictModel):
    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier", "f1"]
    candidates: list[str] = Field(min_length=1)
