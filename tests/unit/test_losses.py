"""The losses of ``train.loss``: focal, BCE, weighted BCE, with label smoothing (training/losses.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ontime.config import load_params, section
from ontime.config.train import TrainConfig
from ontime.training.losses import BinaryLoss, balanced_pos_weight, focal_loss, make_loss, smooth_targets
from tests.conftest import REPO

LOGITS = torch.tensor([-3.0, -0.5, 0.0, 0.7, 2.5, 4.0], dtype=torch.float64)
TARGETS = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64)


def hand_focal(z: float, t: float, gamma: float, alpha: float | None) -> float:
    p = 1.0 / (1.0 + math.exp(-z))
    a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
    return -(t * a_pos * (1 - p) ** gamma * math.log(p) + (1 - t) * a_neg * p**gamma * math.log(1 - p))


@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_equals_a_hand_computation(gamma: float, alpha: float | None) -> None:
    expected = np.mean(
        [hand_focal(z, t, gamma, alpha) for z, t in zip(LOGITS.tolist(), TARGETS.tolist(), strict=True)]
    )
    got = focal_loss(LOGITS, TARGETS, gamma=gamma, alpha=alpha)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, abs=1e-12, rel=0)


def test_focal_with_gamma_zero_is_bce() -> None:
    bce = nn.BCEWithLogitsLoss()(LOGITS, TARGETS)
    assert focal_loss(LOGITS, TARGETS, gamma=0.0).item() == pytest.approx(bce.item(), abs=1e-12, rel=0)
    loss = BinaryLoss("focal", gamma=0.0)
    assert loss(LOGITS, TARGETS).item() == pytest.approx(bce.item(), abs=1e-12, rel=0)


def test_focal_weighs_easy_rows_less_than_bce() -> None:
    easy = torch.tensor([4.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    hard = torch.tensor([-1.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    ratio_easy = focal_loss(*easy, gamma=2.0) / nn.functional.binary_cross_entropy_with_logits(*easy)
    ratio_hard = focal_loss(*hard, gamma=2.0) / nn.functional.binary_cross_entropy_with_logits(*hard)
    assert ratio_easy < 1e-3 < 0.5 < ratio_hard < 1


@pytest.mark.parametrize("name", ["bce", "weighted_bce", "focal"])
def test_label_smoothing_is_the_loss_on_smoothed_targets(name: str) -> None:
    s = 0.1
    smoothed = TARGETS * (1 - s) + s / 2
    assert torch.equal(smooth_targets(TARGETS, s), smoothed)
    assert smoothed.min().item() == pytest.approx(0.05)
    assert smoothed.max().item() == pytest.approx(0.95)
    pw = 3.0 if name == "weighted_bce" else None
    got = BinaryLoss(name, pos_weight=pw, gamma=1.5, label_smoothing=s)(LOGITS, TARGETS)
    plain = BinaryLoss(name, pos_weight=pw, gamma=1.5)(LOGITS, smoothed)
    assert got.item() == pytest.approx(plain.item(), abs=1e-12, rel=0)
    if name == "bce":
        expected = nn.BCEWithLogitsLoss()(LOGITS, smoothed)
        assert got.item() == pytest.approx(expected.item(), abs=1e-12, rel=0)


def test_weighted_bce_is_bce_with_pos_weight() -> None:
    y = np.array([0, 0, 0, 1, 0, 1, 0, 0], dtype=np.float32)
    loss = make_loss("weighted_bce", y, gamma=2.0, alpha=None, label_smoothing=0.0)
    assert balanced_pos_weight(y) == 3.0
    expected = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(3.0, dtype=torch.float64))(LOGITS, TARGETS)
    assert loss(LOGITS, TARGETS).item() == pytest.approx(expected.item(), abs=1e-12, rel=0)
    # bce has no weight at all: pos_weight only goes with weighted_bce
    bce = make_loss("bce", y, gamma=2.0, alpha=None, label_smoothing=0.0)
    assert bce.pos_weight is None
    assert bce(LOGITS, TARGETS).item() == pytest.approx(
        nn.BCEWithLogitsLoss()(LOGITS, TARGETS).item(), abs=1e-12
    )


@pytest.mark.parametrize("name", ["bce", "weighted_bce", "focal"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_are_finite_for_extreme_logits(name: str, smoothing: float, dtype: torch.dtype) -> None:
    logits = torch.tensor([-50.0, -50.0, 50.0, 50.0, 0.0], dtype=dtype, requires_grad=True)
    targets = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0], dtype=dtype)
    pw = 4.0 if name == "weighted_bce" else None
    for gamma in (0.0, 0.5, 2.0):
        logits.grad = None
        loss = BinaryLoss(name, pos_weight=pw, gamma=gamma, label_smoothing=smoothing)(logits, targets)
        loss.backward()
        assert torch.isfinite(loss), (name, gamma)
        assert logits.grad is not None
        assert torch.isfinite(logits.grad).all(), (name, gamma, logits.grad)
    # the confidently wrong rows get a gradient that pushes them the right way
    assert logits.grad[1] < 0 < logits.grad[2]


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="loss must be one of"):
        BinaryLoss("hinge")
    with pytest.raises(ValueError, match="pos_weight goes with weighted_bce only"):
        BinaryLoss("bce", pos_weight=2.0)
    with pytest.raises(ValueError, match="both classes"):
        balanced_pos_weight(np.ones(5))


def test_the_committed_params_choose_a_loss() -> None:
    cfg = section(load_params(str(REPO / "params.yaml")), "train", TrainConfig)
    assert cfg.loss == "bce"
    assert (cfg.focal_gamma, cfg.focal_alpha, cfg.label_smoothing) == (2.0, None, 0.0)
    assert "class_weight" not in TrainConfig.model_fields
