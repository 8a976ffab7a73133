"""An MLP for tabular data, with optional embeddings for the numeric features.

Numeric embeddings follow Gorishniy et al. (2022), "On Embeddings for Numerical Features in
Tabular Deep Learning":

- `"periodic"` (PLR): per feature, learnable frequencies `c ~ N(0, frequency_scale)`,
  `[cos(2π c x), sin(2π c x)]`, then a per-feature Linear and ReLU to `d_num_embedding`.
- `"piecewise_linear"` (PLE + Linear): per feature, fixed bin edges from training quantiles
  (`MLP.compute_bin_edges`), the piecewise-linear encoding, then a per-feature Linear to
  `d_num_embedding`.

Categorical features get one embedding table per column. Everything is concatenated and passed
through `n_blocks` of Linear -> ReLU -> Dropout and a Linear head that returns one logit per row.

With `adapter_rank > 0`, a zero-initialised residual adapter follows each block (`adapters.py`):
the structure the `adapter` fine-tuning strategy trains while everything else stays fixed.

Parameter roles (`MLP.parameter_roles`, see `roles.py`): the numeric and categorical embeddings,
the blocks, the adapters (if any), the head. Weight decay applies to the Linear weights of the
blocks, the adapters and the head only.

Shapes use B for the batch, F for numeric features, C for categorical features.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ontime.models.adapters import adapter_stack
from ontime.models.roles import ParameterRoles, roles_from_modules

NumEmbedding = Literal["none", "periodic", "piecewise_linear"]
NUM_EMBEDDINGS: tuple[str, ...] = get_args(NumEmbedding)


# -------------------------------------------------------------------------------------------------
# numeric embeddings


class _PerFeatureLinear(nn.Module):
    """A separate Linear layer for each feature.

    Shape:
        input: (B, F, d_in); output: (B, F, d_out).
    """

    def __init__(self, n_features: int, d_in: int, d_out: int) -> None:
        super().__init__()
        # Same initialisation as nn.Linear, per feature.
        bound = 1.0 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(n_features, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features, d_out).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        # einsum("bfi,fio->bfo") as a batched matmul over the features: the same kernel in torch
        # (bit-identical values and gradients), and a MatMul in ONNX rather than a slow Einsum
        return torch.bmm(x.transpose(0, 1), self.weight).transpose(0, 1) + self.bias  # (B, F, d_out)


class PeriodicEmbedding(nn.Module):
    """PLR embeddings: periodic features, then a per-feature Linear and ReLU.

    Shape:
        input: (B, F); output: (B, F, d_embedding).
    """

    def __init__(
        self, *, n_features: int, d_embedding: int, n_frequencies: int, frequency_scale: float
    ) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.normal(0.0, frequency_scale, size=(n_features, n_frequencies)))
        self.linear = _PerFeatureLinear(n_features, 2 * n_frequencies, d_embedding)

    def forward(self, x: Tensor) -> Tensor:
        v = 2 * math.pi * self.frequencies * x[..., None]  # (B, F, n_frequencies)
        v = torch.cat([torch.cos(v), torch.sin(v)], dim=-1)  # (B, F, 2 * n_frequencies)
        return F.relu(self.linear(v))  # (B, F, d_embedding)


class PiecewiseLinearEmbedding(nn.Module):
    """Piecewise-linear encoding over fixed bins, then a per-feature Linear.

    For a feature with edges `e_0 < ... < e_T`, bin `t` encodes `(x - e_{t-1}) / (e_t - e_{t-1})`
    clipped to [0, 1]; the first bin is not clipped below and the last is not clipped above, so
    values outside the training range still vary. Features with fewer than the most bins are
    padded with bins that always encode 0.

    Shape:
        input: (B, F); output: (B, F, d_embedding).
    """

    left: Tensor
    width: Tensor
    is_real: Tensor
    is_first: Tensor
    is_last: Tensor

    def __init__(self, *, bin_edges: list[list[float]], d_embedding: int) -> None:
        super().__init__()
        n_features = len(bin_edges)
        max_bins = max(len(edges) - 1 for edges in bin_edges)
        left = torch.zeros(n_features, max_bins)
        width = torch.ones(n_features, max_bins)
        is_real = torch.zeros(n_features, max_bins, dtype=torch.bool)
        is_last = torch.zeros(n_features, max_bins, dtype=torch.bool)
        for f, edges in enumerate(bin_edges):
            e = torch.tensor(edges, dtype=torch.float32)
            n_bins = len(edges) - 1
            left[f, :n_bins] = e[:-1]
            width[f, :n_bins] = e[1:] - e[:-1]
            is_real[f, :n_bins] = True
            is_last[f, n_bins - 1] = True
        is_first = torch.zeros(n_features, max_bins, dtype=torch.bool)
        is_first[:, 0] = True
        # Buffers, so the edges travel with the state dict.
        self.register_buffer("left", left)  # (F, max_bins)
        self.register_buffer("width", width)  # (F, max_bins)
        self.register_buffer("is_real", is_real)  # (F, max_bins)
        self.register_buffer("is_first", is_first)  # (F, max_bins)
        self.register_buffer("is_last", is_last)  # (F, max_bins)
        self.linear = _PerFeatureLinear(n_features, max_bins, d_embedding)

    def forward(self, x: Tensor) -> Tensor:
        z = (x[..., None] - self.left) / self.width  # (B, F, max_bins)
        z = torch.where(self.is_first, z, z.clamp_min(0.0))
        z = torch.where(self.is_last, z, z.clamp_max(1.0))
        z = torch.where(self.is_real, z, torch.zeros_like(z))
        return self.linear(z)  # (B, F, d_embedding)


# -------------------------------------------------------------------------------------------------
# the model


class MLP(nn.Module):
    """MLP over numeric features (raw or embedded) and categorical embeddings.

    Args:
        n_num: Number of numeric features (columns of `x_num`); may be 0.
        cardinalities: Number of codes per categorical feature (columns of `x_cat`), including
            the unknown code 0, e.g. `Preprocessor.cardinalities`; may be empty.
        d_embedding_cat: Embedding size of each categorical feature.
        d_block: Width of the hidden layers.
        n_blocks: Number of Linear -> ReLU -> Dropout blocks.
        dropout: Dropout probability after each block.
        num_embedding: How numeric features enter: `"none"` (as they are), `"periodic"` (PLR) or
            `"piecewise_linear"` (needs `bin_edges`).
        d_num_embedding: Embedding size of each numeric feature (not used with `"none"`).
        n_frequencies: Number of frequencies per feature for `"periodic"`.
        frequency_scale: Standard deviation of the initial frequencies for `"periodic"`; the
            most important hyperparameter of PLR embeddings.
        bin_edges: For `"piecewise_linear"`, per numeric feature the strictly increasing bin
            edges (at least 2), usually `MLP.compute_bin_edges(x_num_train, n_bins=...)`.
        adapter_rank: Bottleneck width of a residual adapter after each block (`adapters.py`);
            0 (the default): no adapters.

    Shape:
        x_num: (B, n_num) float32; x_cat: (B, len(cardinalities)) int64; output: (B,) logits.
    """

    def __init__(
        self,
        *,
        n_num: int,
        cardinalities: list[int],
        d_embedding_cat: int = 8,
        d_block: int = 256,
        n_blocks: int = 3,
        dropout: float = 0.1,
        num_embedding: NumEmbedding = "none",
        d_num_embedding: int = 16,
        n_frequencies: int = 16,
        frequency_scale: float = 0.1,
        bin_edges: list[list[float]] | None = None,
        adapter_rank: int = 0,
    ) -> None:
        super().__init__()
        _check_sizes(n_num=n_num, cardinalities=cardinalities)
        for name, value in (
            ("d_embedding_cat", d_embedding_cat),
            ("d_block", d_block),
            ("n_blocks", n_blocks),
            ("d_num_embedding", d_num_embedding),
            ("n_frequencies", n_frequencies),
        ):
            if value < 1:
                raise ValueError(f"{name} must be positive, however: {name}={value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), however: {dropout=}")
        if num_embedding not in NUM_EMBEDDINGS:
            raise ValueError(
                f"num_embedding must be one of {list(NUM_EMBEDDINGS)}, however: {num_embedding=}"
            )
        if not frequency_scale > 0.0:
            raise ValueError(f"frequency_scale must be positive, however: {frequency_scale=}")
        if num_embedding == "piecewise_linear" and (n_num > 0 or bin_edges is not None):
            _check_bin_edges(bin_edges, n_num)
        elif bin_edges is not None:
            raise ValueError(
                f"bin_edges is only used with num_embedding='piecewise_linear', however: "
                f"{num_embedding=}; drop bin_edges or change num_embedding"
            )

        self.n_num = n_num
        self.n_cat = len(cardinalities)

        # Numeric features: raw, or one d_num_embedding vector each.
        self.num_embedding: nn.Module | None = None
        d_num = n_num
        if n_num > 0 and num_embedding == "periodic":
            self.num_embedding = PeriodicEmbedding(
                n_features=n_num,
                d_embedding=d_num_embedding,
                n_frequencies=n_frequencies,
                frequency_scale=frequency_scale,
            )
            d_num = n_num * d_num_embedding
        elif n_num > 0 and num_embedding == "piecewise_linear":
            assert bin_edges is not None  # checked above
            self.num_embedding = PiecewiseLinearEmbedding(bin_edges=bin_edges, d_embedding=d_num_embedding)
            d_num = n_num * d_num_embedding

        # Categorical features: a table per column, so a code out of its column's range fails
        # loudly instead of reading another column's rows.
        self.cat_embeddings = nn.ModuleList(
            nn.Embedding(cardinality, d_embedding_cat) for cardinality in cardinalities
        )
        d_in = d_num + self.n_cat * d_embedding_cat

        self.blocks = nn.Sequential(
            *(
                nn.Sequential(nn.Linear(d_in if i == 0 else d_block, d_block), nn.ReLU(), nn.Dropout(dropout))
                for i in range(n_blocks)
            )
        )
        self.head = nn.Linear(d_block, 1)
        # Built last, so that the other weights are initialised as without adapters.
        self.adapters = adapter_stack(n_blocks, d_block, adapter_rank)

    def parameter_roles(self) -> ParameterRoles:
        """Embeddings: `num_embedding` (if any) and `cat_embeddings`; blocks: `blocks`; adapters:
        `adapters` (if any); head: `head`."""
        return roles_from_modules(
            self,
            embeddings=[self.num_embedding, self.cat_embeddings],
            blocks=[self.blocks],
            adapters=[self.adapters],
            head=[self.head],
        )

    @staticmethod
    def compute_bin_edges(x_num: np.ndarray, n_bins: int) -> list[list[float]]:
        """Bin edges at the quantiles of the training features, for `"piecewise_linear"`.

        Call it on the training split only. Repeated quantiles are merged, so a feature may get
        fewer than `n_bins` bins; a feature with a single distinct value gets the one bin
        `[v, v + 1]`. NaN and infinite values are ignored.

        Args:
            x_num: Training numeric features, shape (n, F), e.g. `Preprocessor.transform` output.
            n_bins: Maximum number of bins per feature.

        Returns:
            Per feature, strictly increasing edges (between 2 and n_bins + 1 of them).
        """
        if n_bins < 1:
            raise ValueError(f"n_bins must be positive, however: {n_bins=}")
        x = np.asarray(x_num, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"x_num must be 2-dimensional (n, F), however: {x.shape=}")
        probabilities = np.linspace(0.0, 1.0, n_bins + 1)
        edges: list[list[float]] = []
        for f in range(x.shape[1]):
            values = x[:, f][np.isfinite(x[:, f])]
            if values.size == 0:
                edges.append([0.0, 1.0])
                continue
            unique = np.unique(np.quantile(values, probabilities))
            if unique.size < 2:
                edges.append([float(unique[0]), float(unique[0]) + 1.0])
            else:
                edges.append([float(e) for e in unique])
        return edges

    def forward(self, x_num: Tensor, x_cat: Tensor) -> Tensor:
        """Returns one logit per row.

        Shape:
            x_num: (B, n_num) float32; x_cat: (B, n_cat) int64; output: (B,).
        """
        _check_inputs(x_num, x_cat, n_num=self.n_num, n_cat=self.n_cat)
        parts = []
        if self.n_num > 0:
            if self.num_embedding is None:
                parts.append(x_num)  # (B, n_num)
            else:
                parts.append(self.num_embedding(x_num).flatten(1))  # (B, n_num * d_num_embedding)
        if self.n_cat > 0:
            embedded = [embedding(x_cat[:, i]) for i, embedding in enumerate(self.cat_embeddings)]
            parts.append(torch.cat(embedded, dim=1))  # (B, n_cat * d_embedding_cat)
        x = torch.cat(parts, dim=1)  # (B, d_in)
        for i, block in enumerate(self.blocks):
            x = block(x)  # (B, d_block)
            if self.adapters is not None:
                x = self.adapters[i](x)  # (B, d_block)
        return self.head(x).squeeze(-1)  # (B, 1) -> (B,)


# -------------------------------------------------------------------------------------------------
# argument checks shared with the FT-Transformer


def _check_sizes(*, n_num: int, cardinalities: list[int]) -> None:
    if n_num < 0:
        raise ValueError(f"n_num must be non-negative, however: {n_num=}")
    bad = [c for c in cardinalities if c < 1]
    if bad:
        raise ValueError(
            f"every cardinality must be >= 1 (vocabulary size + 1 for unknown), however: {cardinalities=}"
        )
    if n_num == 0 and not cardinalities:
        raise ValueError("the model has no inputs: n_num is 0 and cardinalities is empty")


def _check_bin_edges(bin_edges: list[list[float]] | None, n_num: int) -> None:
    if bin_edges is None:
        raise ValueError(
            "num_embedding='piecewise_linear' needs bin_edges; pass "
            "bin_edges=MLP.compute_bin_edges(x_num_train, n_bins=...)"
        )
    if len(bin_edges) != n_num:
        raise ValueError(
            f"bin_edges must have one list per numeric feature, however: "
            f"len(bin_edges)={len(bin_edges)}, {n_num=}"
        )
    for f, edges in enumerate(bin_edges):
        e = np.asarray(edges, dtype=np.float64)
        if e.ndim != 1 or e.size < 2 or not np.all(np.isfinite(e)) or not np.all(np.diff(e) > 0):
            raise ValueError(
                f"bin_edges[{f}] must hold at least 2 finite, strictly increasing values, "
                f"however: {list(edges)}"
            )


def _check_inputs(x_num: Tensor, x_cat: Tensor, *, n_num: int, n_cat: int) -> None:
    if x_num.ndim != 2 or x_num.shape[1] != n_num:
        raise ValueError(f"x_num must have shape (B, {n_num}), however: {tuple(x_num.shape)}")
    if x_cat.ndim != 2 or x_cat.shape[1] != n_cat:
        raise ValueError(f"x_cat must have shape (B, {n_cat}), however: {tuple(x_cat.shape)}")
    if x_num.shape[0] != x_cat.shape[0]:
        raise ValueError(
            f"x_num and x_cat must have the same batch size, however: {x_num.shape[0]} and {x_cat.shape[0]}"
        )
