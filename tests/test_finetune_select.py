"""Fine-tuning strategies, ensembles fitted on validation rows only, selection by validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from ontime.candidates import load_candidate
from ontime.config import EnsembleConfig, FinetuneConfig, SelectConfig
from ontime.evaluation.select import choose
from ontime.io import read_json
from ontime.training import ensemble, finetune
from ontime.training.finetune import EMBEDDINGS, HEAD
from ontime.training.loop import parameter_groups
from tests.conftest import write_params
from tests.test_train import TINY, run_train


@pytest.fixture(scope="module")
def trained(data_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    run_train(data_run, out, write_params(out / "params.yaml", [*TINY, "train.epochs=1"]))
    return out / "model"


def run_finetune(data_run: Path, base: Path, out: Path, strategy: str) -> dict:
    params = write_params(out / "params.yaml", [*TINY, f"finetune.strategy={strategy}", "finetune.epochs=2"])
    finetune.main(
        str(params), str(base), str(data_run / "data/split"), str(data_run / "data/features/spec.json"),
        str(out / "model"), str(out / "finetune.json"), str(out / "ckpt"), str(out / "live"),
    )  # fmt: skip
    return load_file(str(out / "model/model.safetensors"))


def test_head_only_keeps_everything_else_bit_identical(data_run: Path, trained: Path, tmp_path: Path) -> None:
    before = load_file(str(trained / "model.safetensors"))
    after = run_finetune(data_run, trained, tmp_path, "head")
    changed = {k for k in before if not (before[k] == after[k]).all()}
    assert changed, "the head did not learn"
    assert all(k.startswith(HEAD) for k in changed), changed
    assert read_json(tmp_path / "finetune.json")["strategy"] == "head"


def test_frozen_embeddings_keep_embeddings_identical(data_run: Path, trained: Path, tmp_path: Path) -> None:
    before = load_file(str(trained / "model.safetensors"))
    after = run_finetune(data_run, trained, tmp_path, "frozen_embeddings")
    for key in before:
        same = bool((before[key] == after[key]).all())
        assert same == key.startswith(EMBEDDINGS), key


def test_full_finetuning_changes_the_model_and_keeps_preprocessing(
    data_run: Path, trained: Path, tmp_path: Path
) -> None:
    before = load_file(str(trained / "model.safetensors"))
    after = run_finetune(data_run, trained, tmp_path, "full")
    assert all(not (before[k] == after[k]).all() for k in before if k.startswith("blocks."))
    assert (tmp_path / "model/preprocessor.json").read_text() == (trained / "preprocessor.json").read_text()
    assert load_candidate(tmp_path / "model").name == "finetuned"


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
    params = write_params(out / "params.yaml", ["ensemble.members=[base,lgbm_train,lgbm_all]"])
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
    assert len(ens.oof["finetune_valid"]) == valid.height  # honest validation predictions


def test_out_of_fold_predictions_differ_from_in_sample() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    P = np.clip(np.column_stack([0.3 * y + rng.normal(0.35, 0.2, 500), rng.random(500)]), 0, 1)
    cfg = EnsembleConfig(members=["a", "b"], methods=["stacking"], folds=5, stacking_c=1.0)
    oof = ensemble.out_of_fold("stacking", P, y, cfg)
    in_sample = ensemble.combine("stacking", P, ensemble.fit_state("stacking", P, y, cfg))
    assert oof.shape == y.shape
    assert not np.allclose(oof, in_sample)


def test_select_picks_by_validation_not_test() -> None:
    metrics = {
        "a": {"valid": {"roc_auc": 0.70, "log_loss": 0.50}, "test": {"roc_auc": 0.90}},
        "b": {"valid": {"roc_auc": 0.75, "log_loss": 0.55}, "test": {"roc_auc": 0.60}},
    }
    assert choose(metrics, SelectConfig(metric="roc_auc", candidates=["a", "b"])) == "b"
    assert choose(metrics, SelectConfig(metric="log_loss", candidates=["a", "b"])) == "a"  # lower is better
    with pytest.raises(Exception, match=r"\['c'\] have no evaluation"):
        choose(metrics, SelectConfig(metric="roc_auc", candidates=["a", "c"]))
