"""The baseline stage: real LightGBM on the smoke data (shrunk settings), and CV on a synthetic frame."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from ontime.candidates import VALID_PART, load_candidate, validation_predictions
from ontime.candidates.lightgbm_model import LightGBMCandidate
from ontime.config import section
from ontime.config.baseline import BaselineConfig
from ontime.errors import ConfigError, DataError
from ontime.io import read_json
from ontime.spec import FeatureSpec, mask_optional, read_part
from ontime.training.baseline import cross_validate, fit_lightgbm, main, recency_weights
from tests.conftest import compose_params

# conf/ defaults with fewer, smaller trees so that the file runs in seconds.
BASELINE: dict[str, Any] = {
    "n_estimators": 60,
    "num_leaves": 15,
    "learning_rate": 0.1,
    "min_child_samples": 50,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_cat_to_onehot": 4,
    "cat_smooth": 10.0,
    "early_stopping_rounds": 20,
    "cv_folds": 0,
    "num_threads": 2,
    "refit": False,
    "half_life_days": None,
}
CFG = BaselineConfig(**BASELINE)
SEED = 42
FITTING_PARTS = ["train", "train_valid", "finetune"]  # lgbm_all's first fit


@pytest.fixture(scope="module")
def spec(data_run: Path) -> FeatureSpec:
    return FeatureSpec.load(data_run / "data/features/spec.json")


@pytest.fixture(scope="module")
def parts(data_run: Path, spec: FeatureSpec) -> dict[str, pl.DataFrame]:
    names = ("train", "train_valid", "finetune", "finetune_valid", "test")
    return {p: read_part(data_run / "data/split", p, spec) for p in names}


@pytest.fixture(scope="module")
def fitted(parts: dict[str, pl.DataFrame], spec: FeatureSpec) -> LightGBMCandidate:
    return fit_lightgbm(parts["train"], parts["train_valid"], spec, CFG, SEED, name="lgbm_train")


# ------------------------------------------------------------------------------ smoke data ---
def test_learns_on_smoke_data(fitted: LightGBMCandidate, parts: dict[str, pl.DataFrame]) -> None:
    valid = parts["train_valid"]
    proba = fitted.predict_proba(valid)
    assert proba.dtype == np.float64
    assert proba.shape == (valid.height,)
    assert ((proba > 0) & (proba < 1)).all()
    assert 1 <= fitted.best_iteration <= CFG.n_estimators
    assert roc_auc_score(valid.get_column("label").to_numpy(), proba) > 0.6


def test_save_load_round_trip(
    fitted: LightGBMCandidate, parts: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    fitted.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "candidate.json",
        "encoding.json",
        "model.txt",
    ]
    loaded = load_candidate(tmp_path / "m")
    assert isinstance(loaded, LightGBMCandidate)
    assert loaded.name == "lgbm_train"
    assert loaded.vocabularies == fitted.vocabularies
    assert loaded.best_iteration == fitted.best_iteration
    for part in ("train_valid", "test"):
        np.testing.assert_array_equal(loaded.predict_proba(parts[part]), fitted.predict_proba(parts[part]))


def test_vocabulary_fitted_on_training_rows_only(
    fitted: LightGBMCandidate, parts: dict[str, pl.DataFrame]
) -> None:
    train, test = parts["train"], parts["test"]
    seen = set(train.get_column("tailnum").drop_nulls().to_list())
    assert fitted.vocabularies["tailnum"] == sorted(seen)
    unseen = set(test.get_column("tailnum").drop_nulls().to_list()) - seen
    assert unseen, "the smoke test part should have tail numbers that train lacks"

    column = fitted.categorical.index("tailnum") + len(fitted.numeric)
    codes = fitted.encode(test)[:, column]
    is_unseen = test.get_column("tailnum").is_in(sorted(unseen)).fill_null(False).to_numpy()
    assert (codes[is_unseen] == 0).all()
    assert (codes[~is_unseen & test.get_column("tailnum").is_not_null().to_numpy()] > 0).all()

    # A category no training row has (here for every row) scores without error.
    novel = test.with_columns(pl.lit("ZZ-new").alias("carrier"), pl.lit(None, pl.String).alias("dest"))
    codes = fitted.encode(novel)
    assert (codes[:, len(fitted.numeric) + fitted.categorical.index("carrier")] == 0).all()
    assert (codes[:, len(fitted.numeric) + fitted.categorical.index("dest")] == 0).all()
    proba = fitted.predict_proba(novel)
    assert np.isfinite(proba).all()
    assert proba.shape == (test.height,)


def test_deterministic(fitted: LightGBMCandidate, parts: dict[str, pl.DataFrame], spec: FeatureSpec) -> None:
    again = fit_lightgbm(parts["train"], parts["train_valid"], spec, CFG, SEED, name="lgbm_train")
    assert again.booster.model_to_string() == fitted.booster.model_to_string()
    np.testing.assert_array_equal(again.predict_proba(parts["test"]), fitted.predict_proba(parts["test"]))


def test_main_writes_candidates_and_metrics(data_run: Path, tmp_path: Path) -> None:
    params = compose_params(["experiment=smoke"])
    params["baseline"] = BASELINE
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    out, metrics_path = tmp_path / "models/baseline", tmp_path / "metrics/baseline.json"

    main(
        str(params_path),
        str(data_run / "data/split"),
        str(data_run / "data/features/spec.json"),
        str(out),
        str(metrics_path),
    )

    metrics = read_json(metrics_path)
    assert set(metrics) == {"lgbm_train", "lgbm_all"}  # cv_folds: 0 turns CV off
    for name, parts in (("lgbm_train", ["train"]), ("lgbm_all", ["train", "train_valid", "finetune"])):
        assert set(metrics[name]) == {"valid_roc_auc", "best_iteration", "train_rows"}
        assert 0.5 < metrics[name]["valid_roc_auc"] <= 1
        assert read_json(out / name / "candidate.json")["trained_on"] == parts
        candidate = load_candidate(out / name)
        assert candidate.name == name
    assert metrics["lgbm_all"]["train_rows"] > metrics["lgbm_train"]["train_rows"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["baseline"]  # no temporary leftovers


def test_refit_uses_the_chosen_trees_on_every_row_and_keeps_honest_validation_predictions(
    data_run: Path, tmp_path: Path, parts: dict[str, pl.DataFrame], spec: FeatureSpec
) -> None:
    """baseline.refit: each candidate is fitted again with the trees early stopping chose, on its rows
    plus its validation days; lgbm_all, refit on the selection rows, answers for them with the
    predictions of the fit that never saw them (what evaluate, ensemble and select read)."""
    params = compose_params(["experiment=smoke"])
    params["baseline"] = {**BASELINE, "refit": True}
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    out, metrics_path = tmp_path / "models/baseline", tmp_path / "metrics/baseline.json"
    split, spec_path = data_run / "data/split", data_run / "data/features/spec.json"
    main(str(params_path), str(split), str(spec_path), str(out), str(metrics_path))

    metrics = read_json(metrics_path)
    every = {"lgbm_train": ["train", "train_valid"], "lgbm_all": [*FITTING_PARTS, VALID_PART]}
    for name, rows in every.items():
        info = read_json(out / name / "candidate.json")
        assert info["trained_on"] == rows
        assert info["refit"] is True
        assert info["best_iteration"] == metrics[name]["best_iteration"]
        refit = load_candidate(out / name)
        assert isinstance(refit, LightGBMCandidate)
        assert refit.booster.num_trees() == metrics[name]["best_iteration"]
        assert metrics[name]["refit_rows"] == sum(parts[p].height for p in rows)
    assert read_json(out / "lgbm_train/candidate.json")["held_out"] == []  # never saw finetune_valid

    # the held-out predictions are exactly the first fit's (fitted again here, deterministic)
    fitting = pl.concat(
        [mask_optional(parts[p], spec, seed=SEED, part=p) for p in FITTING_PARTS], how="vertical_relaxed"
    )
    first = fit_lightgbm(fitting, parts[VALID_PART], spec, CFG, SEED, name="lgbm_all")
    refit = load_candidate(out / "lgbm_all")
    valid = parts[VALID_PART]
    assert np.array_equal(validation_predictions(refit, valid, VALID_PART), first.predict_proba(valid))
    assert not np.allclose(refit.predict_proba(valid), first.predict_proba(valid))  # another model
    assert metrics["lgbm_all"]["valid_roc_auc"] == pytest.approx(
        roc_auc_score(valid.get_column(spec.target), first.predict_proba(valid)), abs=1e-6
    )
    with pytest.raises(DataError, match=r"held-out predictions cover .* re-run dvc repro"):
        validation_predictions(refit, valid.head(10), VALID_PART)


def test_recency_weights_halve_every_half_life(spec: FeatureSpec, parts: dict[str, pl.DataFrame]) -> None:
    assert spec.time_column is not None
    tc = spec.time_column
    newest = parts["train"].get_column(tc).max()
    rows = (
        parts["train"]
        .head(3)
        .with_columns(pl.Series(tc, [newest, newest - dt.timedelta(days=30), newest - dt.timedelta(days=90)]))
    )
    # ages are elapsed time: 90 wall-clock days back may cross a daylight-saving change (an hour)
    utc = dt.UTC
    ages = [
        (newest.astimezone(utc) - t.astimezone(utc)).total_seconds() / 86_400 for t in rows.get_column(tc)
    ]
    assert ages == pytest.approx([0, 30, 90], abs=0.05)
    assert recency_weights(rows, spec, 30.0) == pytest.approx([0.5 ** (a / 30) for a in ages], rel=1e-12)
    assert recency_weights(rows, spec, None) is None
    timeless = dataclasses.replace(spec, time_column=None)
    with pytest.raises(DataError, match=r"half_life_days .* time column"):
        recency_weights(rows, timeless, 30.0)


def test_main_on_one_month_with_cv_fails_cleanly(data_run: Path, tmp_path: Path) -> None:
    params = compose_params(["experiment=smoke"])
    params["baseline"] = {**BASELINE, "cv_folds": 2}
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    out, metrics_path = tmp_path / "models/baseline", tmp_path / "metrics.json"
    split_dir, spec_path = data_run / "data/split", data_run / "data/features/spec.json"

    with pytest.raises(DataError, match=r"baseline\.cv_folds=2 .* 1 month\(s\) \(2013-01\)"):
        main(str(params_path), str(split_dir), str(spec_path), str(out), str(metrics_path))
    assert not out.exists()
    assert not metrics_path.exists()


# ------------------------------------------------------------------------------------- CV ---
def synthetic(n: int = 4000, *, seed: int = 0) -> tuple[pl.DataFrame, FeatureSpec]:
    """Four months (Jan-Apr 2013, New York time) with a learnable label."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2013, 1, 1, tzinfo=dt.UTC)
    hours = np.sort(rng.integers(5, (31 + 28 + 31 + 30) * 24, n))
    x = rng.normal(size=n)
    group = rng.choice(["a", "b", "c"], n)
    logit = 1.5 * x + np.where(group == "a", 1.0, -0.5)
    df = pl.DataFrame(
        {
            "when": [start + dt.timedelta(hours=int(h)) for h in hours],
            "x": x,
            "group": group,
            "label": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8),
        }
    ).with_columns(pl.col("when").dt.convert_time_zone("America/New_York"))
    features = [
        {"name": "x", "kind": "numeric", "dtype": "Float64", "nullable": False},
        {"name": "group", "kind": "categorical", "dtype": "String", "nullable": False},
    ]
    spec = FeatureSpec(
        target="label", time_column="when", numeric=["x"], categorical=["group"], features=features
    )
    return df, spec


def test_cv_expanding_months_in_order() -> None:
    df, spec = synthetic()
    cfg = CFG.model_copy(update={"cv_folds": 3})
    # Shuffled rows: CV orders them by the time column itself.
    cv = cross_validate(df.sample(fraction=1.0, shuffle=True, seed=1), spec, cfg, SEED)

    folds = cv["folds"]
    assert [f["fold"] for f in folds] == [1, 2, 3]
    assert [f["valid_period"] for f in folds] == ["2013-01", "2013-02", "2013-03", "2013-04"][1:]
    assert [f["train_periods"] for f in folds] == [
        ["2013-01"],
        ["2013-01", "2013-02"],
        ["2013-01", "2013-02", "2013-03"],
    ]
    # Months are New York months: the first hours of 1 February UTC still count as January.
    local_month = df.get_column("when").dt.month()
    assert folds[0]["train_rows"] == (local_month == 1).sum()
    assert folds[0]["valid_rows"] == (local_month == 2).sum()
    assert all(f["roc_auc"] > 0.7 for f in folds)
    scores = np.array([f["roc_auc"] for f in folds])
    assert cv["roc_auc_mean"] == pytest.approx(scores.mean(), abs=1e-6)
    assert cv["roc_auc_std"] == pytest.approx(scores.std(), abs=1e-6)


def test_cv_fewer_folds_uses_the_latest_months() -> None:
    df, spec = synthetic()
    cv = cross_validate(df, spec, CFG.model_copy(update={"cv_folds": 2}), SEED)
    assert [f["valid_period"] for f in cv["folds"]] == ["2013-03", "2013-04"]
    assert cv["folds"][0]["train_periods"] == ["2013-01", "2013-02"]


def test_cv_without_time_column_uses_row_chunks() -> None:
    df, spec = synthetic()
    spec = FeatureSpec(spec.target, None, spec.numeric, spec.categorical, spec.features)
    cv = cross_validate(df.drop("when"), spec, CFG.model_copy(update={"cv_folds": 3}), SEED)
    assert [f["valid_period"] for f in cv["folds"]] == ["chunk-1", "chunk-2", "chunk-3"]
    assert [f["train_rows"] for f in cv["folds"]] == [1000, 2000, 3000]


def test_cv_too_few_months() -> None:
    df, spec = synthetic()
    with pytest.raises(DataError, match=r"baseline\.cv_folds=4 .* 4 month\(s\)"):
        cross_validate(df, spec, CFG.model_copy(update={"cv_folds": 4}), SEED)


# ---------------------------------------------------------------------------------- errors ---
def test_one_class_training_part(parts: dict[str, pl.DataFrame], spec: FeatureSpec) -> None:
    only_zeros = parts["train"].filter(pl.col("label") == 0)
    with pytest.raises(DataError, match=r"training rows \(train\): every row has label 0"):
        fit_lightgbm(only_zeros, parts["train_valid"], spec, CFG, SEED)


def test_empty_training_part(parts: dict[str, pl.DataFrame], spec: FeatureSpec) -> None:
    with pytest.raises(DataError, match=r"training rows \(train\): no rows"):
        fit_lightgbm(parts["train"].head(0), parts["train_valid"], spec, CFG, SEED)


def test_config_unknown_key() -> None:
    with pytest.raises(ConfigError, match=r"baseline\.n_trees: unknown key"):
        section({"baseline": {**BASELINE, "n_trees": 10}}, "baseline", BaselineConfig)


def test_config_out_of_range() -> None:
    with pytest.raises(ConfigError, match=r"baseline\.num_threads: .*greater than or equal to 1"):
        section({"baseline": {**BASELINE, "num_threads": 0}}, "baseline", BaselineConfig)
