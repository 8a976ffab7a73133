"""Thresholds come from validation rows only; metrics match hand-computed values."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import f1_score

from ontime.config.evaluate import EvaluateConfig
from ontime.evaluation.evaluate import evaluate
from ontime.evaluation.metrics import choose_threshold, classification_metrics
from ontime.spec import FeatureSpec


def brute_force_threshold(y: np.ndarray, p: np.ndarray, cost=None) -> float:
    best_t, best = 0.0, -np.inf
    for t in np.unique(p):
        pred = (p >= t).astype(int)
        if cost is None:
            score = f1_score(y, pred, zero_division=0)
        else:
            fp = ((pred == 1) & (y == 0)).sum()
            fn = ((pred == 0) & (y == 1)).sum()
            score = -(cost[0] * fp + cost[1] * fn)
        if score > best + 1e-12:
            best, best_t = score, t
    return float(best_t)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_threshold_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 400)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.2, 400), 0, 1).round(3)  # ties on purpose
    t = choose_threshold(y, p, method="f1")
    assert f1_score(y, p >= t) == pytest.approx(f1_score(y, p >= brute_force_threshold(y, p)))


def test_cost_threshold_moves_with_the_costs() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.2, 500), 0, 1)
    cheap_misses = choose_threshold(y, p, method="cost", cost_fp=5.0, cost_fn=1.0)
    costly_misses = choose_threshold(y, p, method="cost", cost_fp=1.0, cost_fn=5.0)
    assert costly_misses < cheap_misses
    assert costly_misses == pytest.approx(brute_force_threshold(y, p, cost=(1.0, 5.0)))


# A hand-made example: 4 positives, 6 negatives, one positive/negative tie at 0.3.
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
P = np.array([0.9, 0.7, 0.55, 0.3, 0.8, 0.6, 0.4, 0.3, 0.2, 0.1])


def test_thresholded_metrics_from_hand_counted_confusion_matrix() -> None:
    m = classification_metrics(Y, P, 0.5)
    # predicted positive (p >= 0.5): rows 0, 1, 2 (positives) and 4, 5 (negatives)
    tp, fp, fn, tn = 3, 2, 1, 4
    assert m["accuracy"] == pytest.approx((tp + tn) / 10)  # 0.7
    assert m["precision"] == pytest.approx(tp / (tp + fp))  # 0.6
    assert m["recall"] == pytest.approx(tp / (tp + fn))  # 0.75
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-6)  # 2/3
    assert m["positive_rate"] == pytest.approx(0.4)
    assert m["predicted_positive_rate"] == pytest.approx(0.5)
    assert m["rows"] == 10
    # the cut is inclusive: at 0.55 row 2 is still predicted positive, above it is not
    assert classification_metrics(Y, P, 0.55)["recall"] == pytest.approx(0.75)
    assert classification_metrics(Y, P, 0.56)["recall"] == pytest.approx(0.5)


def test_roc_auc_is_the_share_of_pairs_ordered_right() -> None:
    m = classification_metrics(Y, P, 0.5)
    # per positive, the negatives scored below it (a tie counts half): 0.9 -> 6, 0.7 -> 5,
    # 0.55 -> 4, 0.3 -> 2 + 0.5; out of 4 * 6 pairs
    assert m["roc_auc"] == pytest.approx((6 + 5 + 4 + 2.5) / 24, abs=1e-6)
    pos, neg = P[Y == 1], P[Y == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert m["roc_auc"] == pytest.approx(pairs / (len(pos) * len(neg)), abs=1e-6)
    # a ranking with every positive on top scores 1 whatever the scores' scale
    assert classification_metrics(Y, np.where(Y == 1, 0.02, 0.01), 0.5)["roc_auc"] == 1.0


def test_pr_auc_is_average_precision_over_the_ranking() -> None:
    m = classification_metrics(Y, P, 0.5)
    # descending cuts where recall grows: 0.9 (precision 1/1), 0.7 (2/3), 0.55 (3/5), and the
    # tied group at 0.3 (4/8); each adds 1/4 of recall
    assert m["pr_auc"] == pytest.approx((1 + 2 / 3 + 3 / 5 + 4 / 8) / 4, abs=1e-6)


def test_probabilistic_metrics_from_their_formulas() -> None:
    m = classification_metrics(Y, P, 0.5)
    assert m["brier"] == pytest.approx(np.mean((P - Y) ** 2), abs=1e-6)
    log_loss = -np.mean(Y * np.log(P) + (1 - Y) * np.log(1 - P))
    assert m["log_loss"] == pytest.approx(log_loss, abs=1e-6)
    # written out: positives (1 - p)^2 = .01 + .09 + .2025 + .49, negatives p^2 = .64 + .36 + .16 +
    # .09 + .04 + .01; 2.0925 over 10 rows
    assert m["brier"] == pytest.approx(0.20925, abs=1e-6)
    # certain and right costs nothing; certain and wrong is clipped, not infinite
    sure = classification_metrics(np.array([0, 1]), np.array([0.0, 1.0]), 0.5)
    assert sure["log_loss"] == pytest.approx(0.0, abs=1e-6)
    assert sure["brier"] == 0.0
    wrong = classification_metrics(np.array([0, 1]), np.array([1.0, 0.0]), 0.5)
    assert wrong["log_loss"] == pytest.approx(-np.log(1e-15), rel=1e-3)
    assert wrong["brier"] == 1.0


def test_one_class_has_no_ranking_metrics_and_no_division_by_zero() -> None:
    m = classification_metrics(np.zeros(4, dtype=int), np.array([0.1, 0.2, 0.3, 0.4]), 0.9)
    assert np.isnan(m["roc_auc"])
    assert np.isnan(m["pr_auc"])
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)  # no positives at all
    assert m["accuracy"] == 1.0


class ScoreColumn:
    """A candidate that reads its probability from a column: enough to test evaluate's bookkeeping."""

    def __init__(self, name: str, column: str) -> None:
        self.name, self.column = name, column

    def predict_proba(self, df: pl.DataFrame) -> np.ndarray:
        return df.get_column(self.column).to_numpy().astype(np.float64)


def test_threshold_never_looks_at_test_labels() -> None:
    rng = np.random.default_rng(5)
    spec = FeatureSpec(target="label", time_column=None, numeric=["s"], categorical=[], features=[])

    def frame(n: int) -> pl.DataFrame:
        y = rng.integers(0, 2, n)
        return pl.DataFrame({"s": np.clip(0.3 * y + rng.normal(0.35, 0.2, n), 0, 1), "label": y})

    valid, test = frame(300), frame(300)
    cfg = EvaluateConfig(valid_part="finetune_valid", threshold="f1", cost_fp=1, cost_fn=1)
    m1, preds = evaluate([ScoreColumn("a", "s")], valid, test, spec, cfg)
    flipped = test.with_columns((1 - pl.col("label")).alias("label"))
    m2, _ = evaluate([ScoreColumn("a", "s")], valid, flipped, spec, cfg)
    assert m1["a"]["threshold"] == m2["a"]["threshold"]
    assert m1["a"]["threshold"] == pytest.approx(
        choose_threshold(valid["label"].to_numpy(), valid["s"].to_numpy()), abs=1e-6
    )
    assert m1["a"]["test"]["roc_auc"] == pytest.approx(1 - m2["a"]["test"]["roc_auc"], abs=1e-6)
    assert preds["test"].columns == ["label", "a"]
