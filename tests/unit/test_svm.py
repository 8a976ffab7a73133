"""The SVM candidate (linear + RBF kernel map, Platt-calibrated) on small synthetic frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from ontime.candidates import VALID_PART, load_candidate, validation_predictions
from ontime.candidates.svm_model import SVMCandidate
from ontime.config import section
from ontime.config.svm import SVMConfig
from ontime.errors import ConfigError
from ontime.io import read_json
from ontime.models.preprocess import design_matrix
from ontime.training.svm import fit_svm, median_squared_distance, train_svm
from tests.conftest import compose_params
from tests.unit.test_linear import FITTING, PRE, SEED, SPEC, frame, unseen

CFG = SVMConfig(n_components=40, gamma_scale=0.5, alpha=1e-4, epochs=5, calibration_folds=3, refit=True)


@pytest.fixture(scope="module")
def parts() -> dict[str, pl.DataFrame]:
    sizes = (1500, 300, 600, 300)
    return {p: frame(n, seed) for seed, (p, n) in enumerate(zip((*FITTING, VALID_PART), sizes, strict=True))}


@pytest.fixture(scope="module")
def rows(parts: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return pl.concat([parts[p] for p in FITTING], how="vertical_relaxed")


def test_the_candidate_scores_as_scikit_learns_calibrated_model(rows: pl.DataFrame, tmp_path: Path) -> None:
    candidate, model, _ = fit_svm(rows, SPEC, PRE, CFG, SEED)
    scored = unseen(frame(400, 99))  # unknown categories and missing numerics too
    x = design_matrix(candidate.preprocessor, scored)
    inputs = sp.hstack([x, sp.csr_matrix(candidate.kernel_features(x))], format="csr")
    expected = model.predict_proba(inputs)[:, 1]
    np.testing.assert_allclose(candidate.predict_proba(scored), expected, rtol=0, atol=1e-9)
    # the kernel features are scikit-learn's Nystroem map of the same rows
    from sklearn.kernel_approximation import Nystroem

    ny = Nystroem(gamma=candidate.gamma, n_components=CFG.n_components, random_state=SEED).fit(
        design_matrix(candidate.preprocessor, rows)
    )
    np.testing.assert_allclose(candidate.kernel_features(x), ny.transform(x), rtol=0, atol=1e-9)
    candidate.save(tmp_path / "svm")
    loaded = load_candidate(tmp_path / "svm")
    assert isinstance(loaded, SVMCandidate)
    assert np.array_equal(loaded.predict_proba(scored), candidate.predict_proba(scored))
    assert not list((tmp_path / "svm").glob("*.pkl"))


def test_it_learns_the_signal_and_a_non_linear_one() -> None:
    rng = np.random.default_rng(1)
    df = frame(2400, 5)
    # a ring: positive far from the origin in (noise1, noise2), which no linear model separates
    radius = np.hypot(df.get_column("noise1").to_numpy(), df.get_column("noise2").to_numpy())
    y = (radius > 1.2).astype(np.int64) ^ (rng.random(df.height) < 0.05)
    df = df.with_columns(pl.Series("label", y.astype(np.int64)))
    fit_rows, scored = df[:1800], df[1800:]
    candidate, _, _ = fit_svm(fit_rows, SPEC, PRE, CFG.model_copy(update={"gamma_scale": 2.0}), SEED)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(scored.get_column("label"), candidate.predict_proba(scored)) > 0.8


def test_the_sigmoid_is_fitted_on_the_fitting_rows_only(parts: dict[str, pl.DataFrame]) -> None:
    model, metrics = train_svm(parts, SPEC, PRE, CFG.model_copy(update={"refit": False}), SEED)
    assert model.trained_on == list(FITTING)
    assert metrics["train_rows"] == sum(parts[p].height for p in FITTING)
    # flipping every validation label changes nothing fitted: validation rows never reach the fit
    flipped = {**parts, VALID_PART: parts[VALID_PART].with_columns(1 - pl.col("label"))}
    again, _ = train_svm(flipped, SPEC, PRE, CFG.model_copy(update={"refit": False}), SEED)
    assert again.sigmoid == model.sigmoid
    assert np.array_equal(again.coef, model.coef)
    a, _ = model.sigmoid
    assert a < 0, "Platt's a: a higher decision value must mean a higher probability"


def test_the_refit_keeps_the_first_fits_held_out_predictions(
    parts: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    first, _ = train_svm(parts, SPEC, PRE, CFG.model_copy(update={"refit": False}), SEED)
    refit, metrics = train_svm(parts, SPEC, PRE, CFG, SEED)
    assert refit.refit
    assert refit.trained_on == [*FITTING, VALID_PART]
    assert metrics["refit_rows"] == sum(df.height for df in parts.values())
    valid = parts[VALID_PART]
    np.testing.assert_array_equal(
        validation_predictions(refit, valid, VALID_PART), first.predict_proba(valid)
    )
    refit.save(tmp_path / "svm")
    info = read_json(tmp_path / "svm/candidate.json")
    assert info["kind"] == "svm"
    assert info["held_out"] == [VALID_PART]
    assert info["trained_on"] == [*FITTING, VALID_PART]
    reloaded = load_candidate(tmp_path / "svm")
    np.testing.assert_array_equal(
        validation_predictions(reloaded, valid, VALID_PART), first.predict_proba(valid)
    )


def test_fitting_is_deterministic(rows: pl.DataFrame) -> None:
    a, _, _ = fit_svm(rows, SPEC, PRE, CFG, SEED)
    b, _, _ = fit_svm(rows, SPEC, PRE, CFG, SEED)
    assert np.array_equal(a.coef, b.coef)
    assert a.sigmoid == b.sigmoid


def test_gamma_follows_the_median_distance(rows: pl.DataFrame) -> None:
    candidate, _, _ = fit_svm(rows, SPEC, PRE, CFG, SEED)
    x = design_matrix(candidate.preprocessor, rows)
    assert candidate.gamma == pytest.approx(CFG.gamma_scale / median_squared_distance(x, SEED))


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("n_components", 0, "n_components"),
        ("calibration_folds", 1, "calibration_folds"),
        ("alpha", 0, "alpha"),
    ],
)
def test_bad_config_names_the_key(key: str, value: object, says: str) -> None:
    params = compose_params()
    params["svm"][key] = value
    with pytest.raises(ConfigError, match=says):
        section(params, "svm", SVMConfig, source="params.yaml")
