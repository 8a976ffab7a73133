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
from ontime.candidates.ensemble_model import combine
from ontime.config.ensemble import EnsembleConfig
from ontime.config.evaluate import EvaluateConfig
from ontime.errors import ConfigError
from ontime.evaluation.evaluate import evaluate
from ontime.spec import FeatureSpec
from ontime.training.ensemble import build, cross_fitted, fit_state

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
    _, metrics, on_folds = build(cfg, members, ROWS, "y")
    assert on_folds == {}  # no folds: fitted on the validation rows
    assert metrics["members_valid_roc_auc"] == {
        "a": round(float(roc_auc_score(Y, a)), 6),
        "b": round(float(roc_auc_score(Y, b)), 6),
    }
    assert metrics["ens_weighted"]["oof_valid_roc_auc"] < 1.0  # not the members' in-sample perfection


def fold_blocks(n: int = 300) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Three folds of two members' probabilities (the first informative, the second noise)."""
    rng = np.random.default_rng(1)
    out = {}
    for k in (1, 2, 3):
        y = rng.integers(0, 2, n)
        out[k] = (np.clip(np.column_stack([0.3 * y + rng.normal(0.35, 0.2, n), rng.random(n)]), 0, 1), y)
    return out


@pytest.mark.parametrize("method", ["weighted", "stacking"])
def test_each_folds_ensemble_is_weighted_on_the_other_folds_only(method: str) -> None:
    cfg = EnsembleConfig(members=["a", "b"], methods=[method], folds=2, stacking_c=1.0)
    blocks = fold_blocks()
    states = cross_fitted(method, blocks, cfg)
    # Flip fold 1's labels: its own weights stay identical (no combiner rating it saw them), the
    # other folds' move (fold 1 is among their fitting rows).
    y1 = blocks[1][1]
    flipped = cross_fitted(method, {**blocks, 1: (blocks[1][0], 1 - y1)}, cfg)
    assert flipped[1] == states[1]
    for k in (2, 3):
        assert flipped[k] != states[k], k
    P_rest = np.vstack([blocks[2][0], blocks[3][0]])
    y_rest = np.concatenate([blocks[2][1], blocks[3][1]])
    assert states[1] == fit_state(method, P_rest, y_rest, cfg)
    with pytest.raises(ConfigError, match="one fold, but each fold's ensemble is weighted on the other"):
        cross_fitted(method, {1: blocks[1]}, cfg)


def test_with_folds_the_weights_are_the_pooled_folds_and_validation_rows_are_held_out() -> None:
    a, b = noisy(3), noisy(4)
    members = [Fixed("a", a), Fixed("b", b)]
    cfg = EnsembleConfig(members=["a", "b"], methods=["weighted"], folds=2, stacking_c=1.0)
    blocks = fold_blocks()
    (ens,), metrics, on_folds = build(cfg, members, ROWS, "y", blocks)
    P = np.vstack([blk[0] for blk in blocks.values()])
    y = np.concatenate([blk[1] for blk in blocks.values()])
    assert ens.state == fit_state("weighted", P, y, cfg)  # every fold's rows, no validation row
    assert np.array_equal(ens.held_out[VALID_PART], combine("weighted", np.column_stack([a, b]), ens.state))
    assert set(on_folds["ens_weighted"]) == {1, 2, 3}
    assert metrics["ens_weighted"]["fitted_on"] == "folds [1, 2, 3]"
    assert set(metrics["ens_weighted"]["fold_roc_auc"]) == {"1", "2", "3"}
