"""The parts of the training loop (training/loop.py) alone: the learning-rate schedule, one epoch, early
stopping, checkpoints and the training state; and ``fit`` built from them. Tiny models on the CPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ontime.config.train import TrainConfig
from ontime.models.mlp import MLP
from ontime.models.roles import parameter_roles
from ontime.training import loop
from ontime.training.loop import (
    Arrays,
    Checkpoints,
    EarlyStopping,
    Runtime,
    TrainingError,
    TrainingState,
    fit,
    make_optimizer,
    make_schedule,
    train_one_epoch,
)
from ontime.training.losses import make_loss

CPU = Runtime(torch.device("cpu"))
STATE_KEYS = {"epoch", "best_epoch", "best_roc_auc", "bad_epochs", "history"}  # state.json as written


def config(**overrides: Any) -> TrainConfig:
    return TrainConfig(
        **{
            "epochs": 3,
            "batch_size": 16,
            "eval_batch_size": 64,
            "lr": 3e-3,
            "weight_decay": 0.01,
            "l1": 1e-5,
            "warmup_epochs": 1.0,
            "min_lr_ratio": 0.1,
            "grad_clip": 1.0,
            "loss": "bce",
            "focal_gamma": 2.0,
            "focal_alpha": None,
            "label_smoothing": 0.0,
            "noise_std": 0.1,
            "mask_prob": 0.05,
            "patience": 3,
            "device": "cpu",
            "threads": 1,
            "bagging_seeds": 1,
            **overrides,
        }
    )


def tiny_model(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(n_num=3, cardinalities=[4, 4], d_block=8, n_blocks=2, dropout=0.1)


def arrays(n: int, seed: int) -> Arrays:
    rng = np.random.default_rng(seed)
    x_num = rng.normal(size=(n, 3)).astype(np.float32)
    x_cat = rng.integers(0, 4, size=(n, 2)).astype(np.int64)
    y = ((x_num[:, 0] + rng.normal(size=n)) > 0).astype(np.float32)
    return Arrays(x_num, x_cat, y)


def lrs_of(opt: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LambdaLR, steps: int) -> list:
    """Each group's lr at each of ``steps`` steps, stepping as the loop does (optimizer, then schedule)."""
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()  # no gradients: moves nothing
        schedule.step()
    return seen


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- schedule ---------------------------------------------------------------------------------------
def test_schedule_warms_up_linearly_then_decays_by_cosine_to_min_ratio() -> None:
    cfg = config(lr=0.01)
    opt = make_optimizer(tiny_model(), cfg)
    total, warmup, min_ratio = 12, 4, 0.1
    schedule = make_schedule(opt, total=total, warmup=warmup, min_ratio=min_ratio)
    factors = [row[0] / cfg.lr for row in lrs_of(opt, schedule, total + 1)]
    assert factors[:warmup] == pytest.approx([0.25, 0.5, 0.75, 1.0], rel=1e-12)
    expected = [
        min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
        for s in range(warmup, total + 1)
    ]
    assert factors[warmup:] == pytest.approx(expected, rel=1e-12)
    assert factors[total] == pytest.approx(min_ratio, rel=1e-12)  # at the end: min_ratio, not 0
    assert all(a >= b for a, b in zip(factors[warmup:], factors[warmup + 1 :], strict=False))


def test_a_resumed_schedule_gives_the_lrs_of_an_uninterrupted_one() -> None:
    cfg, scale = config(), {"head": 0.5, "embeddings": 0.1}
    args = {"total": 20, "warmup": 5, "min_ratio": 0.05}
    opt = make_optimizer(tiny_model(), cfg, scale)
    straight = lrs_of(opt, make_schedule(opt, **args), 20)
    for start in (0, 3, 5, 11):
        resumed_opt = make_optimizer(tiny_model(), cfg, scale)
        resumed = lrs_of(resumed_opt, make_schedule(resumed_opt, **args, start_step=start), 20 - start)
        assert resumed == straight[start:]
    assert len({row[0] for row in straight}) > 10  # the lr did change from step to step


def test_lr_scale_applies_per_group_as_the_old_formula() -> None:
    cfg, scale = config(lr=0.02), {"head": 0.5, "embeddings": 0.1}
    model = tiny_model()
    opt = make_optimizer(model, cfg, scale)
    roles = parameter_roles(model)
    role_of = {id(p): roles.role_of(name) for name, p in model.named_parameters()}
    args = {"total": 10, "warmup": 3, "min_ratio": 0.2}
    seen = lrs_of(opt, make_schedule(opt, **args), 10)
    assert {g["lr_scale"] for g in opt.param_groups} == {1.0, 0.5, 0.1}
    for step, row in enumerate(seen):
        factor = loop.lr_factor(step, **args)
        for group, lr in zip(opt.param_groups, row, strict=True):
            expected = scale.get(role_of[id(group["params"][0])], 1.0)
            assert {scale.get(role_of[id(p)], 1.0) for p in group["params"]} == {expected}
            assert lr == pytest.approx(cfg.lr * factor * expected, rel=1e-15, abs=0)


def test_make_optimizer_without_trainable_parameters_raises() -> None:
    model = tiny_model()
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(TrainingError, match=r"^finetune: no trainable parameters \(everything is frozen\)$"):
        make_optimizer(model, config(), desc="finetune")


# --- one epoch --------------------------------------------------------------------------------------
def run_epoch(epoch: int, *, seed: int = 3, criterion: nn.Module | None = None) -> tuple:
    cfg, data = config(), arrays(70, 0)
    model = tiny_model()
    opt = make_optimizer(model, cfg)
    steps = math.ceil(70 / cfg.batch_size)
    schedule = make_schedule(
        opt, total=steps * cfg.epochs, warmup=steps, min_ratio=0.1, start_step=epoch * steps
    )
    loss, factor = train_one_epoch(
        model,
        model,
        opt,
        schedule,
        criterion or make_loss("bce", data.y, gamma=0, alpha=None, label_smoothing=0),
        *(torch.from_numpy(a) for a in (data.x_num, data.x_cat, data.y)),
        epoch=epoch,
        seed=seed,
        rt=CPU,
        cfg=cfg,
        n_scaled=2,
    )
    return weights(model), loss, factor, schedule.last_epoch, steps


def test_one_epoch_is_deterministic_in_seed_and_epoch() -> None:
    first, loss, factor, step, steps = run_epoch(1)
    again, loss_again, _, _, _ = run_epoch(1)
    assert same_tensors(first, again)  # bit-identical
    assert loss == loss_again
    assert not same_tensors(first, weights(tiny_model()))  # it trained
    assert not same_tensors(first, run_epoch(2)[0])  # another epoch: another order, noise, dropout
    assert not same_tensors(first, run_epoch(1, seed=4)[0])
    assert step == 2 * steps  # one schedule step a batch
    assert factor == loop.lr_factor(2 * steps - 1, total=3 * steps, warmup=steps, min_ratio=0.1)
    assert math.isfinite(loss)
    assert loss > 0


class NanLoss(nn.Module):
    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (logits * float("nan")).mean()


def test_a_nan_loss_stops_the_epoch_with_a_hint() -> None:
    with pytest.raises(
        TrainingError, match=r"^train: the loss became nan at epoch 2, step 1; lower train.lr"
    ):
        run_epoch(1, criterion=NanLoss())


# --- early stopping ---------------------------------------------------------------------------------
def test_early_stopping_needs_more_than_min_delta_and_stops_after_patience() -> None:
    stop = EarlyStopping(patience=2, min_delta=1e-3)
    assert (stop.best, stop.best_epoch, stop.should_stop) == (-math.inf, -1, False)
    assert stop.update(0.70, 0)
    assert not stop.update(0.7005, 1)  # better, by no more than min_delta
    assert (stop.best, stop.best_epoch, stop.bad_epochs, stop.should_stop) == (0.70, 0, 1, False)
    assert stop.update(0.702, 2)  # resets the bad epochs
    assert (stop.best, stop.best_epoch, stop.bad_epochs) == (0.702, 2, 0)
    assert not stop.update(float("nan"), 3)  # an undefined ROC AUC never improves
    assert not stop.should_stop
    assert not stop.update(0.5, 4)
    assert stop.should_stop
    assert stop.bad_epochs == 2
    assert EarlyStopping(patience=1).min_delta == 1e-6  # the loop's rule


# --- training state ---------------------------------------------------------------------------------
def test_training_state_json_is_the_old_state_dict() -> None:
    history = [{"epoch": 0.0, "lr": 0.001, "train/loss": 0.6, "valid/loss": 0.5, "valid/roc_auc": 0.7}]
    old = {"epoch": 4, "best_epoch": 2, "best_roc_auc": 0.71, "bad_epochs": 2, "history": history}
    state = TrainingState.from_json(old)
    assert state == TrainingState(4, 2, 0.71, 2, history)
    assert state.to_json() == old
    assert set(state.to_json()) == STATE_KEYS
    assert TrainingState.from_json(json.loads(json.dumps(state.to_json()))) == state


# --- checkpoints ------------------------------------------------------------------------------------
def trained(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A model and its optimizer after a few steps (the optimizer has state)."""
    model = tiny_model(seed)
    opt = make_optimizer(model, config(), {"head": 0.5})
    for _ in range(3):
        loss = model(torch.randn(8, 3), torch.randint(0, 4, (8, 2))).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


def test_a_checkpoint_restores_what_was_saved(tmp_path: Path) -> None:
    model, opt = trained(0)
    best = {k: v + 1 for k, v in weights(model).items()}
    history = [{"epoch": float(e), "valid/roc_auc": 0.6 + e / 10} for e in range(3)]
    state = TrainingState(epoch=2, best_epoch=1, best_roc_auc=0.7, bad_epochs=1, history=history)
    Checkpoints(tmp_path, "fp").save(2, model=model, best=best, opt=opt, state=state)
    assert set(json.loads((tmp_path / "epoch-0002/state.json").read_text())) == STATE_KEYS

    other, other_opt = trained(1)  # other weights, other optimizer state
    assert not same_tensors(weights(other), weights(model))
    ckpt = Checkpoints(tmp_path, "fp")
    found = ckpt.latest()
    assert found is not None
    assert found[0] == tmp_path / "epoch-0002"
    assert found[1]["epoch"] == 2
    best_back, state_back = ckpt.load(found[0], model=other, opt=other_opt, device=torch.device("cpu"))
    assert same_tensors(weights(other), weights(model))
    assert same_tensors(best_back, best)
    assert state_back == state
    saved, restored = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert saved.keys() == restored.keys()
    assert len(saved) > 0
    for idx in saved:
        assert saved[idx].keys() == restored[idx].keys() == {"step", "exp_avg", "exp_avg_sq"}
        assert all(torch.equal(saved[idx][k], restored[idx][k]) for k in saved[idx])


def test_a_checkpoint_of_another_fingerprint_is_not_resumed(tmp_path: Path) -> None:
    model, opt = trained(0)
    state = TrainingState(epoch=0, best_epoch=0, best_roc_auc=0.6, bad_epochs=0)
    Checkpoints(tmp_path, "fp").save(0, model=model, best=weights(model), opt=opt, state=state)
    assert Checkpoints(tmp_path, "fp").latest() is not None
    assert Checkpoints(tmp_path, "other").latest() is None
    assert Checkpoints(tmp_path / "none", "fp").latest() is None


# --- fit, from the parts ----------------------------------------------------------------------------
class Killed(BaseException):
    """Stands for a kill right after a checkpoint was written."""


def test_fit_logs_the_schedule_lr_and_resumes_to_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(epochs=4, patience=4)
    train, valid = arrays(90, 0), arrays(60, 1)
    args = {"train": train, "valid": valid, "cfg": cfg, "seed": 3, "rt": CPU, "n_scaled": 2}
    straight = fit(tiny_model(), **args, checkpoint_dir=tmp_path / "a", fingerprint="fp")
    steps = math.ceil(90 / cfg.batch_size)
    assert [row["lr"] for row in straight.history] == [
        cfg.lr
        * loop.lr_factor((e + 1) * steps - 1, total=4 * steps, warmup=steps, min_ratio=cfg.min_lr_ratio)
        for e in range(4)
    ]

    save = Checkpoints.save

    def save_then_die(self: Checkpoints, epoch: int, **kwargs: Any) -> None:
        save(self, epoch, **kwargs)
        if epoch == 1:
            raise Killed

    monkeypatch.setattr(Checkpoints, "save", save_then_die)
    with pytest.raises(Killed):
        fit(tiny_model(), **args, checkpoint_dir=tmp_path / "b", fingerprint="fp")
    monkeypatch.undo()
    resumed = fit(tiny_model(), **args, checkpoint_dir=tmp_path / "b", fingerprint="fp")
    assert resumed.resumed_from == 1
    assert resumed.history == straight.history
    assert (resumed.best_epoch, resumed.best_roc_auc, resumed.epochs_run) == (
        straight.best_epoch,
        straight.best_roc_auc,
        straight.epochs_run,
    )
    assert same_tensors(resumed.best_state, straight.best_state)


def test_stop_after_runs_exactly_those_epochs_without_early_stopping() -> None:
    """fit(stop_after=k): the first k epochs of the cfg.epochs schedule, never stopped early."""
    noise = arrays(128, 5)
    noise = Arrays(
        noise.x_num, noise.x_cat, np.random.default_rng(9).permutation(noise.y)
    )  # nothing to learn
    cfg = config(epochs=10, patience=1, warmup_epochs=0.0)
    result = fit(
        tiny_model(), train=noise, valid=arrays(64, 6), cfg=cfg, seed=1, rt=CPU, n_scaled=3,
        checkpoint_dir=None, fingerprint="x", stop_after=4,
    )  # fmt: skip
    assert result.epochs_run == 4
    assert len(result.history) == 4  # no early stop with patience 1, whatever validation does
    # the 4th epoch's lr is the 10-epoch schedule's (a 4-epoch schedule would be at its minimum)
    assert result.history[-1]["lr"] > cfg.lr * cfg.min_lr_ratio * 1.5


def test_setup_runtime_turns_on_deterministic_algorithms_without_importing_inductor() -> None:
    # torch.use_deterministic_algorithms imports torch._inductor (1.8 s of a process's start);
    # setup_runtime sets the same flag without it. In a fresh process: this one may have Inductor.
    code = (
        "import sys, torch\n"
        "from ontime.training.loop import setup_runtime\n"
        "assert not torch.are_deterministic_algorithms_enabled()\n"
        "setup_runtime('cpu', 1)\n"
        "print(torch.are_deterministic_algorithms_enabled(), 'torch._inductor' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]
