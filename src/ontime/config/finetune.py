"""The ``finetune`` section: the strategy and its own optimisation settings (the rest: ``train``)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from ontime.config import StrictModel

Strategy = Literal["full", "head", "frozen_embeddings", "discriminative", "adapter"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)  # the fine-tune strategies


def check_strategies(names: list[str]) -> list[str]:
    """``names`` when each is a fine-tune strategy (a config validator's check)."""
    bad = [s for s in names if s not in STRATEGIES]
    if bad:
        raise ValueError(f"{bad}: not a fine-tune strategy; use {', '.join(STRATEGIES)}")
    return names


class FinetuneConfig(StrictModel):
    """Adapting the trained model to the recent window; other settings come from ``train``."""

    strategy: Strategy
    lr: float = Field(gt=0)
    epochs: int = Field(ge=1)
    patience: int = Field(ge=1)
    warmup_epochs: float = Field(ge=0)
    layer_lr_decay: float = Field(
        gt=0, le=1, description="discriminative: lr x decay for blocks, x decay^2 for embeddings"
    )
    replay: float = Field(
        ge=0, description="train-window rows mixed in, as a multiple of the fine-tune rows (0 = none)"
    )
    refit_epochs: int = Field(
        ge=0,
        description="after early stopping, this many more epochs on the fine-tune rows plus "
        "finetune_valid, same settings (0 = none); validation answers come from before them",
    )
    adapter_rank: int = Field(
        default=8, ge=1, description="adapter: bottleneck width of the adapter added after each block"
    )
    adapter_head: bool = Field(
        default=True, description="adapter: the head learns too (false: only the adapters learn)"
    )
