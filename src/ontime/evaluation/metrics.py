"""Classification metrics and decision thresholds (chosen on validation rows, never on test rows), and
the points of the evaluation plots: ROC and precision-recall curves thinned to a few hundred points
(the metrics are always computed on every row), calibration bins and confusion counts."""

from __future__ import annotations

import heapq
from typing import Literal

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
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


# ---------------------------------------------------------------------------------------------------
# Plot points
# ---------------------------------------------------------------------------------------------------


def thin_curve(x: np.ndarray, y: np.ndarray, *, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points of the polyline ``(x, y)`` that keep its shape.

    Greedy Douglas-Peucker with a point budget: start from the two ends and keep adding the point
    farthest from the polyline kept so far, so the largest deviation left is as small as the budget
    allows: corners survive, straight runs cost nothing. The indices are sorted (the curve's order)
    and always hold the first and the last point.
    """
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2 (the curve's two ends), however: {max_points=}")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n <= max_points:
        return np.arange(n)
    keep = [0, n - 1]
    heap: list[tuple[float, int, int, int]] = []

    def push(i: int, j: int) -> None:
        if j - i >= 2:
            k, d = _farthest(x, y, i, j)
            heapq.heappush(heap, (-d, i, j, k))

    push(0, n - 1)
    while heap and len(keep) < max_points:
        neg_d, i, j, k = heapq.heappop(heap)
        if neg_d == 0:  # every point left lies on the kept polyline
            break
        keep.append(k)
        push(i, k)
        push(k, j)
    return np.sort(np.asarray(keep))


def _farthest(x: np.ndarray, y: np.ndarray, i: int, j: int) -> tuple[int, float]:
    """The point strictly between ``i`` and ``j`` farthest from the segment (i, j), and its distance."""
    xs, ys = x[i + 1 : j], y[i + 1 : j]
    dx, dy = x[j] - x[i], y[j] - y[i]
    length2 = dx * dx + dy * dy
    t = np.zeros_like(xs) if length2 == 0 else np.clip(((xs - x[i]) * dx + (ys - y[i]) * dy) / length2, 0, 1)
    d = np.hypot(xs - (x[i] + t * dx), ys - (y[i] + t * dy))
    k = int(np.argmax(d))
    return i + 1 + k, float(d[k])


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    """Rounded for small files; a threshold of +inf (the "nothing positive" end of a curve) is None."""
    return [round(float(v), 6) if np.isfinite(v) else None for v in values]


def roc_points(y: np.ndarray, p: np.ndarray, *, max_points: int) -> list[dict[str, float | None]]:
    """The ROC curve as rows ``{point, fpr, tpr, threshold}``, thinned to ``max_points``.

    ``point`` is the position along the curve (from threshold +inf down), the order to draw it in.
    Empty when ``y`` holds one class only (there is no curve).
    """
    y = np.asarray(y).astype(np.int64)
    if not 0 < y.sum() < len(y):
        return []
    fpr, tpr, thresholds = roc_curve(y, p)
    return _curve_rows({"fpr": fpr, "tpr": tpr}, thresholds, max_points)


def precision_recall_points(
    y: np.ndarray, p: np.ndarray, *, max_points: int
) -> list[dict[str, float | None]]:
    """The precision-recall curve as rows ``{point, recall, precision, threshold}``, thinned to
    ``max_points``, from recall 1 (lowest threshold) to recall 0. Empty when ``y`` holds one class."""
    y = np.asarray(y).astype(np.int64)
    if not 0 < y.sum() < len(y):
        return []
    precision, recall, thresholds = precision_recall_curve(y, p)
    # the last point (recall 0, precision 1) has no threshold
    return _curve_rows({"recall": recall, "precision": precision}, np.r_[thresholds, np.inf], max_points)


def _curve_rows(
    axes: dict[str, np.ndarray], thresholds: np.ndarray, max_points: int
) -> list[dict[str, float | None]]:
    (x_name, x), (y_name, y) = axes.items()
    idx = thin_curve(x, y, max_points=max_points)
    columns = {x_name: _finite_or_none(x[idx]), y_name: _finite_or_none(y[idx])}
    columns["threshold"] = _finite_or_none(thresholds[idx])
    return [
        {"point": point, **{name: values[point] for name, values in columns.items()}}
        for point in range(len(idx))
    ]


def calibration_points(y: np.ndarray, p: np.ndarray, *, n_bins: int = 10) -> list[dict[str, float]]:
    """Per non-empty probability bin (``n_bins`` equal widths on [0, 1], as sklearn's
    ``calibration_curve(strategy="uniform")``): mean predicted probability, fraction positive, rows."""
    y = np.asarray(y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], p)
    rows = np.bincount(bins, minlength=n_bins)
    pred = np.bincount(bins, weights=p, minlength=n_bins)
    true = np.bincount(bins, weights=y, minlength=n_bins)
    return [
        {
            "prob_pred": round(float(pred[b] / rows[b]), 6),
            "prob_true": round(float(true[b] / rows[b]), 6),
            "rows": int(rows[b]),
        }
        for b in np.flatnonzero(rows)
    ]


def confusion_counts(y: np.ndarray, pred: np.ndarray) -> list[dict[str, str | int]]:
    """The four cells of the confusion matrix as rows ``{actual, predicted, count}`` (labels "0", "1")."""
    y, pred = np.asarray(y).astype(np.int64), np.asarray(pred).astype(np.int64)
    return [
        {"actual": str(a), "predicted": str(b), "count": int(((y == a) & (pred == b)).sum())}
        for a in (0, 1)
        for b in (0, 1)
    ]
