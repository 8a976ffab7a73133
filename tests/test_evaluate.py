"""Thresholds come from validation rows only; metrics match scikit-learn."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from ontime.config import EvaluateConfig
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


def test_metrics_agree_with_sklearn() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    p = rng.random(300)
    m = classification_metrics(y, p, 0.5)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    assert m["f1"] == pytest.approx(f1_score(y, p >= 0.5), abs=1e-6)
    assert set(m) >= {"accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier"}


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
