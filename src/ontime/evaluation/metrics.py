"""Classification metrics and decision thresholds (chosen on validation rows, never on test rows)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

ThresholdMethod = Literal["f1", "cost"]


def choose_threshold(
    y: np.ndarray,
    p: np.ndarray,
    *,
    method: ThresholdMethod = "f1",
    cost_fp: float = 1.0,
    cost_fn: float = 1.0,
) -> float:
    """The probability cut-off that maximises F1, or minimises ``cost_fp * FP + cost_fn * FN``.

    Every distinct score is a candidate cut (predict positive when ``p >= t``).
    """
    y = np.asarray(y).astype(np.int64)
    order = np.argsort(-p, kind="stable")
    p_sorted, y_sorted = p[order], y[order]
    # cut after each distinct score: predicted positives are the top k rows
    last = np.r_[np.flatnonzero(np.diff(p_sorted) != 0), len(p_sorted) - 1]
    tp = np.cumsum(y_sorted)[last].astype(np.float64)
    fp = (last + 1) - tp
    fn = y.sum() - tp
    if method == "f1":
        score = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
        best = int(np.argmax(score))
    else:
        best = int(np.argmin(cost_fp * fp + cost_fn * fn))
    return float(p_sorted[last[best]])


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, or NaN when ``y`` holds one class only (a small window may)."""
    y = np.asarray(y).astype(np.int64)
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Threshold-free (ROC AUC, PR AUC, log loss, Brier) and thresholded metrics."""
    y = np.asarray(y).astype(np.int64)
    pred = (p >= threshold).astype(np.int64)
    both = 0 < y.sum() < len(y)
    out = {
        "roc_auc": roc_auc(y, p),
        "pr_auc": average_precision_score(y, p) if both else float("nan"),
        "log_loss": log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]),
        "brier": brier_score_loss(y, p),
        "accuracy": accuracy_score(y, pred),
        "precision": precision_score(y, pred, zero_division=0),
        "recall": recall_score(y, pred, zero_division=0),
        "f1": f1_score(y, pred, zero_division=0),
        "positive_rate": float(y.mean()),
        "predicted_positive_rate": float(pred.mean()),
        "rows": len(y),
    }
    return {k: round(float(v), 6) if k != "rows" else int(v) for k, v in out.items()}
