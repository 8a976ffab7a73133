"""The ``report`` section: the Evidently reports' samples, thresholds and tests."""

from __future__ import annotations

from pydantic import Field

from ontime.config import StrictModel


class ReportConfig(StrictModel):
    """The ``report`` section of params.yaml."""

    sample_rows: int = Field(ge=100, description="rows sampled (seeded) from each larger frame")
    drift_share_threshold: float = Field(gt=0, le=1, description="test fails above this drifted share")
    stattest_threshold: float | None = Field(
        gt=0, description="per-column drift threshold; null: each test's default (p 0.05, distance 0.1)"
    )
    min_roc_auc: float = Field(ge=0, le=1, description="classification test: champion ROC AUC >= this")
    max_missing_share: float = Field(ge=0, le=1, description="quality test: each column's missing share")
    top_drifted: int = Field(ge=1, description="most-drifted features listed in the summary")
    workspace_project: str = Field(min_length=1, description="Evidently project in the workspace")
