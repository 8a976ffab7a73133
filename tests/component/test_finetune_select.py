"""Fine-tuning strategies, ensembles fitted on validation rows only, selection by validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import log_loss, roc_auc_score

from ontime.candidates import load_candidate, validation_predictions
from ontime.candidates.torch_model import TorchCandidate
from ontime.config.ensemble import EnsembleConfig
from ontime.config.finetune import FinetuneConfig
from ontime.config.select import SelectConfig
from ontime.errors import DataError
from ontime.evaluation.select import choose
from ontime.io import read_json
from ontime.models.roles import Role, parameter_roles
from ontime.spec import FeatureSpec, read_part
from ontime.training import ensemble, finetune
from ontime.training.loop import parameter_groups
from tests.component.test_train import TINY, run_train
from tests.conftest import write_params


@pytest.fixture(scope="module")
def trained(data_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    run_train(data_run, out, write_params(out / "params.yaml", [*TINY, "train.epochs=1", "train.refit=true"]))
    return out / "model"


def run_finetune(data_run: Path, base: Path, out: Path, strategy: str, *extra: str) -> dict:
    overrides = [*TINY, f"finetune.strategy={strategy}", "finetune.epochs=2", *extra]
    out.mkdir(parents=True, exist_ok=True)
    params = write_params(out / "params.yaml", overrides)
    finetune.main(
        str(params), str(base), str(data_run / "data/split"), str(data_run / "data/features/spec.json"),
        str(out / "model"), str(out / "finetune.json"), str(out / "ckpt"), str(out / "live"),
    )  # fmt: skip
    return load_file(str(out / "model/model.safetensors"))


def role_names(model_dir: Path, role: Role) -> set[str]:
    candidate = load_candidate(model_dir)
    assert isinstance(candidate, TorchCandidate)
    return set(parameter_roles(candidate.model).names[role])


def test_head_only_keeps_everything_else_bit_identical(data_run: Path, trained: Path, tmp_path: Path) -> None:
    before = load_file(str(trained / "model.safetensors"))
    after = run_finetune(data_run, trained, tmp_path, "head")
    changed = {k for k in before if not (before[k] == after[k]).all()}
    head = role_names(trained, "head")
    assert head, sorted(before)
    assert changed == head, sorted(changed ^ head)  # every head tensor learned, nothing else moved
    assert read_json(tmp_path / "finetune.json")["strategy"] == "head"


def test_refit_epochs_train_on_the_validation_rows_and_keep_honest_answers_for_them(
    data_run: Path, trained: Path, tmp_path: Path
) -> None:
    """finetune.refit_epochs: after early stopping, more epochs on the fine-tune rows plus
    finetune_valid; the candidate answers for finetune_valid with the model from before them."""
    plain = run_finetune(data_run, trained, tmp_path / "plain", "full", "finetune.refit_epochs=0")
    refit = run_finetune(data_run, trained, tmp_path / "refit", "full", "finetune.refit_epochs=1")
    assert any(not torch.equal(plain[k], refit[k]) for k in plain)  # one more epoch moved the weights
    info = read_json(tmp_path / "refit/model/candidate.json")
    # the trained model's rows (train.refit: train + train_valid), then the fine-tune rows
    assert read_json(trained / "candidate.json")["trained_on"] == ["train", "train_valid"]
    assert info["trained_on"] == ["train", "train_valid", "finetune", "finetune_valid"]
    assert info["held_out"] == ["finetune_valid"]
    assert read_json(tmp_path / "refit/finetune.json")["refit_epochs"] == 1
    spec = FeatureSpec.load(data_run / "data/features/spec.json")
    valid = read_part(data_run / "data/split", "finetune_valid", spec)
    before, after = load_candidate(tmp_path / "plain/model"), load_candidate(tmp_path / "refit/model")
    # the held-out answers are the plain run's model's (the same fine-tuning, deterministic)
    np.testing.assert_allclose(
        validation_predictions(after, valid, "finetune_valid"), before.predict_proba(valid)
    )
    assert not np.allclose(after.predict_proba(valid), before.predict_proba(valid))
    assert read_json(tmp_path / "plain/model/candidate.json")["held_out"] == []


def test_frozen_embeddings_keep_embeddings_identical(data_run: Path, trained: Path, tmp_path: Path) -> None:
    before = load_file(str(trained / "model.safetensors"))
    after = run_finetune(data_run, trained, tmp_path, "frozen_embeddings")
    learned = role_names(trained, "blocks") | role_names(trained, "head")
    assert role_names(trained, "embeddings")
    for key in before:
        same = bool((before[key] == after[key]).all())
        assert same == (key not in learned), key  # embeddings (and buffers) fixed, the rest learned


def test_full_finetuning_changes_the_model_and_keeps_preprocessing(
    data_run: Path, trained: Path, tmp_path: Path
) -> None:
    before = load_file(str(trained / "model.safetensors"))
    after = run_finetune(data_run, trained, tmp_path, "full")
    base, tuned = load_candidate(trained), load_candidate(tmp_path / "model")
    assert isinstance(base, TorchCandidate)
    assert isinstance(tuned, TorchCandidate)
    assert tuned.name == "finetuned"
    # every trainable tensor learned (and nothing else: buffers, if any, stay as they were)
    parameters = dict(base.model.named_parameters())
    assert before.keys() == after.keys() >= parameters.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(parameters), sorted(set(parameters) ^ changed)
    metrics = read_json(tmp_path / "finetune.json")
    assert metrics["trainable_parameters"] == sum(p.numel() for p in parameters.values())
    # the preprocessing is the trained model's, byte for byte: fine-tuning never refits it
    assert (tmp_path / "model/preprocessor.json").read_bytes() == (trained / "preprocessor.json").read_bytes()
    # the saved weights are the validated ones: their ROC AUC on finetune_valid is the one reported
    spec = FeatureSpec.load(data_run / "data/features/spec.json")
    valid = read_part(data_run / "data/split", "finetune_valid", spec)
    y_valid = valid.get_column(spec.target).to_numpy()
    assert roc_auc_score(y_valid, validation_predictions(tuned, valid, "finetune_valid")) == pytest.approx(
        metrics["valid_roc_auc"], abs=1e-5
    )
    # and they move in the expected direction from the weights they started from: a lower log loss
    # on the fine-tune rows they trained on, a higher ROC AUC on the window's validation days
    # (smoke data: about 0.60 -> 0.54 and 0.59 -> 0.69)
    window = read_part(data_run / "data/split", "finetune", spec)
    y_window = window.get_column(spec.target).to_numpy()
    base_loss = log_loss(y_window, base.predict_proba(window), labels=[0, 1])
    assert log_loss(y_window, tuned.predict_proba(window), labels=[0, 1]) < base_loss - 0.01
    assert metrics["valid_roc_auc"] > roc_auc_score(y_valid, base.predict_proba(valid)) + 0.01


def test_discriminative_learning_rates() -> None:
    from ontime.models.mlp import MLP

    model = MLP(n_num=3, cardinalities=[4], d_block=8, n_blocks=2, num_embedding="periodic")
    cfg = FinetuneConfig(
        strategy="discriminative",
        lr=1e-3,
        epochs=1,
        patience=1,
        warmup_epochs=0,
        layer_lr_decay=0.5,
        replay=0,
        refit_epochs=0,
    )
    scales = finetune.apply_strategy(model, cfg)
    groups = parameter_groups(model, weight_decay=0.0, lr_scale=scales)
    by_scale = {g["lr_scale"]: {id(p) for p in g["params"]} for g in groups}
    named = dict(model.named_parameters())
    assert id(named["head.weight"]) in by_scale[1.0]
    assert id(named["blocks.0.0.weight"]) in by_scale[0.5]
    assert id(named["cat_embeddings.0.weight"]) in by_scale[0.25]


@pytest.fixture(scope="module")
def members(data_run: Path, trained: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("members")
    from ontime.training import baseline

    params = write_params(out / "params.yaml", [*TINY])
    baseline.main(
        str(params),
        str(data_run / "data/split"),
        str(data_run / "data/features/spec.json"),
        str(out / "baseline"),
        str(out / "b.json"),
    )
    return [str(trained), str(out / "baseline/lgbm_train"), str(out / "baseline/lgbm_all")]


def run_ensemble(split: Path, spec: Path, members: list[str], out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    # select.folds=[]: weighted on the validation rows (the folds' path: tests/pipeline/test_folds.py)
    overrides = ["ensemble.members=[base,lgbm_train,lgbm_all]", "select.folds=[]"]
    params = write_params(out / "params.yaml", overrides)
    ensemble.main(str(params), str(split), str(spec), members, str(out / "ens"), str(out / "ens.json"))
    return read_json(out / "ens.json")


def test_ensemble_weights_never_see_test_rows(data_run: Path, members: list[str], tmp_path: Path) -> None:
    spec = data_run / "data/features/spec.json"
    with_test = run_ensemble(data_run / "data/split", spec, members, tmp_path / "a")
    # The same split without its test part: the stage still runs and fits the very same weights.
    no_test = tmp_path / "split"
    shutil.copytree(data_run / "data/split", no_test)
    (no_test / "test.parquet").unlink()
    without_test = run_ensemble(no_test, spec, members, tmp_path / "b")
    assert with_test == without_test
    weights = with_test["ens_weighted"]["weights"]
    assert len(weights) == 3
    assert abs(sum(weights) - 1) < 1e-9
    assert min(weights) >= 0
    ens = load_candidate(tmp_path / "a/ens/ens_weighted")
    import polars as pl

    valid = pl.read_parquet(data_run / "data/split/finetune_valid.parquet")
    P = np.column_stack([load_candidate(m).predict_proba(valid) for m in members])
    assert np.allclose(ens.predict_proba(valid), P @ np.asarray(weights))
    assert len(ens.held_out["finetune_valid"]) == valid.height  # honest validation predictions


@pytest.mark.parametrize("method", ["weighted", "stacking"])
def test_out_of_fold_predictions_never_see_their_own_labels(method: str) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    P = np.clip(np.column_stack([0.3 * y + rng.normal(0.35, 0.2, 500), rng.random(500)]), 0, 1)
    cfg = EnsembleConfig(members=["a", "b"], methods=[method], folds=5, stacking_c=1.0)
    oof = ensemble.out_of_fold(method, P, y, cfg)
    assert oof.shape == y.shape
    # Flip the labels of the first time-ordered block (rows 0-99 of 500 in 5 folds): its own
    # out-of-fold predictions stay bit-identical, as no combiner that predicts it saw them ...
    flipped = y.copy()
    flipped[:100] = 1 - flipped[:100]
    again = ensemble.out_of_fold(method, P, flipped, cfg)
    assert np.array_equal(again[:100], oof[:100])
    # ... while every other block's predictions move: their combiners were fitted on those labels
    for k in range(1, 5):
        rows = slice(100 * k, 100 * (k + 1))
        assert np.abs(again[rows] - oof[rows]).max() > 1e-4, k
    # whereas in-sample predictions of the flipped rows do depend on their labels
    in_sample = ensemble.combine(method, P, ensemble.fit_state(method, P, y, cfg))
    in_flipped = ensemble.combine(method, P, ensemble.fit_state(method, P, flipped, cfg))
    assert np.abs(in_sample[:100] - in_flipped[:100]).max() > 1e-4


def test_select_picks_by_validation_not_test() -> None:
    metrics = {
        "a": {"valid": {"roc_auc": 0.70, "log_loss": 0.50}, "test": {"roc_auc": 0.90}},
        "b": {"valid": {"roc_auc": 0.75, "log_loss": 0.55}, "test": {"roc_auc": 0.60}},
    }
    assert choose(metrics, SelectConfig(metric="roc_auc", candidates=["a", "b"])) == "b"
    assert choose(metrics, SelectConfig(metric="log_loss", candidates=["a", "b"])) == "a"  # lower is better
    with pytest.raises(DataError, match=r"select.candidates \['c'\] have no evaluation; have \['a', 'b'\]"):
        choose(metrics, SelectConfig(metric="roc_auc", candidates=["a", "c"]))
