"""FT-Transformer: Gorishniy et al. (2021), "Revisiting Deep Learning Models for Tabular Data".

Every feature becomes a token: a numeric value `x` becomes `x * w_f + b_f`, a categorical code
looks up its column's embedding and adds `b_f`. A learnable CLS token is appended, the sequence
goes through `n_blocks` pre-norm Transformer blocks (attention and a ReGLU feed-forward layer,
each with a residual), and the head (LayerNorm -> ReLU -> Linear) reads the CLS token.

As in the paper, the first block has no LayerNorm before its attention: the tokenizer's output
goes in as it is.

With `adapter_rank > 0`, a zero-initialised residual adapter follows each block, applied to every
token (`adapters.py`): the structure the `adapter` fine-tuning strategy trains while everything
else stays fixed.

Parameter roles (`FTTransformer.parameter_roles`, see `roles.py`): the tokenizer and the CLS token
are embeddings, then the blocks, the adapters (if any) and the head. Weight decay applies to the
Linear weights of the blocks, the adapters and the head only (never to the tokenizer, the CLS
token, biases or LayerNorms).

Shapes use B for the batch, F for numeric features, C for categorical features, T = F + C + 1 for
tokens, H for heads, d for `d_token`.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ontime.models.adapters import adapter_stack
from ontime.models.mlp import _check_inputs, _check_sizes
from ontime.models.roles import ParameterRoles, roles_from_modules

FFNActivation = Literal["reglu", "gelu"]
FFN_ACTIVATIONS: tuple[str, ...] = get_args(FFNActivation)


# -------------------------------------------------------------------------------------------------
# tokenizer


class FeatureTokenizer(nn.Module):
    """Turns each numeric and categorical feature into a `d_token` vector.

    Categorical columns share one embedding table; `offsets` move each column's codes to its own
    rows. Codes must lie in `[0, cardinality)` of their column: larger ones would read the next
    column's rows (the Preprocessor never produces them).

    Shape:
        x_num: (B, F); x_cat: (B, C); output: (B, F + C, d).
    """

    cat_offsets: Tensor

    def __init__(self, *, n_num: int, cardinalities: list[int], d_token: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d_token)
        self.num_weight = nn.Parameter(torch.empty(n_num, d_token).uniform_(-bound, bound))
        self.num_bias = nn.Parameter(torch.empty(n_num, d_token).uniform_(-bound, bound))
        offsets = torch.tensor([0, *cardinalities[:-1]], dtype=torch.long).cumsum(0)
        self.register_buffer("cat_offsets", offsets[: len(cardinalities)])  # (C,)
        self.cat_embedding = nn.Embedding(sum(cardinalities), d_token)
        nn.init.uniform_(self.cat_embedding.weight, -bound, bound)
        self.cat_bias = nn.Parameter(torch.empty(len(cardinalities), d_token).uniform_(-bound, bound))

    def forward(self, x_num: Tensor, x_cat: Tensor) -> Tensor:
        num_tokens = x_num[..., None] * self.num_weight + self.num_bias  # (B, F, d)
        cat_tokens = self.cat_embedding(x_cat + self.cat_offsets) + self.cat_bias  # (B, C, d)
        return torch.cat([num_tokens, cat_tokens], dim=1)  # (B, F + C, d)


# -------------------------------------------------------------------------------------------------
# Transformer block


class MultiheadAttention(nn.Module):
    """Multi-head self-attention with dropout on the attention probabilities.

    Shape:
        input: (B, T, d); output: (B, T, d).
    """

    def __init__(self, *, d_token: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_token, 3 * d_token)
        self.out = nn.Linear(d_token, d_token)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)  # 3 x (B, T, d)
        q = q.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, H, T, d/H)
        k = k.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, H, T, d/H)
        v = v.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, H, T, d/H)
        attention = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.n_heads)  # (B, H, T, T)
        attention = self.dropout(F.softmax(attention, dim=-1))
        y = attention @ v  # (B, H, T, d/H)
        y = y.transpose(1, 2).contiguous().view(B, T, d)  # (B, T, d)
        return self.out(y)


class FeedForward(nn.Module):
    """Linear -> ReGLU (or GELU) -> Dropout -> Linear.

    Shape:
        input: (B, T, d); output: (B, T, d).
    """

    def __init__(self, *, d_token: int, d_hidden: int, dropout: float, activation: FFNActivation) -> None:
        super().__init__()
        self.activation = activation
        # ReGLU gates half of the first layer's output with the other half, so it is twice as wide.
        self.linear1 = nn.Linear(d_token, 2 * d_hidden if activation == "reglu" else d_hidden)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_hidden, d_token)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear1(x)  # (B, T, 2 * d_hidden) for ReGLU, (B, T, d_hidden) for GELU
        if self.activation == "reglu":
            a, b = x.chunk(2, dim=-1)  # 2 x (B, T, d_hidden)
            x = a * F.relu(b)  # (B, T, d_hidden)
        else:
            x = F.gelu(x)
        return self.linear2(self.dropout(x))  # (B, T, d)


class Block(nn.Module):
    """A pre-norm Transformer block: x + drop(attn(norm(x))), then x + drop(ffn(norm(x))).

    Shape:
        input: (B, T, d); output: (B, T, d).
    """

    def __init__(
        self,
        *,
        d_token: int,
        n_heads: int,
        attention_dropout: float,
        d_hidden: int,
        ffn_dropout: float,
        ffn_activation: FFNActivation,
        residual_dropout: float,
        attention_norm: bool,
    ) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(d_token) if attention_norm else nn.Identity()
        self.attention = MultiheadAttention(d_token=d_token, n_heads=n_heads, dropout=attention_dropout)
        self.ffn_norm = nn.LayerNorm(d_token)
        self.ffn = FeedForward(
            d_token=d_token, d_hidden=d_hidden, dropout=ffn_dropout, activation=ffn_activation
        )
        self.residual_dropout = nn.Dropout(residual_dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.residual_dropout(self.attention(self.attention_norm(x)))  # (B, T, d)
        x = x + self.residual_dropout(self.ffn(self.ffn_norm(x)))  # (B, T, d)
        return x


# -------------------------------------------------------------------------------------------------
# the model


class FTTransformer(nn.Module):
    """Feature Tokenizer + Transformer for binary classification.

    Args:
        n_num: Number of numeric features (columns of `x_num`); may be 0.
        cardinalities: Number of codes per categorical feature (columns of `x_cat`), including
            the unknown code 0, e.g. `Preprocessor.cardinalities`; may be empty.
        d_token: Token size; must be divisible by `n_heads`.
        n_blocks: Number of Transformer blocks.
        n_heads: Number of attention heads.
        attention_dropout: Dropout on the attention probabilities.
        ffn_d_hidden_factor: Hidden size of the feed-forward layer, as a multiple of `d_token`
            (the paper's default 4/3 with ReGLU).
        ffn_dropout: Dropout inside the feed-forward layer.
        residual_dropout: Dropout on each branch before it is added to the residual stream.
        ffn_activation: `"reglu"` (the paper's choice) or `"gelu"`.
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
        d_token: int = 64,
        n_blocks: int = 2,
        n_heads: int = 8,
        attention_dropout: float = 0.1,
        ffn_d_hidden_factor: float = 4 / 3,
        ffn_dropout: float = 0.1,
        residual_dropout: float = 0.0,
        ffn_activation: FFNActivation = "reglu",
        adapter_rank: int = 0,
    ) -> None:
        super().__init__()
        _check_sizes(n_num=n_num, cardinalities=cardinalities)
        for name, value in (("d_token", d_token), ("n_blocks", n_blocks), ("n_heads", n_heads)):
            if value < 1:
                raise ValueError(f"{name} must be positive, however: {name}={value}")
        if d_token % n_heads != 0:
            raise ValueError(
                f"d_token must be divisible by n_heads, however: {d_token=}, {n_heads=}; "
                f"pick d_token as a multiple of {n_heads}"
            )
        for name, p in (
            ("attention_dropout", attention_dropout),
            ("ffn_dropout", ffn_dropout),
            ("residual_dropout", residual_dropout),
        ):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), however: {name}={p}")
        d_hidden = int(d_token * ffn_d_hidden_factor)
        if d_hidden < 1:
            raise ValueError(
                f"ffn_d_hidden_factor * d_token must be at least 1, however: "
                f"{ffn_d_hidden_factor=}, {d_token=}"
            )
        if ffn_activation not in FFN_ACTIVATIONS:
            raise ValueError(
                f"ffn_activation must be one of {list(FFN_ACTIVATIONS)}, however: {ffn_activation=}"
            )

        self.n_num = n_num
        self.n_cat = len(cardinalities)
        self.tokenizer = FeatureTokenizer(n_num=n_num, cardinalities=cardinalities, d_token=d_token)
        bound = 1.0 / math.sqrt(d_token)
        self.cls_token = nn.Parameter(torch.empty(d_token).uniform_(-bound, bound))
        self.blocks = nn.ModuleList(
            Block(
                d_token=d_token,
                n_heads=n_heads,
                attention_dropout=attention_dropout,
                d_hidden=d_hidden,
                ffn_dropout=ffn_dropout,
                ffn_activation=ffn_activation,
                residual_dropout=residual_dropout,
                attention_norm=i > 0,
            )
            for i in range(n_blocks)
        )
        self.head = nn.Sequential(nn.LayerNorm(d_token), nn.ReLU(), nn.Linear(d_token, 1))
        # Built last, so that the other weights are initialised as without adapters.
        self.adapters = adapter_stack(n_blocks, d_token, adapter_rank)

    def parameter_roles(self) -> ParameterRoles:
        """Embeddings: `tokenizer` and `cls_token`; blocks: `blocks`; adapters: `adapters` (if
        any); head: `head`."""
        return roles_from_modules(
            self,
            embeddings=[self.tokenizer, self.cls_token],
            blocks=[self.blocks],
            adapters=[self.adapters],
            head=[self.head],
        )

    def forward(self, x_num: Tensor, x_cat: Tensor) -> Tensor:
        """Returns one logit per row.

        Shape:
            x_num: (B, n_num) float32; x_cat: (B, n_cat) int64; output: (B,).
        """
        _check_inputs(x_num, x_cat, n_num=self.n_num, n_cat=self.n_cat)
        x = self.tokenizer(x_num, x_cat)  # (B, F + C, d)
        cls = self.cls_token.expand(x.shape[0], 1, -1)  # (d,) -> (B, 1, d)
        x = torch.cat([x, cls], dim=1)  # (B, T, d), CLS last
        for i, block in enumerate(self.blocks):
            x = block(x)  # (B, T, d)
            if self.adapters is not None:
                x = self.adapters[i](x)  # (B, T, d)
        return self.head(x[:, -1]).squeeze(-1)  # (B, d) -> (B, 1) -> (B,)
