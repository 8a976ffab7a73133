"""Tests for ontime.models.mlp.MLP and ontime.models.ft_transformer.FTTransformer."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from torch import Tensor, nn

from ontime.models.ft_transformer import FTTransformer
from ontime.models.mlp import MLP
from ontime.models.preprocess import Preprocessor

N_NUM = 4
CARDINALITIES = [3, 5]


def make_batch(n: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x_num = torch.randn(n, N_NUM, generator=generator)  # (n, N_NUM)
    x_cat = torch.stack(
        [torch.randint(0, c, (n,), generator=generator) for c in CARDINALITIES], dim=1
    )  # (n, n_cat)
    return x_num, x_cat


def make_mlp(num_embedding: str, **kwargs: object) -> MLP:
    bin_edges = None
    if num_embedding == "piecewise_linear":
        x_train, _ = make_batch(200, seed=1)
        bin_edges = MLP.compute_bin_edges(x_train.numpy(), n_bins=8)
    return MLP(
        n_num=N_NUM,
        cardinalities=CARDINALITIES,
        num_embedding=num_embedding,
        bin_edges=bin_edges,
        **kwargs,
    )


def overfit(model: nn.Module, *, lr: float, steps: int = 200) -> tuple[float, float]:
    """Trains on 64 rows with random labels; returns (initial, final) eval-mode BCE."""
    x_num, x_cat = make_batch(64, seed=2)
    y = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(3)).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return nn.functional.binary_cross_entropy_with_logits(model(x_num, x_cat), y).item()

    initial = eval_loss()
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x_num, x_cat), y)
        loss.backward()
        optimizer.step()
    return initial, eval_loss()


# -------------------------------------------------------------------------------------------------
# MLP


@pytest.mark.parametrize("num_embedding", ["none", "periodic", "piecewise_linear"])
def test_mlp_forward_shape(num_embedding: str) -> None:
    torch.manual_seed(0)
    model = make_mlp(num_embedding)
    x_num, x_cat = make_batch(5)
    out = model(x_num, x_cat)
    assert out.shape == (5,)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("num_embedding", ["none", "periodic", "piecewise_linear"])
def test_mlp_without_numeric_or_categorical_inputs(num_embedding: str) -> None:
    model = MLP(
        n_num=0,
        cardinalities=CARDINALITIES,
        num_embedding=num_embedding,
    )
    _, x_cat = make_batch(5)
    assert model(torch.zeros(5, 0), x_cat).shape == (5,)

    model = MLP(
        n_num=N_NUM,
        cardinalities=[],
        num_embedding=num_embedding,
        bin_edges=[[-1.0, 0.0, 1.0]] * N_NUM if num_embedding == "piecewise_linear" else None,
    )
    x_num, _ = make_batch(5)
    assert model(x_num, torch.zeros(5, 0, dtype=torch.long)).shape == (5,)


@pytest.mark.parametrize("num_embedding", ["none", "periodic", "piecewise_linear"])
def test_mlp_overfits_a_small_batch(num_embedding: str) -> None:
    torch.manual_seed(0)
    initial, final = overfit(make_mlp(num_embedding), lr=3e-3)
    assert final < 0.3 * initial, (initial, final)


def test_mlp_is_deterministic_under_a_seed() -> None:
    x_num, x_cat = make_batch(5)
    outputs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = make_mlp("periodic")
        model.eval()
        outputs.append(model(x_num, x_cat))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def test_compute_bin_edges() -> None:
    x = np.stack(
        [np.arange(100.0), np.full(100, 3.0), np.r_[np.zeros(90), np.ones(10)]], axis=1
    )  # (100, 3): spread, constant, mostly zero
    x[0, 0] = np.nan
    edges = MLP.compute_bin_edges(x, n_bins=4)
    assert edges[0] == [1.0, 25.5, 50.0, 74.5, 99.0]
    assert edges[1] == [3.0, 4.0]  # a single value gets one bin of width 1
    assert edges[2] == [0.0, 1.0]  # repeated quantiles are merged
    for feature_edges in edges:
        assert np.all(np.diff(feature_edges) > 0)


def test_piecewise_linear_encoding_values() -> None:
    model = MLP(
        n_num=1,
        cardinalities=[],
        num_embedding="piecewise_linear",
        bin_edges=[[0.0, 1.0, 3.0]],
    )
    assert model.num_embedding is not None
    encoder = model.num_embedding
    # Replace the per-feature Linear by the identity to read the encoding itself.
    with torch.no_grad():
        encoder.linear.weight.copy_(torch.eye(2, 16)[None])
        encoder.linear.bias.zero_()
    x = torch.tensor([[-1.0], [0.5], [2.0], [5.0]])  # (4, 1)
    encoded = encoder(x)[:, 0, :2]  # (4, 2)
    expected = torch.tensor([[-1.0, 0.0], [0.5, 0.0], [1.0, 0.5], [1.0, 2.0]])
    torch.testing.assert_close(encoded, expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_num": -1}, "n_num"),
        ({"cardinalities": [3, 0]}, "cardinalit"),
        ({"n_num": 0, "cardinalities": []}, "no inputs"),
        ({"n_blocks": 0}, "n_blocks must be positive"),
        ({"d_block": 0}, "d_block must be positive"),
        ({"dropout": 1.0}, "dropout"),
        ({"num_embedding": "fourier"}, "'fourier'"),
        ({"frequency_scale": 0.0}, "frequency_scale"),
        ({"num_embedding": "piecewise_linear"}, "needs bin_edges"),
        ({"num_embedding": "piecewise_linear", "bin_edges": [[0.0, 1.0]]}, "one list per"),
        (
            {"num_embedding": "piecewise_linear", "bin_edges": [[0.0, 1.0], [1.0, 1.0]]},
            r"bin_edges\[1\]",
        ),
        ({"bin_edges": [[0.0, 1.0], [0.0, 1.0]]}, "only used with"),
    ],
)
def test_mlp_invalid_args(kwargs: dict[str, object], match: str) -> None:
    params: dict[str, object] = {"n_num": 2, "cardinalities": [3], **kwargs}
    with pytest.raises(ValueError, match=match):
        MLP(**params)


def test_forward_rejects_wrong_input_shapes() -> None:
    model = make_mlp("none")
    x_num, x_cat = make_batch(5)
    with pytest.raises(ValueError, match="x_num must have shape"):
        model(x_num[:, :2], x_cat)
    with pytest.raises(ValueError, match="x_cat must have shape"):
        model(x_num, x_cat[:, :1])


# -------------------------------------------------------------------------------------------------
# FT-Transformer


@pytest.mark.parametrize("ffn_activation", ["reglu", "gelu"])
def test_ft_transformer_forward_shape(ffn_activation: str) -> None:
    torch.manual_seed(0)
    model = FTTransformer(
        n_num=N_NUM,
        cardinalities=CARDINALITIES,
        ffn_activation=ffn_activation,
    )
    x_num, x_cat = make_batch(5)
    out = model(x_num, x_cat)
    assert out.shape == (5,)
    assert torch.isfinite(out).all()


def test_ft_transformer_without_numeric_or_categorical_inputs() -> None:
    x_num, x_cat = make_batch(5)
    model = FTTransformer(n_num=0, cardinalities=CARDINALITIES)
    assert model(torch.zeros(5, 0), x_cat).shape == (5,)
    model = FTTransformer(n_num=N_NUM, cardinalities=[])
    assert model(x_num, torch.zeros(5, 0, dtype=torch.long)).shape == (5,)


def test_ft_transformer_rows_are_independent() -> None:
    """Attention runs over a row's features, never across the batch."""
    torch.manual_seed(0)
    model = FTTransformer(n_num=N_NUM, cardinalities=CARDINALITIES).eval()
    x_num, x_cat = make_batch(5)
    full = model(x_num, x_cat)
    torch.testing.assert_close(model(x_num[2:3], x_cat[2:3]), full[2:3])


def test_ft_transformer_overfits_a_small_batch() -> None:
    torch.manual_seed(0)
    model = FTTransformer(n_num=N_NUM, cardinalities=CARDINALITIES)
    initial, final = overfit(model, lr=3e-3)
    assert final < 0.5 * initial, (initial, final)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_token": 60, "n_heads": 8}, "divisible by n_heads"),
        ({"n_blocks": 0}, "n_blocks must be positive"),
        ({"n_heads": 0}, "n_heads must be positive"),
        ({"attention_dropout": -0.1}, "attention_dropout"),
        ({"residual_dropout": 1.0}, "residual_dropout"),
        ({"ffn_d_hidden_factor": 0.0}, "ffn_d_hidden_factor"),
        ({"ffn_activation": "swiglu"}, "'swiglu'"),
        ({"cardinalities": [0]}, "cardinalit"),
    ],
)
def test_ft_transformer_invalid_args(kwargs: dict[str, object], match: str) -> None:
    params: dict[str, object] = {"n_num": 2, "cardinalities": [3], **kwargs}
    with pytest.raises(ValueError, match=match):
        FTTransformer(**params)


# -------------------------------------------------------------------------------------------------
# preprocessor -> model


@pytest.mark.parametrize("model_name", ["mlp", "ft_transformer"])
def test_preprocessor_output_feeds_the_models(model_name: str) -> None:
    frame = pl.DataFrame(
        {
            "delay": [1.0, None, 3.0, 40.0, float("nan"), 2.0],
            "carrier": ["AA", "DL", None, "AA", "UA", "DL"],
        }
    )
    pre = Preprocessor(numeric=["delay"], categorical=["carrier"]).fit(frame)
    x_num, x_cat = pre.transform(frame)
    torch.manual_seed(0)
    model: nn.Module
    if model_name == "mlp":
        model = MLP(n_num=pre.n_num_features, cardinalities=pre.cardinalities)
    else:
        model = FTTransformer(n_num=pre.n_num_features, cardinalities=pre.cardinalities)
    out = model(torch.from_numpy(x_num), torch.from_numpy(x_cat))
    assert out.shape == (frame.height,)
