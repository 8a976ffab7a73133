"""Structural fine-tuning (``finetune.strategy: adapter``): residual bottleneck adapters after each
block; only they (and optionally the head) learn, every trained weight stays bit-identical."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from torch import nn

from ontime.candidates import load_candidate
from ontime.candidates.torch_model import TorchCandidate, build_model
from ontime.config.finetune import FinetuneConfig
from ontime.config.train import TrainConfig
from ontime.errors import DataError
from ontime.io import read_json
from ontime.models.ft_transformer import FTTransformer
from ontime.models.mlp import MLP
from ontime.models.preprocess import Preprocessor
from ontime.models.roles import parameter_roles
from ontime.spec import FeatureSpec
from ontime.training.finetune import apply_strategy, finetune, with_adapters
from ontime.training.loop import Runtime, parameter_groups
from tests.conftest import compose_params

NUMERIC, CATEGORICAL, TARGET = ["x1", "x2", "x3"], ["c1", "c2"], "late"
RANK = 3
SEED = 7

# Tiny networks over the synthetic frame's inputs (3 numeric, 2 categorical columns).
KWARGS: dict[str, dict[str, Any]] = {
    "mlp": {"d_block": 8, "n_blocks": 2, "dropout": 0.1},
    "mlp-periodic": {
        "d_block": 8, "n_blocks": 2, "num_embedding": "periodic", "d_num_embedding": 4, "n_frequencies": 3,
    },
    "ft_transformer": {"d_token": 8, "n_blocks": 2, "n_heads": 2},
}  # fmt: skip


def architecture(case: str) -> str:
    return case.split("-")[0]


def make_frame(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    c1 = rng.choice(["a", "b", "c", "d"], n)
    c2 = rng.choice(["p", "q", "r"], n)
    logit = x[:, 0] - 0.5 * x[:, 1] + (c1 == "a") - (c2 == "r") + rng.normal(scale=0.5, size=n)
    return pl.DataFrame(
        {"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "c1": c1, "c2": c2, TARGET: (logit > 0).astype(int)}
    )


@pytest.fixture(scope="module")
def frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    return make_frame(256, seed=0), make_frame(128, seed=1)


@pytest.fixture(scope="module")
def preprocessor(frames: tuple[pl.DataFrame, pl.DataFrame]) -> Preprocessor:
    return Preprocessor(numeric=NUMERIC, categorical=CATEGORICAL).fit(frames[0])


def spec() -> FeatureSpec:
    features = [{"name": c, "kind": "numeric"} for c in NUMERIC]
    features += [{"name": c, "kind": "categorical"} for c in CATEGORICAL]
    return FeatureSpec(
        target=TARGET, time_column=None, numeric=NUMERIC, categorical=CATEGORICAL, features=features
    )


def base_candidate(case: str, pre: Preprocessor) -> TorchCandidate:
    """A (randomly initialised) trained model as train leaves it: no ``adapter_rank`` in its kwargs."""
    kwargs = {**KWARGS[case], "n_num": pre.n_num_features, "cardinalities": pre.cardinalities}
    torch.manual_seed(0)
    model = build_model(architecture(case), kwargs)
    return TorchCandidate(
        name="base", model=model, architecture=architecture(case), kwargs=kwargs, preprocessor=pre
    )


def finetune_cfg(**update: Any) -> FinetuneConfig:
    """The real finetune section (conf/), strategy adapter, shrunk."""
    raw = {**compose_params()["finetune"], "strategy": "adapter", "adapter_rank": RANK, "epochs": 2}
    return FinetuneConfig(**{**raw, "patience": 2, "replay": 0.0, "refit_epochs": 0, **update})


def train_cfg() -> TrainConfig:
    raw = compose_params()["train"]
    return TrainConfig(**{**raw, "batch_size": 64, "eval_batch_size": 512, "device": "cpu", "threads": 1})


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def adapter_names(model: nn.Module) -> set[str]:
    """Found independently of the roles: every parameter under the ``adapters`` submodule."""
    return {name for name, _ in model.named_parameters() if name.startswith("adapters.")}


def expected_adapter_count(case: str, rank: int) -> int:
    """n_blocks x (down: d x rank + rank, up: rank x d + d), from the architecture's sizes."""
    d = KWARGS[case].get("d_block", KWARGS[case].get("d_token"))
    return KWARGS[case]["n_blocks"] * (2 * d * rank + rank + d)


def run_finetune(
    case: str, pre: Preprocessor, frames: tuple[pl.DataFrame, pl.DataFrame], **update: Any
) -> tuple[TorchCandidate, TorchCandidate, dict[str, Any]]:
    base = base_candidate(case, pre)
    tuned, metrics = finetune(
        base,
        finetune_cfg(**update),
        train_cfg(),
        spec=spec(),
        train_df=frames[0],
        valid_df=frames[1],
        seed_=SEED,
        rt=Runtime(device=torch.device("cpu")),
        checkpoint_dir=None,
        live_dir=None,
        fingerprint_="test",
    )
    return base, tuned, metrics


# --- the adapted network ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(KWARGS))
def test_adapters_start_as_the_identity(case: str, preprocessor: Preprocessor) -> None:
    """Right after adding them, the adapted network computes exactly the base network's function."""
    base = base_candidate(case, preprocessor)
    adapted = with_adapters(base, RANK, seed_=SEED)
    assert adapted.kwargs == {**base.kwargs, "adapter_rank": RANK}
    assert "adapter_rank" not in base.kwargs  # the base candidate is left as it was
    for name, tensor in base.model.state_dict().items():
        assert torch.equal(adapted.model.state_dict()[name], tensor), name
    gen = torch.Generator().manual_seed(3)
    x_num = torch.randn(64, preprocessor.n_num_features, generator=gen)
    x_cat = torch.stack([torch.randint(0, c, (64,), generator=gen) for c in preprocessor.cardinalities], 1)
    base.model.eval()
    adapted.model.eval()
    with torch.no_grad():
        assert torch.equal(adapted.model(x_num, x_cat), base.model(x_num, x_cat))  # bit-identical
    assert adapter_names(adapted.model)
    for name, p in adapted.model.named_parameters():
        if name.endswith(("up.weight", "up.bias")):
            assert not p.any(), name
    # drawn from the seed: the same adapters on every run (and every rank)
    again = with_adapters(base, RANK, seed_=SEED)
    assert all(torch.equal(again.model.state_dict()[k], v) for k, v in adapted.model.state_dict().items())


@pytest.mark.parametrize("arch", ["mlp", "ft_transformer"])
def test_no_adapters_by_default_and_the_same_base_initialisation(arch: str) -> None:
    """adapter_rank 0 (train, tune): no adapter at all; with adapters, the other weights are drawn as
    without them (the adapters are built last)."""
    kwargs = {**KWARGS[arch], "n_num": 3, "cardinalities": [4, 5]}
    torch.manual_seed(0)
    plain = build_model(arch, kwargs)
    torch.manual_seed(0)
    adapted = build_model(arch, {**kwargs, "adapter_rank": RANK})
    assert plain.adapters is None
    assert not adapter_names(plain)
    assert not parameter_roles(plain).names["adapters"]
    assert not any(k.startswith("adapters") for k in plain.state_dict())
    for name, tensor in plain.state_dict().items():
        assert torch.equal(adapted.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match="adapter_rank must be >= 0"):
        build_model(arch, {**kwargs, "adapter_rank": -1})


# --- roles -----------------------------------------------------------------------------------------
ADAPTED: dict[str, Callable[[], nn.Module]] = {
    "mlp": lambda: MLP(n_num=3, cardinalities=[4, 6], d_block=8, n_blocks=2, adapter_rank=RANK),
    "mlp-piecewise": lambda: MLP(
        n_num=2, cardinalities=[], d_block=8, n_blocks=1, num_embedding="piecewise_linear",
        d_num_embedding=4, bin_edges=[[0.0, 1.0, 2.0], [-1.0, 1.0]], adapter_rank=1,
    ),
    "ft_transformer": lambda: FTTransformer(
        n_num=3, cardinalities=[4, 6], d_token=8, n_heads=2, n_blocks=3, adapter_rank=RANK
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ADAPTED))
def test_the_adapters_role_is_exactly_the_adapter_parameters(case: str) -> None:
    model = ADAPTED[case]()
    roles = parameter_roles(model)  # checked: every parameter in exactly one role
    adapters = adapter_names(model)
    assert set(roles.names["adapters"]) == adapters
    assert len(adapters) == 4 * len(model.blocks)  # down and up, weight and bias, per block
    for role in ("embeddings", "blocks", "head"):
        assert not set(roles.names[role]) & adapters, role
    # weight decay on the adapters' weight matrices, as on the blocks'; never on their biases
    assert {n for n in adapters if n not in roles.no_decay} == {n for n in adapters if n.endswith("weight")}


@pytest.mark.parametrize("adapter_head", [True, False])
def test_the_strategy_trains_only_adapters_and_head(adapter_head: bool) -> None:
    model = ADAPTED["ft_transformer"]()
    scales = apply_strategy(model, finetune_cfg(adapter_head=adapter_head))
    assert scales == {}
    roles = parameter_roles(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == adapter_names(model) | (set(roles.names["head"]) if adapter_head else set())
    named = {id(p): n for n, p in model.named_parameters()}
    assert {named[id(p)] for g in parameter_groups(model, weight_decay=0.1) for p in g["params"]} == trainable


def test_discriminative_trains_adapters_at_the_full_rate() -> None:
    model = ADAPTED["mlp"]()
    scales = apply_strategy(model, finetune_cfg(strategy="discriminative", layer_lr_decay=0.3))
    assert scales["adapters"] == 1.0
    named = {id(p): n for n, p in model.named_parameters()}
    for group in parameter_groups(model, weight_decay=0.1, lr_scale=scales):
        for p in group["params"]:
            if named[id(p)].startswith("adapters."):
                assert group["lr_scale"] == 1.0


def test_refusals(preprocessor: Preprocessor) -> None:
    plain = base_candidate("mlp", preprocessor)
    with pytest.raises(ValueError, match="has no adapters"):
        apply_strategy(plain.model, finetune_cfg())
    adapted = with_adapters(plain, RANK, seed_=SEED)
    with pytest.raises(DataError, match="has adapters already"):
        with_adapters(adapted, RANK, seed_=SEED)
    with pytest.raises(ValidationError, match="adapter_rank"):
        finetune_cfg(adapter_rank=0)


# --- fine-tuning -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("case", "adapter_head"), [("mlp", True), ("mlp", False), ("ft_transformer", True)])
def test_finetuning_moves_only_adapters_and_head(
    case: str, adapter_head: bool, preprocessor: Preprocessor, frames: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    base, tuned, metrics = run_finetune(case, preprocessor, frames, adapter_head=adapter_head)
    start = state(with_adapters(base, RANK, seed_=SEED).model)  # the adapted network before training
    after = state(tuned.model)
    adapters = adapter_names(tuned.model)
    head = set(parameter_roles(tuned.model).names["head"])
    assert set(after) == set(start)
    for name, tensor in base.model.state_dict().items():  # every trained tensor, buffers included
        if name not in head or not adapter_head:
            assert torch.equal(after[name], tensor), f"{name} moved"
    for name in adapters:
        assert not torch.equal(after[name], start[name]), f"adapter tensor {name} did not learn"
    for name in head:
        assert torch.equal(after[name], start[name]) != adapter_head, name
    assert all(p.requires_grad for p in tuned.model.parameters())  # left trainable, as other strategies
    assert tuned.kwargs == {**base.kwargs, "adapter_rank": RANK}
    # the trainable parameter count: the adapters', plus the head's
    head_count = sum(p.numel() for n, p in tuned.model.named_parameters() if n in head)
    expected = expected_adapter_count(case, RANK) + (head_count if adapter_head else 0)
    assert metrics["trainable_parameters"] == expected
    assert metrics["parameters"] == sum(p.numel() for p in tuned.model.parameters())
    assert metrics["strategy"] == "adapter"
    assert metrics["adapter_rank"] == RANK


def test_adapted_candidate_saves_loads_and_scores_identically(
    preprocessor: Preprocessor, frames: tuple[pl.DataFrame, pl.DataFrame], tmp_path: Path
) -> None:
    _, tuned, _ = run_finetune("mlp-periodic", preprocessor, frames)
    tuned.save(tmp_path / "model", strategy="adapter")
    assert read_json(tmp_path / "model/model.json")["kwargs"]["adapter_rank"] == RANK
    assert adapter_names(tuned.model) <= set(load_file(str(tmp_path / "model/model.safetensors")))
    rows = make_frame(300, seed=5)
    expected = tuned.predict_proba(rows)
    loaded = TorchCandidate.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(rows), expected)
    served = load_candidate(tmp_path / "model")  # what evaluate, select and serving load
    np.testing.assert_array_equal(served.predict_proba(rows), expected)
    # and the adapters matter: the same weights without them predict otherwise
    base_kwargs = {k: v for k, v in tuned.kwargs.items() if k != "adapter_rank"}
    stripped = build_model("mlp", base_kwargs)
    stripped.load_state_dict(tuned.model.state_dict(), strict=False)  # all but the adapters
    plain = TorchCandidate(
        name="x", model=stripped, architecture="mlp", kwargs=base_kwargs, preprocessor=preprocessor
    )
    assert not np.array_equal(plain.predict_proba(rows), expected)
