"""Studies: what the pipeline's single run cannot say, each a stage of ``studies/dvc.yaml``.

``dvc repro`` runs ``dvc.yaml`` only; ``dvc repro studies/dvc.yaml`` runs these (they retrain many
models, so they are kept out of the main run). Each reuses the stages' own fitting functions (train,
finetune, baseline, linear, ensemble), so a study measures exactly what the pipeline does.

- ``backtest``: walk-forward over test months: base, fine-tuned (each strategy), LightGBM, linear,
  ensembles, per month and averaged.
- ``strategies``: every fine-tuning strategy from the same trained model on the pipeline's split.
- ``learning_curve``: the neural model and LightGBM on growing shares of the training window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from ontime.candidates.torch_model import one as one  # re-exported: the studies import it from here


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC rounded to 6 places (NaN when ``y`` has one class)."""
    y = np.asarray(y).astype(np.int64)
    if not 0 < y.sum() < len(y):
        return float("nan")
    return round(float(roc_auc_score(y, p)), 6)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; floats with 4 decimals, None as a blank."""

    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return "nan" if v != v else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
