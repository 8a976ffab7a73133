"""The ``select`` section: how the champion is chosen among the candidates.

With ``folds`` (the default), each candidate's ``metric`` is averaged over walk-forward folds before
the test window (``ontime fold``: fold ``k``'s test window is the ``k``-th stretch of ``fold_days``
days before the pipeline's); the champion has the best mean, unless candidates are within noise of it
(a paired bootstrap interval of the difference, over the folds' rows, that holds 0), when ``prefer``
decides among them. With ``folds: []``, the champion has the best ``metric`` on the validation rows.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ontime.config import StrictModel

Prefer = Literal["higher_mean", "simpler", "cheaper"]

# A fold's folder (data/folds/<k>/, written by ``ontime fold``): what select, the ensemble stage and the
# backtest read.
FOLD_PREDICTIONS = "predictions.parquet"  # every candidate's probabilities on the fold's test rows
FOLD_VALID = "valid_predictions.parquet"  # their held-out probabilities on the fold's finetune_valid rows
FOLD_INFO = "fold.json"  # windows, row counts, ROC AUCs
FOLD_BASE = "base"  # the fold's trained network (train's output), for the backtest's strategies


class SelectConfig(StrictModel):
    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier", "f1"]
    candidates: list[str] = Field(min_length=1)
    folds: list[int] = Field(
        default=[1, 2, 3],
        description="walk-forward folds before the test window (1: the nearest); [] for none",
    )
    fold_days: int = Field(default=30, ge=1, description="days in each fold's test window")
    prefer: Prefer = Field(
        default="higher_mean",
        description="among candidates within noise of the best mean: the best mean itself, the simplest "
        "model family, or the cheapest to serve",
    )
    confidence: float = Field(default=0.95, gt=0, lt=1, description="of the paired bootstrap interval")
    bootstrap: int = Field(default=1000, ge=100, description="paired bootstrap resamples")

    @model_validator(mode="after")
    def _check(self) -> SelectConfig:
        if len(set(self.folds)) != len(self.folds) or any(k < 1 for k in self.folds):
            raise ValueError(f"folds must be distinct whole numbers from 1, got {self.folds}")
        if self.folds and self.metric == "f1":
            raise ValueError(
                "metric f1 needs a decision threshold, which the folds do not choose; use roc_auc, pr_auc, "
                "log_loss or brier with folds (or folds: [] for f1 on the validation rows)"
            )
        return self
