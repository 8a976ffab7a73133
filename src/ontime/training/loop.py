"""The training loop shared by train and finetune: deterministic, resumable, optionally distributed.

Determinism: every epoch reseeds torch from (seed, epoch) and draws its own batch order, so an epoch
run after a resume is the same computation as without the interruption. Checkpoints (weights, best
weights, optimizer state as safetensors; counters and curves as JSON) are written atomically at the
end of every epoch; a run whose fingerprint matches the checkpoint's resumes. The fingerprint covers
the params, the input files' bytes, the number of processes and the code (every ``.py`` file of the
``ontime`` package, see ``code_hash``): after any code change a run starts afresh instead of resuming
a run of other code. Checkpoint folders are scratch space for resuming after an interruption, not
pipeline outputs.

``dvc repro -f -s train`` (or ``finetune``) with the same code, params and data as a finished run
whose checkpoint is still there resumes that finished run: it trains no epoch and writes the same model
and curves again, quickly (the log says so). ``ONTIME_FRESH=1 dvc repro -f -s train`` removes the
stage's checkpoint first and retrains from scratch (as does deleting ``checkpoints/train``); on one
machine that gives the same weights, so ``dvc.lock`` stays true. An environment variable, not a
param, on purpose: it changes how the result is computed, never the result.

Ctrl-C: a checkpoint being written is finished first; the run then stops with ``Interrupted``, one
line naming the epoch whose checkpoint is on disk; the same command resumes from it.

Distributed: under ``torchrun`` each process trains on its shard of every epoch's batch order with
DDP (gloo on CPU, nccl on CUDA); each evaluates the whole validation set, so early stopping agrees
everywhere; rank 0 alone writes. torchrun starts its workers in their own sessions, so Ctrl-C reaches
torchrun alone, which stops them (SIGTERM): nothing waits on a rank that left; the checkpoint on disk
is whole (written atomically) and resumes as above.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from ontime.candidates.torch_model import predict_logits, sigmoid, state_dict_cpu
from ontime.config.train import TrainConfig
from ontime.errors import ConfigError, DataError, Interrupted, OntimeError
from ontime.io import read_json, write_json
from ontime.models.roles import Role, parameter_roles
from ontime.training.losses import make_loss

log = logging.getLogger(__name__)

FRESH_ENV = "ONTIME_FRESH"  # 1: remove the stage's checkpoint and train from scratch


class TrainingError(OntimeError):
    """Training cannot go on (a NaN loss, an unusable split)."""


# ------------------------------------------------------------------------------------ runtime ---
@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True)`` without its first step, ``import
    torch._inductor.config`` (for ``torch.compile``'s flag, which nothing here uses): that import
    pulls in Inductor and Dynamo, 1.8 s of every training process's start on 2 cores. The flag is
    still set when Inductor is already loaded."""
    torch._C._set_deterministic_algorithms(True, warn_only=False)
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        setattr(inductor, "deterministic", True)  # noqa: B010 (a module attribute mypy cannot see)


def setup_runtime(device: str, threads: int) -> Runtime:
    """Pick the device, fix threads, enable deterministic algorithms, join a torchrun group."""
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is cuda, but no CUDA device is visible; use auto or cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    deterministic_algorithms()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    torch.set_num_threads(max(1, threads // world_size))
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Runtime(device=dev, rank=rank, world_size=world_size)


def barrier(rt: Runtime) -> None:
    if rt.distributed:
        dist.barrier()


def fresh_requested() -> bool:
    """Whether ``ONTIME_FRESH=1`` asks to ignore and remove the checkpoint (train from scratch)."""
    value = os.environ.get(FRESH_ENV, "")
    if value not in ("", "0", "1"):
        raise ConfigError(
            f"{FRESH_ENV} is {value!r}; set it to 1 to retrain from scratch, or unset it (or 0) to resume"
        )
    return value == "1"


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold Ctrl-C until the block is done, then raise it: a checkpoint being written gets finished.

    Only where Python's own SIGINT handler is in place (the main thread of a plain run)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt


# --------------------------------------------------------------------------------------- data ---
@dataclass(frozen=True)
class Arrays:
    """Model inputs. Shape: x_num (n, d_num) float32, x_cat (n, n_cat) int64, y (n,) float32."""

    x_num: np.ndarray
    x_cat: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.y) == 0:
            raise TrainingError("a training or validation part has no rows; widen split.windows")


# ------------------------------------------------------------------------------------ helpers ---
def lr_factor(step: int, *, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total`` steps."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def augment(
    x_num: torch.Tensor, x_cat: torch.Tensor, *, n_scaled: int, noise_std: float, mask_prob: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian noise on the scaled numeric columns; random masking to 0 (mean / unknown slot)."""
    if noise_std > 0 and n_scaled:
        noise = torch.zeros_like(x_num)
        noise[:, :n_scaled] = torch.randn_like(x_num[:, :n_scaled]) * noise_std
        x_num = x_num + noise
    if mask_prob > 0:
        x_num = x_num.masked_fill(torch.rand_like(x_num) < mask_prob, 0.0)
        x_cat = x_cat.masked_fill(torch.rand(x_cat.shape, device=x_cat.device) < mask_prob, 0)
    return x_num, x_cat


def evaluate_arrays(
    model: nn.Module, data: Arrays, *, batch_size: int, device: torch.device
) -> dict[str, float]:
    p = sigmoid(predict_logits(model, data.x_num, data.x_cat, batch_size=batch_size, device=device))
    y = data.y.astype(np.int64)
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
    return {"roc_auc": auc, "loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]))}


def parameter_groups(
    model: nn.Module, *, weight_decay: float, lr_scale: Mapping[Role, float] | None = None
) -> list[dict[str, Any]]:
    """AdamW groups from the roles the model declares (``models/roles.py``).

    Weight decay (and ``train.l1``, via the ``decay`` flag) applies to the weight matrices of the
    blocks and the head only: never to biases, norm weights, embeddings, per-feature biases or the
    CLS token. ``lr_scale`` multiplies the learning rate by role (discriminative fine-tuning; a role
    not named keeps 1). Frozen parameters are left out.
    """
    roles = parameter_roles(model)
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = (lr_scale or {}).get(roles.role_of(name), 1.0)
        groups.setdefault((name not in roles.no_decay, scale), []).append(param)
    return [
        {"params": ps, "weight_decay": weight_decay if decay else 0.0, "decay": decay, "lr_scale": s}
        for (decay, s), ps in sorted(groups.items())
    ]


def make_optimizer(
    model: nn.Module,
    cfg: TrainConfig,
    lr_scale: Mapping[Role, float] | None = None,
    *,
    desc: str = "train",
) -> torch.optim.AdamW:
    """AdamW over ``parameter_groups``; each group's lr is ``cfg.lr`` times its ``lr_scale``.

    That lr is the base a schedule (``make_schedule``) multiplies by its factor. Raises TrainingError
    when no parameter is trainable."""
    groups = parameter_groups(model, weight_decay=cfg.weight_decay, lr_scale=lr_scale)
    if not groups:
        raise TrainingError(f"{desc}: no trainable parameters (everything is frozen)")
    return torch.optim.AdamW([{**g, "lr": cfg.lr * g["lr_scale"]} for g in groups], lr=cfg.lr)


def make_schedule(
    opt: torch.optim.Optimizer, *, total: int, warmup: int, min_ratio: float, start_step: int = 0
) -> LambdaLR:
    """``lr_factor`` (warm-up, then cosine) over ``total`` steps, as a scheduler stepped once per batch.

    Each group's lr becomes its base lr times the factor of the step about to run: step
    ``start_step`` right away (a resumed run picks up where the checkpointed one stopped), the next
    after each ``schedule.step()``. The base lr is the group's ``initial_lr`` if an earlier schedule
    set it, else its lr now."""
    for group in opt.param_groups:
        group.setdefault("initial_lr", group["lr"])

    def factor(step: int) -> float:
        return lr_factor(step, total=total, warmup=warmup, min_ratio=min_ratio)

    return LambdaLR(opt, factor, last_epoch=start_step - 1)


def schedule_factor(schedule: LambdaLR) -> float:
    """The factor of the step about to run (what the base lrs are multiplied by now)."""
    return schedule.lr_lambdas[0](schedule.last_epoch)


# -------------------------------------------------------------------------------- checkpoints ---
@dataclass
class TrainingState:
    """Where a run stands after ``epoch`` (counted from 0): a checkpoint's ``state.json``.

    ``best_epoch`` is -1 and ``best_roc_auc`` -inf until an epoch had a validation ROC AUC;
    ``history`` holds one row per epoch run (``epoch``, ``train/loss``, ``valid/loss``,
    ``valid/roc_auc``, ``lr``)."""

    epoch: int
    best_epoch: int
    best_roc_auc: float
    bad_epochs: int
    history: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``state.json`` keys: epoch, best_epoch, best_roc_auc, bad_epochs, history."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainingState:
        """What ``to_json`` wrote (raises KeyError for a missing key)."""
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def _save_optimizer(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors = {}
    for idx, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"{idx}.{key}"] = torch.as_tensor(value).detach().to("cpu").contiguous().clone()
    return tensors


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    full = opt.state_dict()
    full["state"] = state
    opt.load_state_dict(full)


class Checkpoints:
    """``epoch-NNNN/`` folders and a ``latest.json`` pointer, each replaced atomically.

    A folder holds ``model.safetensors`` (the weights), ``best.safetensors`` (the best epoch's
    weights), ``optimizer.safetensors`` (the optimizer's state tensors) and ``state.json``
    (``TrainingState``); ``load`` restores what ``save`` wrote."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = folder
        self.fingerprint = fingerprint

    def latest(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest epoch's folder and its pointer, or None: no checkpoint, or one of another
        fingerprint (logged)."""
        pointer = self.folder / "latest.json"
        if not pointer.is_file():
            return None
        meta = read_json(pointer)
        path = self.folder / meta["folder"]
        if meta.get("fingerprint") != self.fingerprint or not path.is_dir():
            log.info("checkpoint in %s is for other inputs, params or code: starting afresh", self.folder)
            return None
        return path, meta

    def clear(self) -> int | None:
        """Remove what ``save`` writes (nothing else in the folder); return the removed epoch, if any."""
        pointer = self.folder / "latest.json"
        epoch = read_json(pointer).get("epoch") if pointer.is_file() else None
        pointer.unlink(missing_ok=True)  # first: never a pointer to a removed folder
        (self.folder / ".latest.json.tmp").unlink(missing_ok=True)
        for path in [*self.folder.glob("epoch-*"), *self.folder.glob(".epoch-*.tmp")]:
            shutil.rmtree(path, ignore_errors=True)
        return epoch

    def save(
        self,
        epoch: int,
        *,
        model: nn.Module,
        best: dict[str, torch.Tensor],
        opt: torch.optim.Optimizer,
        state: TrainingState,
    ) -> None:
        """Write ``epoch``'s checkpoint, point ``latest.json`` at it and remove older epochs."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:04d}"
        tmp = self.folder / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(state_dict_cpu(model), str(tmp / "model.safetensors"))
        save_file(best, str(tmp / "best.safetensors"))
        save_file(_save_optimizer(opt), str(tmp / "optimizer.safetensors"))
        write_json(tmp / "state.json", state.to_json())
        shutil.rmtree(self.folder / name, ignore_errors=True)
        tmp.rename(self.folder / name)
        pointer = self.folder / ".latest.json.tmp"
        write_json(pointer, {"folder": name, "epoch": epoch, "fingerprint": self.fingerprint})
        os.replace(pointer, self.folder / "latest.json")
        for old in self.folder.glob("epoch-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def load(
        self, path: Path, *, model: nn.Module, opt: torch.optim.Optimizer, device: torch.device
    ) -> tuple[dict[str, torch.Tensor], TrainingState]:
        """Restore the checkpoint in ``path`` (a folder ``latest`` returned): its weights into
        ``model`` and its optimizer state into ``opt``, both on ``device``. Returns the best weights
        (on the CPU) and the training state. ``model`` and ``opt`` must be built as when it was saved
        (same parameters, same groups)."""
        state = TrainingState.from_json(read_json(path / "state.json"))
        model.load_state_dict(load_file(str(path / "model.safetensors"), device=str(device)))
        best = load_file(str(path / "best.safetensors"))
        _load_optimizer(opt, load_file(str(path / "optimizer.safetensors"), device=str(device)))
        return best, state


# ------------------------------------------------------------------------------------- fitting ---
@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_roc_auc: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs in a row whose score is not above the best by more than
    ``min_delta`` (a NaN score never is). ``best_epoch`` is -1 and ``best`` -inf until one is."""

    patience: int
    min_delta: float = 1e-6
    best: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, score: float, epoch: int) -> bool:
        """Record ``epoch``'s score; return whether it is the new best."""
        if score > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


def train_one_epoch(
    net: nn.Module,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    schedule: LambdaLR,
    criterion: nn.Module,
    x_num: torch.Tensor,
    x_cat: torch.Tensor,
    y: torch.Tensor,
    *,
    epoch: int,
    seed: int,
    rt: Runtime,
    cfg: TrainConfig,
    n_scaled: int,
    desc: str = "train",
    span: str | None = None,
) -> tuple[float, float]:
    """Train epoch ``epoch`` (counted from 0) of ``cfg.epochs``: one ``opt`` and ``schedule`` step a batch.

    ``net`` is ``model`` or its DDP wrapper. Shapes: x_num (n, d_num) float32, x_cat (n, n_cat) int64,
    y (n,) float32, all rows (this rank trains on its shard of the epoch's batch order). Torch is
    reseeded from (seed, epoch), so the epoch is the same computation whenever it runs. ``train.l1``
    applies to the groups with weight decay. Returns the mean training loss over this rank's rows
    and the schedule's factor at the epoch's last step. Raises TrainingError when the loss is not
    finite. ``span`` ends the progress bar's text ("of 7" for a refit; default "(up to epochs)").
    """
    torch.manual_seed(seed * 1_000_003 + epoch)  # dropout and augmentation of this epoch
    gen = torch.Generator().manual_seed(seed * 7_919 + epoch)
    order = torch.randperm(len(y), generator=gen)[rt.rank :: rt.world_size]
    per_rank_batch = _per_rank_batch(cfg, rt)
    penalised = [p for g in opt.param_groups if g["decay"] for p in g["params"]]  # train.l1: as weight decay
    net.train()
    total_loss, seen, factor = 0.0, 0, schedule_factor(schedule)
    batches = range(0, len(order), per_rank_batch)
    with tqdm(  # closed (the line cleared) on Ctrl-C too, before the error's line
        batches,
        desc=f"{desc} epoch {epoch + 1} {span or f'(up to {cfg.epochs})'}",
        leave=False,
        disable=None if rt.is_main else True,
    ) as bar:
        for i, start in enumerate(bar):
            idx = order[start : start + per_rank_batch]
            xn, xc = x_num[idx].to(rt.device), x_cat[idx].to(rt.device)
            yb = y[idx].to(rt.device)
            xn, xc = augment(xn, xc, n_scaled=n_scaled, noise_std=cfg.noise_std, mask_prob=cfg.mask_prob)
            factor = schedule_factor(schedule)
            loss = criterion(net(xn, xc), yb)
            if cfg.l1 > 0:
                loss = loss + cfg.l1 * sum(p.abs().sum() for p in penalised)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"{desc}: the loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}; "
                    f"lower train.lr (now {cfg.lr}) or set train.grad_clip (now {cfg.grad_clip})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            schedule.step()
            total_loss += loss.item() * len(idx)
            seen += len(idx)
            if i % 20 == 0:
                bar.set_postfix(loss=f"{total_loss / seen:.4f}")
    return total_loss / max(seen, 1), factor


def _per_rank_batch(cfg: TrainConfig, rt: Runtime) -> int:
    return max(1, cfg.batch_size // rt.world_size)


@contextlib.contextmanager
def _live(live_dir: Path | None, rt: Runtime) -> Iterator[Any]:
    if live_dir is None or not rt.is_main:
        yield None
        return
    from dvclive import Live

    shutil.rmtree(live_dir, ignore_errors=True)
    with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None) as live:
        yield live


def _log_epoch(live: Any, row: dict[str, float]) -> None:
    if live is None:
        return
    # Sorted: dvclive's metrics.json keeps the order metrics were first logged, and a resumed run
    # replays rows read back from the checkpoint's JSON, whose keys are sorted.
    for key, value in sorted(row.items()):
        if key != "epoch":
            live.log_metric(key, value)
    live.next_step()


def fit(
    model: nn.Module,
    *,
    train: Arrays,
    valid: Arrays,
    cfg: TrainConfig,
    seed: int,
    rt: Runtime,
    n_scaled: int,
    checkpoint_dir: Path | None,
    fingerprint: str,
    live_dir: Path | None = None,
    lr_scale: Mapping[Role, float] | None = None,
    desc: str = "train",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    stop_after: int | None = None,
) -> FitResult:
    """Train ``model`` with AdamW, warm-up + cosine schedule, early stopping on validation ROC AUC.

    ``on_epoch(epoch, row)`` is called after each epoch's validation (``row`` holds ``valid/roc_auc``
    and the losses); it may raise to stop the run (hyperparameter search pruning). ``stop_after``:
    run only the first that many epochs of the ``cfg.epochs`` schedule and never stop early (a refit
    replaying the epochs an earlier run chose); the model then holds the last epoch's weights.
    """
    model.to(rt.device)
    y = train.y
    pos = float(y.sum())
    if pos == 0 or pos == len(y):
        raise TrainingError(f"{desc}: the training rows have one class; a classifier needs both")
    criterion = make_loss(
        cfg.loss,
        y,  # weighted_bce: the class balance of these (training) rows only
        gamma=cfg.focal_gamma,
        alpha=cfg.focal_alpha,
        label_smoothing=cfg.label_smoothing,
    ).to(rt.device)
    opt = make_optimizer(model, cfg, lr_scale, desc=desc)
    net: nn.Module = model
    if rt.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
        )

    steps_per_epoch = math.ceil(math.ceil(len(y) / rt.world_size) / _per_rank_batch(cfg, rt))
    ckpt = Checkpoints(checkpoint_dir, fingerprint) if checkpoint_dir is not None else None
    fresh = fresh_requested() if ckpt else False  # (a tune trial has no checkpoint to remove)
    log.info(
        "%s: %s; %s",
        desc,
        _plan(cfg)
        if stop_after is None
        else f"the first {stop_after} epochs of the {cfg.epochs}-epoch schedule, no early stopping",
        f"checkpoints in {checkpoint_dir} (an interrupted run resumes)" if ckpt else "no checkpoints",
    )
    start_epoch, stopper = 0, EarlyStopping(cfg.patience)
    best_state = state_dict_cpu(model)
    history: list[dict[str, float]] = []
    resumed_from = None
    if ckpt and fresh and rt.is_main:
        removed = ckpt.clear()
        log.info(
            "%s: %s=1: %s; training from scratch",
            desc,
            FRESH_ENV,
            f"no checkpoint in {checkpoint_dir}"
            if removed is None
            else f"removed the checkpoint of epoch {removed + 1} in {checkpoint_dir}",
        )
    found = ckpt.latest() if ckpt and not fresh else None
    if ckpt and found:
        best_state, state = ckpt.load(found[0], model=model, opt=opt, device=rt.device)
        start_epoch, history, resumed_from = state.epoch + 1, state.history, state.epoch
        stopper = EarlyStopping(
            cfg.patience, best=state.best_roc_auc, best_epoch=state.best_epoch, bad_epochs=state.bad_epochs
        )
        if stopper.should_stop:
            start_epoch = cfg.epochs  # the checkpointed run had already stopped early
        log.info(
            "%s: resuming after epoch %d (up to %d) from the checkpoint in %s: %s; "
            "`%s=1 dvc repro -f -s %s` retrains from scratch instead",
            desc,
            resumed_from + 1,
            cfg.epochs,
            checkpoint_dir,
            f"continuing with epoch {start_epoch + 1}"
            if start_epoch < cfg.epochs
            else "that run had finished"
            + (" (stopped early)" if stopper.should_stop else "")
            + ", no epoch is left to train",
            FRESH_ENV,
            desc,
        )
    schedule = make_schedule(
        opt,
        total=steps_per_epoch * cfg.epochs,
        warmup=int(cfg.warmup_epochs * steps_per_epoch),
        min_ratio=cfg.min_lr_ratio,
        start_step=start_epoch * steps_per_epoch,
    )

    x_num, x_cat, y_t = (torch.from_numpy(a) for a in (train.x_num, train.x_cat, train.y))
    epoch = -1 if resumed_from is None else resumed_from  # the last epoch run, if no more runs
    current: int | None = None  # the epoch under way
    saved = resumed_from  # the epoch whose checkpoint is on disk
    try:
        with _live(live_dir, rt) as live:
            for row in history:  # a resumed run rebuilds its curves from the checkpoint
                _log_epoch(live, row)
            last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
            # a refit runs exactly its epochs ("of 7"); a fit may stop early ("(up to 30)")
            span = f"(up to {cfg.epochs})" if stop_after is None else f"of {last}"
            for epoch in range(start_epoch, last):
                current = epoch
                started = time.perf_counter()
                train_loss, factor = train_one_epoch(
                    net,
                    model,
                    opt,
                    schedule,
                    criterion,
                    x_num,
                    x_cat,
                    y_t,
                    epoch=epoch,
                    seed=seed,
                    rt=rt,
                    cfg=cfg,
                    n_scaled=n_scaled,
                    desc=desc,
                    span=span,
                )
                metrics = evaluate_arrays(model, valid, batch_size=cfg.eval_batch_size, device=rt.device)
                row = {
                    "epoch": float(epoch),
                    "train/loss": train_loss,
                    "valid/loss": metrics["loss"],
                    "valid/roc_auc": metrics["roc_auc"],
                    "lr": cfg.lr * factor,
                }
                history.append(row)
                _log_epoch(live, row)
                if on_epoch is not None:
                    on_epoch(epoch, row)
                if stopper.update(metrics["roc_auc"], epoch):
                    best_state = state_dict_cpu(model)
                log.info(
                    "%s epoch %d %s: train loss %.4f, valid loss %.4f, valid ROC AUC %.4f (best %.4f) %.1fs",
                    desc,
                    epoch + 1,
                    span,
                    row["train/loss"],
                    metrics["loss"],
                    metrics["roc_auc"],
                    stopper.best,
                    time.perf_counter() - started,
                )
                if ckpt:
                    with _sigint_held():  # Ctrl-C now still leaves this epoch's checkpoint
                        if rt.is_main:
                            state = TrainingState(
                                epoch, stopper.best_epoch, stopper.best, stopper.bad_epochs, history
                            )
                            ckpt.save(epoch, model=model, best=best_state, opt=opt, state=state)
                        saved = epoch
                barrier(rt)
                if stopper.should_stop and stop_after is None:
                    log.info(
                        "%s: early stop after epoch %d (up to %d): no better validation ROC AUC "
                        "for %d epochs",
                        desc,
                        epoch + 1,
                        cfg.epochs,
                        cfg.patience,
                    )
                    break
    except KeyboardInterrupt:
        # One line for the CLI instead of a traceback: where it stopped and how to go on.
        if not rt.is_main:  # rank 0 alone writes, so it alone knows which checkpoint is on disk
            raise Interrupted(f"{desc}: interrupted (rank {rt.rank}; rank 0 names the checkpoint)") from None
        raise Interrupted(
            _interrupted(
                desc, epoch=current, saved=saved, epochs=cfg.epochs, folder=checkpoint_dir, fresh=fresh
            )
        ) from None
    if stopper.best_epoch < 0:
        raise TrainingError(
            f"{desc}: validation ROC AUC was never defined; does the validation part have both classes?"
        )
    return FitResult(best_state, stopper.best_epoch, stopper.best, epoch + 1, history, resumed_from)


def _plan(cfg: TrainConfig) -> str:
    if cfg.patience < cfg.epochs:
        stopping = f"early stopping after {cfg.patience} without a better validation ROC AUC"
    else:
        stopping = f"no early stopping (patience {cfg.patience} is not below the epochs)"
    return f"up to {cfg.epochs} epochs, {stopping}"


def _interrupted(
    desc: str, *, epoch: int | None, saved: int | None, epochs: int, folder: Path | None, fresh: bool
) -> str:
    """The one line an interrupted run ends with (epochs count from 1 here, from 0 in the loop)."""
    if epoch is not None and epoch != saved:
        when = f"during epoch {epoch + 1} (up to {epochs})"
    elif saved is not None:
        when = f"after epoch {saved + 1} (up to {epochs})"  # Ctrl-C held while its checkpoint was written
    else:
        when = "before its first epoch"
    if folder is None:
        return f"{desc}: interrupted {when}; nothing is checkpointed: run it again to start over"
    if saved is None:
        return f"{desc}: interrupted {when}, before a checkpoint: re-run `dvc repro` (or the same command)"
    command = f"the same command without {FRESH_ENV}=1" if fresh else "the same command"
    return (
        f"{desc}: interrupted {when}; the checkpoint of epoch {saved + 1} is in {folder}: "
        f"re-run `dvc repro` (or {command}) to resume from it"
    )


def code_hash(root: Path | None = None) -> str:
    """sha256 over the relative path and bytes of every ``.py`` file under ``root`` (default: the
    installed ``ontime`` package), in path order. Coarse on purpose: an edit anywhere in the package
    restarts training from scratch, which is slower than needed at worst, never wrong."""
    import hashlib

    import ontime

    root = Path(ontime.__file__).parent if root is None else root
    digest = hashlib.sha256()
    for rel in sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py")):
        data = (root / rel).read_bytes()
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def fingerprint(*, params: dict[str, Any], files: list[Path], world_size: int) -> str:
    """What a checkpoint was made from: params, input file contents, number of processes, code."""
    import hashlib

    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    digest.update(str(world_size).encode())
    digest.update(code_hash().encode())
    for path in files:
        if not path.is_file():
            raise DataError(f"{path}: input not found; run the earlier stages (dvc repro)")
        digest.update(path.read_bytes())
    return digest.hexdigest()
