"""The linear candidate: a logistic regression on the preprocessing, on small synthetic frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml

from ontime.candidates import VALID_PART, load_candidate, validation_predictions
from ontime.candidates.linear_model import LinearCandidate
from ontime.config import section
from ontime.config.linear import LinearConfig
from ontime.config.preprocess import PreprocessConfig
from ontime.errors import ConfigError, DataError
from ontime.evaluation import model_card
from ontime.io import read_json, write_json
from ontime.spec import FeatureSpec, binary_labels, mask_optional
from ontime.training.linear import (
    FITTING,
    design_matrix,
    fit_linear,
    fit_logistic,
    fit_preprocessor,
    main,
    to_candidate,
    train_linear,
)

SEED = 7
PARTS = (*FITTING, VALID_PART)
NUMERIC = ["x1", "x2", "noise1", "noise2", "noise3"]
CATEGORICAL = ["color", "plane"]
SPEC = FeatureSpec(
    target="label",
    time_column=None,
    numeric=NUMERIC,
    categorical=CATEGORICAL,
    features=[{"name": c, "kind": "numeric"} for c in NUMERIC]
    + [{"name": c, "kind": "categorical"} for c in CATEGORICAL],
    optional={"weather": ["x2"]},
    mask_rate=0.1,
)
PRE = PreprocessConfig(scaling="zscore", min_frequency=2, n_quantiles=100)
L2 = LinearConfig(penalty="l2", C=1.0, max_iter=200, tol=1e-6, refit=True)


def frame(n: int, seed: int) -> pl.DataFrame:
    """Two informative numerics (x2 sometimes null), three noise columns, a colour that matters,
    a high-cardinality id with nulls and rare values; label ~ Bernoulli(sigmoid(signal))."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    colors = np.array(["red", "green", "blue"])[rng.integers(0, 3, n)]
    planes = np.array([f"N{i:03d}" for i in rng.integers(0, 60, n)], dtype=object)
    planes[rng.random(n) < 0.05] = None
    logit = 1.2 * x1 - 0.8 * x2 + np.where(colors == "red", 1.0, 0.0) - 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pl.DataFrame(
        {
            "x1": x1,
            "x2": pl.Series(x2).set(pl.Series(rng.random(n) < 0.1), None),
            "noise1": rng.normal(size=n),
            "noise2": rng.normal(size=n),
            "noise3": rng.integers(0, 5, n),
            "color": colors,
            "plane": pl.Series(planes, dtype=pl.String),
            "label": y,
        }
    )


@pytest.fixture(scope="module")
def parts() -> dict[str, pl.DataFrame]:
    return {p: frame(n, seed) for seed, (p, n) in enumerate(zip(PARTS, (1500, 300, 600, 300), strict=True))}


@pytest.fixture(scope="module")
def rows(parts: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return pl.concat([parts[p] for p in FITTING], how="vertical_relaxed")


def unseen(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with categories never seen in fitting and a column of missing numerics."""
    return df.with_columns(
        pl.when(pl.int_range(pl.len()) % 3 == 0).then(pl.lit("purple")).otherwise("color").alias("color"),
        pl.when(pl.int_range(pl.len()) % 4 == 0).then(pl.lit("ZZZ")).otherwise("plane").alias("plane"),
        pl.when(pl.int_range(pl.len()) % 5 == 0).then(None).otherwise("x1").alias("x1"),
    )


# ---------------------------------------------------------------------------------- scoring ---
def test_predictions_equal_sklearns_on_the_same_design_matrix(
    rows: pl.DataFrame, parts: dict[str, pl.DataFrame]
) -> None:
    pre = fit_preprocessor(PRE, SPEC, rows, "rows")
    model = fit_logistic(design_matrix(pre, rows), binary_labels(rows, "label", "rows"), L2, SEED)
    cand = to_candidate(pre, model, L2, name="linear", trained_on=FITTING)
    scored = unseen(parts[VALID_PART])
    x = design_matrix(pre, scored)
    assert x.shape == (scored.height, pre.n_num_features + sum(pre.cardinalities))
    assert x.shape[1] == cand.n_coefficients
    p = cand.predict_proba(scored)
    assert p.dtype == np.float64
    assert p.shape == (scored.height,)
    np.testing.assert_allclose(p, model.predict_proba(x)[:, 1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(cand.decision_function(scored), model.decision_function(x), rtol=0, atol=1e-9)
    # the inputs are the preprocessor's: x2 (missing in fitting) has an indicator; x1 does not
    assert pre.num_feature_names == [*NUMERIC, "x2__missing"]
    with pytest.raises(DataError, match=r"lacks required columns: \['plane'\]"):
        cand.predict_proba(scored.drop("plane"))


def test_save_load_round_trip_is_exact_and_pickle_free(
    tmp_path: Path, rows: pl.DataFrame, parts: dict[str, pl.DataFrame]
) -> None:
    cand = fit_linear(rows, SPEC, PRE, L2, SEED)
    cand.held_out = {VALID_PART: np.linspace(0.1, 0.9, parts[VALID_PART].height)}
    cand.save(tmp_path / "linear")
    assert sorted(p.name for p in (tmp_path / "linear").iterdir()) == [
        "candidate.json",
        f"held_out_{VALID_PART}.parquet",
        "linear.json",
    ]
    loaded = load_candidate(tmp_path / "linear")
    assert isinstance(loaded, LinearCandidate)
    scored = unseen(parts[VALID_PART])
    assert np.array_equal(loaded.predict_proba(scored), cand.predict_proba(scored))
    assert np.array_equal(loaded.held_out[VALID_PART], cand.held_out[VALID_PART])
    info = read_json(tmp_path / "linear/candidate.json")
    assert info == {
        "kind": "linear",
        "name": "linear",
        "trained_on": list(FITTING),
        "refit": False,
        "held_out": [VALID_PART],
        "C": 1.0,
        "penalty": "l2",
        "nonzero_coefficients": cand.nonzero_coefficients,
    }
    (tmp_path / "linear/linear.json").write_text('{"format": "something else"}')
    with pytest.raises(DataError, match=r"expected format 'ontime\.LinearCandidate'"):
        LinearCandidate.load(tmp_path / "linear")


def test_l1_gives_exact_zeros_where_l2_does_not(rows: pl.DataFrame) -> None:
    l2 = fit_linear(rows, SPEC, PRE, L2, SEED)
    l1 = fit_linear(rows, SPEC, PRE, L2.model_copy(update={"penalty": "l1", "C": 0.01}), SEED)
    # L2: every weight with a fitting row behind it is nonzero; the one without is colour's unknown
    # slot (no null or rare colour was fitted), which no gradient ever moves
    assert np.all(l2.coef_numeric != 0)
    assert np.all(l2.coef_categorical["plane"] != 0)
    assert l2.coef_categorical["color"][0] == 0
    assert np.all(l2.coef_categorical["color"][1:] != 0)
    assert l2.nonzero_coefficients == l2.n_coefficients - 1
    assert 0 < l1.nonzero_coefficients < l1.n_coefficients
    assert l1.coef_numeric[NUMERIC.index("x1")] != 0
    assert np.any(l1.coef_numeric == 0)
    assert np.count_nonzero(l1.coef_categorical["plane"]) < len(l1.coef_categorical["plane"])


def test_fits_are_deterministic(rows: pl.DataFrame, parts: dict[str, pl.DataFrame]) -> None:
    a, b = (fit_linear(rows, SPEC, PRE, L2, SEED) for _ in range(2))
    assert np.array_equal(a.predict_proba(parts[VALID_PART]), b.predict_proba(parts[VALID_PART]))


# ------------------------------------------------------------------------------ refit + main ---
def test_refit_keeps_the_first_fits_held_out_predictions(parts: dict[str, pl.DataFrame]) -> None:
    refit, metrics = train_linear(parts, SPEC, PRE, L2, SEED)
    masked = {p: mask_optional(parts[p], SPEC, seed=SEED, part=p) for p in PARTS}
    first = fit_linear(pl.concat([masked[p] for p in FITTING]), SPEC, PRE, L2, SEED)
    everything = fit_linear(pl.concat([masked[p] for p in PARTS]), SPEC, PRE, L2, SEED, trained_on=PARTS)
    valid = parts[VALID_PART]
    assert refit.trained_on == list(PARTS)
    assert refit.refit
    assert np.array_equal(validation_predictions(refit, valid, VALID_PART), first.predict_proba(valid))
    assert np.array_equal(refit.predict_proba(valid), everything.predict_proba(valid))  # the saved model
    assert not np.allclose(refit.predict_proba(valid), first.predict_proba(valid))
    assert metrics["train_rows"] == sum(parts[p].height for p in FITTING)
    assert metrics["refit_rows"] == sum(parts[p].height for p in PARTS)

    plain, metrics = train_linear(parts, SPEC, PRE, L2.model_copy(update={"refit": False}), SEED)
    assert plain.trained_on == list(FITTING)
    assert not plain.refit
    assert plain.held_out == {}
    assert np.array_equal(plain.predict_proba(valid), first.predict_proba(valid))
    assert "refit_rows" not in metrics


def write_inputs(root: Path, parts: dict[str, pl.DataFrame], linear: dict[str, Any]) -> list[str]:
    (root / "split").mkdir(parents=True)
    for name, df in parts.items():
        df.write_parquet(root / "split" / f"{name}.parquet")
    write_json(
        root / "spec.json",
        {
            "target": SPEC.target,
            "time_column": None,
            "features": SPEC.features,
            "optional": SPEC.optional,
            "mask_rate": SPEC.mask_rate,
        },
    )
    params = {"seed": SEED, "preprocess": PRE.model_dump(), "linear": linear}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return [str(root / "params.yaml"), str(root / "split"), str(root / "spec.json")]


def test_main_writes_the_refit_candidate_and_metrics(tmp_path: Path, parts: dict[str, pl.DataFrame]) -> None:
    inputs = write_inputs(tmp_path, parts, L2.model_dump())
    out, metrics_path = tmp_path / "models/linear", tmp_path / "metrics/linear.json"
    main(*inputs, str(out), str(metrics_path))
    info = read_json(out / "candidate.json")
    assert info["trained_on"] == list(PARTS)
    assert info["refit"]
    assert info["held_out"] == [VALID_PART]
    metrics = read_json(metrics_path)
    assert {"valid_roc_auc", "train_rows", "refit_rows", "nonzero_coefficients"} <= set(metrics)
    assert metrics["valid_roc_auc"] > 0.75
    model = model_card.describe_model(out)
    assert model["type"] == "logistic regression (L2, C=1.0)"
    assert model["held_out"] == [VALID_PART]
    text = model_card._model_section(model, VALID_PART)
    assert f"{info['nonzero_coefficients']} nonzero weights" in text
    assert "`train`, `train_valid`, `finetune`, `finetune_valid`" in text


# ------------------------------------------------------------------------------------ errors ---
@pytest.mark.parametrize(
    ("part", "change", "message"),
    [
        (VALID_PART, pl.lit(0), rf"validation rows \({VALID_PART}\): every row has label 0"),
        (VALID_PART, None, rf"validation rows \({VALID_PART}\): no rows"),
    ],
)
def test_a_bad_validation_part_is_named(
    parts: dict[str, pl.DataFrame], part: str, change: pl.Expr | None, message: str
) -> None:
    bad = parts[part].with_columns(change.alias("label")) if change is not None else parts[part].head(0)
    with pytest.raises(DataError, match=message):
        train_linear({**parts, part: bad}, SPEC, PRE, L2, SEED)


def test_one_class_fitting_rows_are_named(parts: dict[str, pl.DataFrame]) -> None:
    ones = {p: df.with_columns(pl.lit(1).alias("label")) for p, df in parts.items()}
    with pytest.raises(
        DataError, match=r"training rows \(train\+train_valid\+finetune\): every row has label 1"
    ):
        train_linear({**ones, VALID_PART: parts[VALID_PART]}, SPEC, PRE, L2, SEED)


def test_a_one_class_part_in_main_fails_before_writing(
    tmp_path: Path, parts: dict[str, pl.DataFrame]
) -> None:
    bad = {**parts, VALID_PART: parts[VALID_PART].with_columns(pl.lit(1).alias("label"))}
    inputs = write_inputs(tmp_path, bad, L2.model_dump())
    out, metrics_path = tmp_path / "models/linear", tmp_path / "linear.json"
    with pytest.raises(DataError, match=VALID_PART):
        main(*inputs, str(out), str(metrics_path))
    assert not out.exists()
    assert not metrics_path.exists()


def test_config_rejects_unknown_penalties_and_nonpositive_c() -> None:
    good = L2.model_dump()
    for bad, key in (({**good, "penalty": "elasticnet"}, "linear.penalty"), ({**good, "C": 0}, "linear.C")):
        with pytest.raises(ConfigError, match=key):
            section({"linear": bad}, "linear", LinearConfig)
