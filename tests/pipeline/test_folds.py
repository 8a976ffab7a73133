"""The folds in the smoke pipeline: before the test window, fitted as the final fit is, and read by select.

The smoke graph ran ``fold@1`` and ``fold@2`` (``select.folds``); the ensemble stage weighted the
members on their fold predictions, and select chose from them. The equality test refits every
member with the function the folds call (``fit_candidates``) on the split stage's own windows: its
test predictions must be the evaluate stage's, candidate by candidate, so a fold measures exactly
what the pipeline ships. The ensembles' weights are recomputed from the fold files: each fold's
from the other folds only, the shipped ones from all of them.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from ontime.candidates.ensemble_model import combine
from ontime.config import load_params, section, seed
from ontime.config.ensemble import EnsembleConfig
from ontime.config.select import SelectConfig
from ontime.config.split import SplitConfig
from ontime.config.train import TrainConfig
from ontime.data.split import split
from ontime.io import read_json
from ontime.spec import FeatureSpec
from ontime.training.ensemble import cross_fitted, fit_state, read_fold_blocks
from ontime.training.folds import fit_candidates, fold_windows
from ontime.training.loop import setup_runtime
from tests.conftest import SmokeRepo


def _day(value: object) -> dt.date:
    assert isinstance(value, dt.datetime | dt.date), value
    return value.date() if isinstance(value, dt.datetime) else value


def test_each_fold_rated_rows_before_the_test_window_that_no_fit_saw(smoke_repo: SmokeRepo) -> None:
    root = smoke_repo.origin
    params = load_params(root / "params.yaml")
    cfg = section(params, "select", SelectConfig, source="params.yaml")
    split_cfg = section(params, "split", SplitConfig, source="params.yaml")
    spec = read_json(root / "data/features/spec.json")
    time_column = spec["time_column"]
    candidates = {"base", "finetuned", "lgbm_train", "lgbm_all", "linear", "svm"}  # the members
    assert cfg.folds == [1, 2]
    for k in cfg.folds:
        folder = root / "data/folds" / str(k)
        frame = pl.read_parquet(folder / "predictions.parquet")
        info = read_json(folder / "fold.json")
        assert set(frame.columns) == {time_column, spec["target"], *candidates}  # no ensemble: fitted after
        assert info["rows"]["test"] == frame.height > 0
        valid = pl.read_parquet(folder / "valid_predictions.parquet")
        assert valid.height == info["rows"]["finetune_valid"]
        windows = fold_windows(split_cfg.windows, k, cfg.fold_days)
        times = frame.get_column(time_column)
        assert windows["test"].start <= _day(times.min())
        assert _day(times.max()) < windows["test"].end
        assert _day(times.max()) < split_cfg.windows["test"].start, "a fold rated test-window rows"
        # every fitting and validation window of the fold ends before its rated rows start
        assert all(w.end <= windows["test"].start for name, w in windows.items() if name != "test")
        for name in candidates:
            p = frame.get_column(name).to_numpy()
            assert np.all((p >= 0) & (p <= 1)), name
            assert np.unique(p).size > 1, name
    card = read_json(root / "models/champion/model_card.json")
    assert card["selection"]["by"] == "folds"
    assert [f["fold"] for f in card["selection"]["folds"]] == cfg.folds
    assert card["champion"] == card["selection"]["champion"] in cfg.candidates
    means = {r["candidate"]: r["mean"] for r in card["selection"]["table"]}
    assert set(means) == set(cfg.candidates)
    assert "## How it was chosen" in (root / "models/champion/MODEL_CARD.md").read_text()


def test_a_fold_fits_every_candidate_as_its_stage_does(smoke_repo: SmokeRepo) -> None:
    root = smoke_repo.origin
    params = load_params(root / "params.yaml")
    spec_dict = read_json(root / "data/features/spec.json")
    spec = FeatureSpec.load(root / "data/features/spec.json")
    features = pl.read_parquet(root / "data/features/features.parquet")
    split_cfg = section(params, "split", SplitConfig, source="params.yaml")
    parts = split(features, spec_dict, split_cfg, seed(params))
    for name, df in parts.items():  # the split stage's parts, row for row
        assert df.equals(pl.read_parquet(root / "data/split" / f"{name}.parquet")), name
    train_cfg = section(params, "train", TrainConfig, source="params.yaml")
    fitted = fit_candidates(
        parts, params, spec, setup_runtime(train_cfg.device, train_cfg.threads), source="params.yaml"
    )
    evaluated = pl.read_parquet(root / "data/predictions/test.parquet")
    assert set(fitted.models) <= set(evaluated.columns)
    for name, model in fitted.models.items():
        np.testing.assert_allclose(
            model.predict_proba(parts["test"]), evaluated.get_column(name).to_numpy(), rtol=0, atol=1e-5,
            err_msg=f"{name}: the fold's fit differs from its stage's",
        )  # fmt: skip
    assert not {"ens_weighted", "ens_stacking"} & set(fitted.models)  # fitted across folds, not in one


def test_the_ensembles_are_weighted_on_the_folds_each_folds_on_the_others(smoke_repo: SmokeRepo) -> None:
    root = smoke_repo.origin
    params = load_params(root / "params.yaml")
    cfg = section(params, "ensemble", EnsembleConfig, source="params.yaml")
    folds = section(params, "select", SelectConfig, source="params.yaml").folds
    blocks = read_fold_blocks(root / "data/folds", folds, cfg.members, "label")
    shipped = pl.read_parquet(root / "models/ensemble/folds.parquet")
    assert shipped.get_column("fold").to_list() == [k for k in folds for _ in range(len(blocks[k][1]))]
    for method in cfg.methods:
        name = f"ens_{method}"
        combiner = read_json(root / "models/ensemble" / name / "combiner.json")
        P, y = np.vstack([b[0] for b in blocks.values()]), np.concatenate([b[1] for b in blocks.values()])
        pooled = fit_state(method, P, y, cfg)
        for key, value in pooled.items():  # the shipped weights: every fold's rows
            np.testing.assert_allclose(combiner[key], value, rtol=1e-9, err_msg=f"{name} {key}")
        for k in folds:
            # fold k's ensemble: weights from the other folds; changing fold k's own labels changes nothing
            others = {j: b for j, b in blocks.items() if j != k}
            state = fit_state(method, np.vstack([b[0] for b in others.values()]),
                              np.concatenate([b[1] for b in others.values()]), cfg)  # fmt: skip
            rows = shipped.filter(pl.col("fold") == k).get_column(name).to_numpy()
            np.testing.assert_allclose(rows, combine(method, blocks[k][0], state), rtol=0, atol=1e-12)
            flipped = {**blocks, k: (blocks[k][0], 1 - blocks[k][1])}
            again = cross_fitted(method, flipped, cfg)[k]
            assert again == cross_fitted(method, blocks, cfg)[k], f"{name}: fold {k}'s weights saw its rows"
