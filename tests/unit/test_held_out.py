"""Held-out predictions: a candidate finally fitted on the validation rows (a refit, an ensemble)
answers for them with the predictions of a fit that never saw them, in every stage that judges or
combines candidates on those rows (evaluate's thresholds and scores, the ensemble's weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from ontime.candidates import VALID_PART, load_held_out, save_held_out, validation_predictions
from ontime.config.ensemble import EnsembleConfig
from ontime.config.evaluate import EvaluateConfig
from ontime.evaluation.evaluate import evaluate
from ontime.spec import FeatureSpec
from ontime.training.ensemble import build

RNG = np.random.default_rng(0)
N = 400
Y = RNG.integers(0, 2, N)
SPEC = FeatureSpec(target="y", time_column=None, numeric=["x"], categorical=[], features=[{"name": "x"}])
ROWS = pl.DataFrame({"x": RNG.normal(size=N), "y": Y})


class Fixed:
    """A candidate whose own predictions on the rows (a refit that saw them: perfect) differ from
    its held-out ones (noisy)."""

    def __init__(self, name: str, held: np.ndarray | None) -> None:
        self.name = name
        self.held_out = {} if held is None else {VALID_PART: held}

    def predict_proba(self, df: pl.DataFrame) -> np.ndarray:
        return np.where(df.get_column("y").to_numpy() == 1, 0.99, 0.01)


def noisy(seed: int) -> np.ndarray:
    return np.clip(0.5 * Y + np.random.default_rng(seed).uniform(0, 0.6, N), 0, 1)


def test_validation_predictions_prefer_held_out_and_check_their_length(tmp_path: Path) -> None:
    held = noisy(1)
    cand = Fixed("refit", held)
    assert np.array_equal(validation_predictions(cand, ROWS, VALID_PART), held)
    assert np.array_equal(validation_predictions(cand, ROWS, "train_valid"), cand.predict_proba(ROWS))
    assert np.array_equal(
        validation_predictions(Fixed("plain", None), ROWS, VALID_PART), cand.predict_proba(ROWS)
    )
    with pytest.raises(Exception, match="held-out predictions cover 400 rows, finetune_valid has 10"):
        validation_predictions(cand, ROWS.head(10), VALID_PART)
    save_held_out(tmp_path, {VALID_PART: held})
    assert np.array_equal(load_held_out(tmp_path)[VALID_PART], held)


def test_evaluate_chooses_thresholds_and_scores_on_held_out_predictions() -> None:
    held = noisy(2)
    cfg = EvaluateConfig(valid_part=VALID_PART, threshold="f1", cost_fp=1.0, cost_fn=1.0)
    metrics, preds = evaluate([Fixed("refit", held)], ROWS, ROWS, SPEC, cfg)
    assert np.array_equal(preds["valid"].get_column("refit").to_numpy(), held)
    assert metrics["refit"]["valid"]["roc_auc"] == pytest.approx(roc_auc_score(Y, held), abs=1e-6)
    assert metrics["refit"]["test"]["roc_auc"] == 1.0  # the test rows are scored by the model itself


def test_ensemble_weights_are_fitted_on_members_held_out_predictions() -> None:
    a, b = noisy(3), noisy(4)
    members = [Fixed("a", a), Fixed("b", b)]
    cfg = EnsembleConfig(members=["a", "b"], methods=["weighted"], folds=2, stacking_c=1.0)
    _, metrics = build(cfg, members, ROWS, "y")
    assert metrics["members_valid_roc_auc"] == {
        "a": round(float(roc_auc_score(Y, a)), 6),
        "b": round(float(roc_auc_score(Y, b)), 6),
    }
    assert metrics["ens_weighted"]["oof_valid_roc_auc"] < 1.0  # not the members' in-sample perfection
