"""Parameter roles (models/roles.py): weight decay groups and fine-tuning strategies follow them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from ontime.config.finetune import FinetuneConfig
from ontime.models.ft_transformer import FTTransformer
from ontime.models.mlp import MLP
from ontime.models.roles import ROLES, ParameterRoles, parameter_roles, roles_from_modules
from ontime.training.finetune import FROZEN_ROLES, apply_strategy
from ontime.training.loop import parameter_groups

N_NUM, CARDINALITIES = 3, [4, 6]
EDGES = [[0.0, 1.0, 2.0, 3.0], [-1.0, 0.0, 1.0], [0.0, 5.0]]

ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "mlp": lambda: MLP(n_num=N_NUM, cardinalities=CARDINALITIES, d_block=8, n_blocks=2),
    "mlp-periodic": lambda: MLP(
        n_num=N_NUM, cardinalities=CARDINALITIES, d_block=8, n_blocks=2, num_embedding="periodic",
        d_num_embedding=4, n_frequencies=3,
    ),
    "mlp-piecewise": lambda: MLP(
        n_num=N_NUM, cardinalities=CARDINALITIES, d_block=8, n_blocks=1, num_embedding="piecewise_linear",
        d_num_embedding=4, bin_edges=EDGES,
    ),
    "mlp-numeric-only": lambda: MLP(n_num=N_NUM, cardinalities=[], d_block=8, n_blocks=1),
    "ft_transformer": lambda: FTTransformer(n_num=N_NUM, cardinalities=CARDINALITIES, d_token=8, n_heads=2),
    "ft_transformer-gelu": lambda: FTTransformer(
        n_num=N_NUM, cardinalities=CARDINALITIES, d_token=8, n_blocks=3, n_heads=4, ffn_activation="gelu"
    ),
}  # fmt: skip
STRATEGIES = ["full", "head", "frozen_embeddings", "discriminative"]


@pytest.fixture(params=sorted(ARCHITECTURES))
def model(request: pytest.FixtureRequest) -> nn.Module:
    torch.manual_seed(0)
    return ARCHITECTURES[request.param]()


def strategy(name: str, decay: float = 0.5) -> FinetuneConfig:
    return FinetuneConfig(
        strategy=name,
        lr=1e-3,
        epochs=1,
        patience=1,
        warmup_epochs=0,
        layer_lr_decay=decay,
        replay=0,
        refit_epochs=0,
    )  # type: ignore[arg-type]


def linear_weights_of_blocks_and_head(model: nn.Module) -> set[str]:
    """Found independently of the roles: the weights of the Linear layers under blocks and head."""
    return {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.split(".")[0] in ("blocks", "head")
    }


def decay_of(groups: list[dict]) -> dict[int, float]:
    found: dict[int, float] = {}
    for group in groups:
        for p in group["params"]:
            assert id(p) not in found, "a parameter in two groups"
            found[id(p)] = group["weight_decay"]
    return found


# --- roles -----------------------------------------------------------------------------------------
def test_every_parameter_has_exactly_one_role(model: nn.Module) -> None:
    roles = parameter_roles(model)
    assert set(roles.names) == set(ROLES)
    listed = [n for names in roles.names.values() for n in names]
    named = [name for name, _ in model.named_parameters()]
    assert sorted(listed) == sorted(named)  # the union is every parameter, each once (disjoint)
    assert all(roles.names[role] for role in ("blocks", "head"))
    assert roles.no_decay <= set(named)


def test_roles_name_the_intended_modules(model: nn.Module) -> None:
    roles = parameter_roles(model)
    top = {role: {name.split(".")[0] for name in names} for role, names in roles.names.items()}
    assert top["head"] == {"head"}
    assert top["blocks"] == {"blocks"}
    embedding_modules = {"tokenizer", "cls_token"} if isinstance(model, FTTransformer) else set()
    if isinstance(model, MLP):
        embedding_modules = {"cat_embeddings"} if model.n_cat else set()
        embedding_modules |= {"num_embedding"} if model.num_embedding is not None else set()
    assert top["embeddings"] == embedding_modules


def test_roles_must_cover_every_parameter_once() -> None:
    mlp = ARCHITECTURES["mlp-periodic"]()
    assert isinstance(mlp, MLP)
    with pytest.raises(ValueError, match=r"in none: \['head.bias', 'head.weight'\]"):
        roles_from_modules(
            mlp, embeddings=[mlp.num_embedding, mlp.cat_embeddings], blocks=[mlp.blocks], head=[]
        )
    with pytest.raises(ValueError, match=r"in several roles: \['blocks.0.0.bias', 'blocks.0.0.weight'"):
        roles_from_modules(
            mlp,
            embeddings=[mlp.num_embedding, mlp.cat_embeddings],
            blocks=[mlp.blocks],
            head=[mlp.head, mlp.blocks],
        )
    with pytest.raises(ValueError, match="not the model's"):
        roles_from_modules(
            mlp, embeddings=[mlp.cat_embeddings], blocks=[mlp.blocks], head=[mlp.head, nn.Linear(2, 2)]
        )


def test_a_model_without_roles_is_refused() -> None:
    with pytest.raises(TypeError, match="does not declare parameter roles"):
        parameter_groups(nn.Linear(3, 1), weight_decay=0.1)


def test_declared_roles_are_checked_against_the_parameters(model: nn.Module) -> None:
    class Partial(type(model)):  # type: ignore[misc]
        def parameter_roles(self) -> ParameterRoles:
            roles = super().parameter_roles()
            return ParameterRoles(names={**roles.names, "head": ()}, no_decay=roles.no_decay)

    model.__class__ = Partial
    with pytest.raises(ValueError, match="exactly one role"):
        parameter_roles(model)


# --- weight decay ----------------------------------------------------------------------------------
def test_weight_decay_only_on_the_weight_matrices_of_blocks_and_head(model: nn.Module) -> None:
    groups = parameter_groups(model, weight_decay=0.1)
    decay = decay_of(groups)
    named = dict(model.named_parameters())
    assert set(decay) == {id(p) for p in named.values()}  # every parameter in exactly one group
    decayed = {name for name, p in named.items() if decay[id(p)] > 0}
    assert decayed == linear_weights_of_blocks_and_head(model)
    assert all(named[name].ndim == 2 for name in decayed)
    roles = parameter_roles(model)
    for name in roles.names["embeddings"]:  # embedding tables, per-feature weights/biases, CLS token
        assert decay[id(named[name])] == 0.0, name
    for name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm | nn.Embedding) or hasattr(module, "bias"):
            for pname, p in module.named_parameters(recurse=False):
                if isinstance(module, nn.LayerNorm | nn.Embedding) or pname == "bias":
                    assert decay[id(p)] == 0.0, f"{name}.{pname}"
    for group in groups:
        assert group["weight_decay"] == (0.1 if group["decay"] else 0.0)


def test_two_dimensional_embeddings_and_per_feature_biases_get_no_decay() -> None:
    """The bug this fixes: ``ndim >= 2`` put weight decay on these 2-D (and 3-D) tensors."""
    ft = ARCHITECTURES["ft_transformer"]()
    mlp = ARCHITECTURES["mlp-periodic"]()
    cases = [
        (ft, ["tokenizer.num_weight", "tokenizer.num_bias", "tokenizer.cat_embedding.weight"]),
        (ft, ["tokenizer.cat_bias"]),
        (mlp, ["cat_embeddings.0.weight", "num_embedding.frequencies", "num_embedding.linear.weight"]),
        (mlp, ["num_embedding.linear.bias"]),
    ]
    for model, names in cases:
        named = dict(model.named_parameters())
        decay = decay_of(parameter_groups(model, weight_decay=0.1))
        for name in names:
            assert named[name].ndim >= 2, name
            assert decay[id(named[name])] == 0.0, name


def test_zero_weight_decay_keeps_the_decay_flag(model: nn.Module) -> None:
    """train.l1 penalises the same weights weight decay would, even when weight_decay is 0."""
    groups = parameter_groups(model, weight_decay=0.0)
    assert all(g["weight_decay"] == 0.0 for g in groups)
    named = {id(p): n for n, p in model.named_parameters()}
    flagged = {named[id(p)] for g in groups if g["decay"] for p in g["params"]}
    assert flagged == linear_weights_of_blocks_and_head(model)


# --- fine-tuning strategies ------------------------------------------------------------------------
@pytest.mark.parametrize("name", STRATEGIES)
def test_strategies_freeze_exactly_their_roles(model: nn.Module, name: str) -> None:
    apply_strategy(model, strategy(name))
    roles = parameter_roles(model)
    named = dict(model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    expected = {
        "full": set(named),
        "discriminative": set(named),
        "head": set(roles.names["head"]),
        "frozen_embeddings": set(roles.names["blocks"]) | set(roles.names["head"]),
    }[name]
    assert trainable == expected
    present = [role for role in ROLES if roles.names[role]]  # the numeric-only MLP has no embeddings
    assert {r for r in FROZEN_ROLES[name] if r in present} == {
        r for r in present if not set(roles.names[r]) & trainable
    }
    in_groups = {id(p) for g in parameter_groups(model, weight_decay=0.1) for p in g["params"]}
    assert in_groups == {id(named[n]) for n in trainable}  # frozen parameters are left out


@pytest.mark.parametrize("name", ["head", "frozen_embeddings"])
def test_frozen_roles_do_not_move_in_a_training_step(model: nn.Module, name: str) -> None:
    apply_strategy(model, strategy(name))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(parameter_groups(model, weight_decay=0.1), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    x_num = torch.randn(16, N_NUM, generator=gen)
    cards = CARDINALITIES[: int(model.n_cat)]
    x_cat = torch.stack([torch.randint(0, c, (16,), generator=gen) for c in cards], 1) if cards else None
    if x_cat is None:
        x_cat = torch.zeros(16, 0, dtype=torch.long)
    y = torch.randint(0, 2, (16,), generator=gen).float()
    for _ in range(2):
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(x_num, x_cat), y).backward()
        opt.step()
    roles = parameter_roles(model)
    fixed = {n for role in FROZEN_ROLES[name] for n in roles.names[role]}
    assert fixed or not roles.names["embeddings"]
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) == (n in fixed), n


def test_discriminative_scales_follow_the_roles(model: nn.Module) -> None:
    scales = apply_strategy(model, strategy("discriminative", decay=0.3))
    assert scales == pytest.approx({"embeddings": 0.09, "blocks": 0.3, "adapters": 1.0, "head": 1.0})
    roles = parameter_roles(model)
    named = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for group in parameter_groups(model, weight_decay=0.1, lr_scale=scales):
        for p in group["params"]:
            assert group["lr_scale"] == scales[roles.role_of(named[id(p)])], named[id(p)]
            seen.add(named[id(p)])
    assert seen == set(named.values())
    for name in ("full", "head", "frozen_embeddings"):
        assert apply_strategy(model, strategy(name)) == {}
