"""Training losses of the neural models, on logits: ``train.loss`` picks one, train and finetune alike.

- ``bce``: binary cross-entropy.
- ``weighted_bce``: BCE with the positives weighted by negatives / positives of the training rows
  (``nn.BCEWithLogitsLoss(pos_weight=...)``): both classes weigh the same in total.
- ``focal``: focal loss (Lin et al., 2017), ``-alpha_t (1 - p_t)^gamma log p_t``: easy, confidently
  right rows count less. ``train.focal_gamma`` (0 = BCE); ``train.focal_alpha`` weighs positives by
  alpha and negatives by 1 - alpha (null: no weighting).

``train.label_smoothing`` s applies to all three: the targets become ``y (1 - s) + s / 2``. With
soft targets t the focal loss is ``-[t alpha (1 - p)^gamma log p + (1 - t)(1 - alpha) p^gamma
log(1 - p)]``, which is BCE on t for gamma 0 and no alpha. Everything is computed from
``logsigmoid``, so gradients stay finite for any finite logit.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

LossName = Literal["bce", "weighted_bce", "focal"]
LOSSES: tuple[str, ...] = get_args(LossName)


def smooth_targets(targets: Tensor, label_smoothing: float) -> Tensor:
    """``targets (1 - s) + s / 2``: 0 and 1 move towards 1/2 by ``s / 2``."""
    if label_smoothing == 0.0:
        return targets
    return targets * (1.0 - label_smoothing) + label_smoothing / 2.0


def focal_loss(logits: Tensor, targets: Tensor, *, gamma: float, alpha: float | None = None) -> Tensor:
    """Mean focal loss of ``logits`` against (possibly soft) ``targets`` in [0, 1].

    Shape:
        logits: (B,); targets: (B,); output: scalar.
    """
    log_p = F.logsigmoid(logits)  # log p
    log_q = F.logsigmoid(-logits)  # log (1 - p)
    pos = targets * torch.exp(gamma * log_q) * log_p  # t (1 - p)^gamma log p
    neg = (1.0 - targets) * torch.exp(gamma * log_p) * log_q  # (1 - t) p^gamma log (1 - p)
    if alpha is not None:
        pos, neg = alpha * pos, (1.0 - alpha) * neg
    return -(pos + neg).mean()


class BinaryLoss(nn.Module):
    """One of `LOSSES` with label smoothing; called as ``loss(logits, targets)``, the batch mean.

    Args:
        name: ``bce``, ``weighted_bce`` or ``focal``.
        pos_weight: Weight of the positive term (``weighted_bce`` only).
        gamma: Focusing parameter (``focal`` only).
        alpha: Weight of the positives, 1 - alpha of the negatives (``focal`` only; None = none).
        label_smoothing: s in [0, 1): targets become ``y (1 - s) + s / 2``.
    """

    pos_weight: Tensor | None

    def __init__(
        self,
        name: LossName,
        *,
        pos_weight: float | None = None,
        gamma: float = 2.0,
        alpha: float | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if name not in LOSSES:
            raise ValueError(f"loss must be one of {list(LOSSES)}, however: {name=}")
        if (pos_weight is not None) != (name == "weighted_bce"):
            raise ValueError(f"pos_weight goes with weighted_bce only, however: {name=}, {pos_weight=}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), however: {label_smoothing=}")
        self.name = name
        self.gamma = gamma
        self.alpha = alpha
        self.label_smoothing = label_smoothing
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.tensor(pos_weight), persistent=False
        )

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        targets = smooth_targets(targets, self.label_smoothing)
        if self.name == "focal":
            return focal_loss(logits, targets, gamma=self.gamma, alpha=self.alpha)
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)


def balanced_pos_weight(y: np.ndarray) -> float:
    """Negatives / positives of the training labels ``y``: the weight that balances the classes."""
    pos = float(np.sum(y))
    if pos == 0 or pos == len(y):
        raise ValueError("balanced_pos_weight needs both classes in the training labels")
    return (len(y) - pos) / pos


def make_loss(
    name: LossName, y_train: np.ndarray, *, gamma: float, alpha: float | None, label_smoothing: float
) -> BinaryLoss:
    """The loss ``train.loss`` names; ``weighted_bce`` weighs by the training labels ``y_train`` only."""
    return BinaryLoss(
        name,
        pos_weight=balanced_pos_weight(y_train) if name == "weighted_bce" else None,
        gamma=gamma,
        alpha=alpha,
        label_smoothing=label_smoothing,
    )
