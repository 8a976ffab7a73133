"""The ``monitor`` section: drift of served traffic, and its quality once late labels arrive.

``monitor.quality`` (:class:`QualityConfig`) is its sub-section.
"""

from __future__ import annotations

from pydantic import Field

from ontime.config import StrictModel


class QualityConfig(StrictModel):
    """``monitor.quality``: the model's quality on served traffic once late labels arrive."""

    window_days: int = Field(ge=1, description="the alert's window: the newest N days with labels")
    min_labelled: int = Field(ge=1, description="fewer labelled predictions in the window: no verdict")
    max_roc_auc_drop: float = Field(
        ge=0, le=1, description="exit 1 when the window's ROC AUC < champion's validation ROC AUC - this"
    )


class MonitorConfig(StrictModel):
    """The ``monitor`` section of params.yaml."""

    drift_share_threshold: float = Field(gt=0, le=1, description="exit code 1 above this drifted share")
    min_rows: int = Field(ge=1, description="fewer valid requests than this: too few to judge drift")
    sample_rows: int = Field(ge=100, description="rows sampled (seeded) from the log and the reference")
    identifiers: list[str] = Field(
        default_factory=list,
        description="id-like features (flight, tailnum) reported but never drift-tested; names that are "
        "not features of the served model are ignored",
    )
    quality: QualityConfig = Field(
        default_factory=lambda: QualityConfig(window_days=7, min_labelled=200, max_roc_auc_drop=0.05)
    )
