"""The ``analyze`` section: the leakage audit's thresholds and its accepted features."""

from __future__ import annotations

from pydantic import Field, model_validator

from ontime.config import StrictModel


class AnalyzeConfig(StrictModel):
    """The ``analyze`` section of params.yaml (the seed is the top-level ``seed``)."""

    max_auc: float = Field(gt=0.5, le=1, description="a univariate ROC AUC at or above this is a leak")
    min_group_rows: int = Field(ge=1, description="smallest missing/present group the purity test judges")
    max_group_purity: float = Field(
        gt=0.5, le=1, description="a group whose label rate is >= this (or <= 1 - this) is a leak"
    )
    accept: dict[str, str] = Field(description="feature -> reason: audited and accepted, never flagged")
    cv_folds: int = Field(ge=2, description="folds of the out-of-fold target encoding (categoricals)")
    smoothing: float = Field(ge=0, description="prior weight, in rows, of the smoothed target encoding")
    min_category_rows: int = Field(ge=1, description="rarer categories are encoded as the prior")
    max_source_r2: float = Field(
        gt=0,
        le=1,
        description="the label's source column (e.g. a rating the label thresholds) explained by a "
        "linear model of a few features at or above this out-of-fold R^2: those features leak jointly",
    )

    @model_validator(mode="after")
    def _check(self) -> AnalyzeConfig:
        empty = sorted(name for name, reason in self.accept.items() if not str(reason).strip())
        if empty:
            raise ValueError(f"accept entries need a reason (why the feature is not a leak): {empty}")
        return self
