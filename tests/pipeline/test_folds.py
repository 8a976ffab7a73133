"""The folds in the smoke pipeline: before the test window, fitted as the final fit is, and read by select.

The smoke graph ran ``fold@1`` and ``fold@2`` (``select.folds``); select chose from them. The
equality test refits every candidate with the function the folds call (``fit_candidates``) on the
split stage's own windows: its test predictions must be the evaluate stage's, candidate by
candidate, so a fold measures exactly what the pipeline ships.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from ontime.candidates import VALID_PART
from ontime.config import load_params, section, seed
from ontime.config.select import SelectConfig
from ontime.config.split import SplitConfig
from ontime.config.train import TrainConfig
from ontime.data.split import split
from ontime.io import read_json
from ontime.spec import FeatureSpec
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
    candidates = {
        "base",
        "finetuned",
        "lgbm_train",
        "lgbm_all",
        "linear",
        "svm",
        "ens_weighted",
        "ens_stacking",
    }
    assert cfg.folds == [1, 2]
    for k in cfg.folds:
        folder = root / "data/folds" / str(k)
        frame = pl.read_parquet(folder / "predictions.parquet")
        info = read_json(folder / "fold.json")
        assert candidates <= set(frame.columns)
        assert info["rows"]["test"] == frame.height > 0
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
    # The ensembles' weights were fitted on the validation rows, out of fold, never the rated rows.
    time_column = spec_dict["time_column"]
    valid_end = parts[VALID_PART].get_column(time_column).max()
    assert valid_end < parts["test"].get_column(time_column).min()  # type: ignore[operator]
    for name in ("ens_weighted", "ens_stacking"):
        held = fitted.models[name].held_out[VALID_PART]  # type: ignore[attr-defined]
        assert len(held) == parts[VALID_PART].height
