"""The ``train`` section: optimisation settings shared by train and finetune."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ontime.config import StrictModel


class TrainConfig(StrictModel):
    """Optimisation settings shared by train and finetune."""

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    eval_batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    l1: float = Field(ge=0)
    warmup_epochs: float = Field(ge=0)
    min_lr_ratio: float = Field(ge=0, le=1)
    grad_clip: float = Field(ge=0, description="max gradient norm; 0 disables clipping")
    loss: Literal["bce", "weighted_bce", "focal"] = Field(
        description="bce | weighted_bce (positives x negatives/positives of the training rows) | focal"
    )
    focal_gamma: float = Field(ge=0, description="focal: down-weights easy rows; 0 = BCE")
    focal_alpha: float | None = Field(
        gt=0, lt=1, description="focal: weight of positives (1 - alpha of negatives); null = none"
    )
    label_smoothing: float = Field(ge=0, lt=1, description="targets become y (1 - s) + s / 2; 0 = off")
    noise_std: float = Field(ge=0, description="Gaussian noise on scaled numeric features")
    mask_prob: float = Field(ge=0, lt=1, description="probability of masking each feature value")
    patience: int = Field(ge=1, description="epochs without a better validation ROC AUC")
    device: Literal["auto", "cpu", "cuda"]
    threads: int = Field(ge=1)
    bagging_seeds: int = Field(ge=1, description="models of seeds seed, seed+1, ... averaged")
    refit: bool = Field(
        default=True,
        description="once early stopping chose the epochs, train again from the same initial weights "
        "on train + train_valid for those epochs, same schedule (the validation score stays the first fit's)",
    )
