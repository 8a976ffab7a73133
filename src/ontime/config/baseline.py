"""The ``baseline`` section: LightGBM's settings, its time-series CV and recency weighting."""

from __future__ import annotations

from pydantic import Field

from ontime.config import StrictModel


class BaselineConfig(StrictModel):
    """The ``baseline`` section of params.yaml."""

    n_estimators: int = Field(ge=1, description="most boosting rounds; early stopping may use fewer")
    num_leaves: int = Field(ge=2)
    learning_rate: float = Field(gt=0)
    min_child_samples: int = Field(ge=1)
    feature_fraction: float = Field(gt=0, le=1)
    bagging_fraction: float = Field(gt=0, le=1)
    bagging_freq: int = Field(ge=0, description="0 disables bagging")
    lambda_l2: float = Field(ge=0)
    max_cat_to_onehot: int = Field(ge=1)
    cat_smooth: float = Field(ge=0)
    early_stopping_rounds: int = Field(ge=1)
    cv_folds: int = Field(ge=0, description="time-series CV folds over the training window; 0: no CV")
    num_threads: int = Field(ge=1)
    refit: bool = Field(description="fit again on the rows plus their validation days, same tree count")
    half_life_days: float | None = Field(
        gt=0, description="recency weighting: a row's weight halves every N days; null: equal weights"
    )
