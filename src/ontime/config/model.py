"""The ``model`` section, typed by its ``name``: the MLP or the FT-Transformer (``conf/model/``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ontime.config import StrictModel, section
from ontime.errors import ConfigError


class MLPConfig(StrictModel):
    name: Literal["mlp"]
    d_embedding_cat: int = Field(ge=1)
    d_block: int = Field(ge=1)
    n_blocks: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    num_embedding: Literal["none", "periodic", "piecewise_linear"]
    d_num_embedding: int = Field(ge=1)
    n_frequencies: int = Field(ge=1)
    frequency_scale: float = Field(gt=0)
    n_bins: int = Field(ge=2)


class FTTransformerConfig(StrictModel):
    name: Literal["ft_transformer"]
    d_token: int = Field(ge=1)
    n_blocks: int = Field(ge=1)
    n_heads: int = Field(ge=1)
    attention_dropout: float = Field(ge=0, lt=1)
    ffn_d_hidden_factor: float = Field(gt=0)
    ffn_dropout: float = Field(ge=0, lt=1)
    residual_dropout: float = Field(ge=0, lt=1)
    ffn_activation: Literal["reglu", "gelu"]


ModelConfig = MLPConfig | FTTransformerConfig
MODEL_CONFIGS: dict[str, type[MLPConfig] | type[FTTransformerConfig]] = {
    "mlp": MLPConfig,
    "ft_transformer": FTTransformerConfig,
}


def model_section(params: dict[str, Any], *, source: str = "params") -> ModelConfig:
    """The ``model`` section, typed by its ``name`` (the Hydra group ``conf/model/<name>.yaml``)."""
    name = (params.get("model") or {}).get("name")
    if name not in MODEL_CONFIGS:
        raise ConfigError(
            f"{source}: model.name {name!r} is not a known model; use one of {sorted(MODEL_CONFIGS)} "
            "(for example `dvc exp run -S model=ft_transformer`)"
        )
    return section(params, "model", MODEL_CONFIGS[name], source=source)
