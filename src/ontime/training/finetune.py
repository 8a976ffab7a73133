"""finetune: adapt the trained model to the recent window (October-November by default).

Starts from the trained weights and preprocessing (categories unseen before map to the
out-of-vocabulary slot), trains on the ``finetune`` part with its own learning rate, epochs and early
stopping on ``finetune_valid``; everything else, the loss included, comes from ``train``.
Strategies act on the parameter roles each network declares (``models/roles.py``: embeddings,
blocks, adapters, head): ``full``; ``head`` (only the head learns); ``frozen_embeddings`` (the
embeddings stay fixed, blocks and head learn); ``discriminative`` (all learn, the head at ``lr``, the
blocks at ``lr * layer_lr_decay``, the embeddings at ``lr * layer_lr_decay**2``); ``adapter`` (the
structure changes: a zero-initialised residual bottleneck of width ``adapter_rank`` after each block,
``models/adapters.py``; only the adapters learn, and the head with ``adapter_head``; every trained
weight stays bit-identical, and the candidate's ``model.json`` carries ``adapter_rank`` so that it
loads and serves like any other). Resumes, restarts (``ONTIME_FRESH=1 dvc repro -f -s finetune``)
and stops on Ctrl-C as train does (``training/loop.py``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.distributed as dist
from torch import nn

from ontime import command
from ontime.candidates import CANDIDATE_FILE, VALID_PART
from ontime.candidates.torch_model import (
    TorchCandidate,
    build_model,
    load_torch_members,
    predict_logits,
    save_seed_bag,
    sigmoid,
)
from ontime.config import load_params, section, seed
from ontime.config.finetune import STRATEGIES, FinetuneConfig, Strategy
from ontime.config.train import TrainConfig
from ontime.errors import DataError
from ontime.io import atomic_outputs, read_json, write_json
from ontime.models.roles import Role, parameter_roles
from ontime.spec import FeatureSpec, mask_optional, read_part
from ontime.training.loop import Runtime, barrier, fingerprint, fit, setup_runtime
from ontime.training.train import arrays

log = logging.getLogger(__name__)
CPU = torch.device("cpu")

# The roles each strategy keeps fixed (``adapter`` also the head, with ``adapter_head: false``).
FROZEN_ROLES: dict[Strategy, frozenset[Role]] = {
    "full": frozenset(),
    "head": frozenset({"embeddings", "blocks"}),
    "frozen_embeddings": frozenset({"embeddings"}),
    "discriminative": frozenset(),
    "adapter": frozenset({"embeddings", "blocks"}),
}
assert tuple(FROZEN_ROLES) == STRATEGIES, "every strategy of FinetuneConfig keeps its roles here"


def frozen_roles(cfg: FinetuneConfig) -> frozenset[Role]:
    """The roles ``cfg.strategy`` keeps fixed."""
    fixed = FROZEN_ROLES[cfg.strategy]
    if cfg.strategy == "adapter" and not cfg.adapter_head:
        fixed |= {"head"}
    return fixed


def lr_scales(cfg: FinetuneConfig) -> dict[Role, float]:
    """Learning-rate multipliers by role: ``discriminative`` only (the others train at ``lr``)."""
    if cfg.strategy != "discriminative":
        return {}
    decay = cfg.layer_lr_decay
    return {"embeddings": decay**2, "blocks": decay, "adapters": 1.0, "head": 1.0}


def apply_strategy(model: nn.Module, cfg: FinetuneConfig) -> dict[Role, float]:
    """Freeze the roles the strategy keeps fixed (every other parameter learns); return the
    learning-rate scales by role.

    Raises:
        ValueError: strategy ``adapter`` on a network without adapters (add them with
            `with_adapters` first).
    """
    roles = parameter_roles(model)
    if cfg.strategy == "adapter" and not roles.names["adapters"]:
        raise ValueError(
            f"strategy adapter: {type(model).__name__} has no adapters; build it with with_adapters()"
        )
    fixed = frozen_roles(cfg)
    for name, param in model.named_parameters():
        param.requires_grad_(roles.role_of(name) not in fixed)
    return lr_scales(cfg)


def with_adapters(base: TorchCandidate, rank: int, *, seed_: int) -> TorchCandidate:
    """``base`` with a residual adapter of width ``rank`` after each block (``models/adapters.py``).

    The network is rebuilt from ``base``'s keyword arguments plus ``adapter_rank`` and given every
    trained weight of ``base``; the adapters start as the identity (their up-projection is zero), so
    the result predicts exactly as ``base`` does. The adapters' down-projections are drawn from
    ``seed_`` (the same on every run and every rank).

    Raises:
        DataError: ``base`` has adapters already.
        ValueError: the weights of ``base`` are not exactly those of the adapted network but its
            adapters.
    """
    if base.kwargs.get("adapter_rank", 0):
        raise DataError(
            f"{base.name}: has adapters already (adapter_rank={base.kwargs['adapter_rank']}); "
            "fine-tune the trained model (models/train) with strategy adapter instead"
        )
    kwargs = {**base.kwargs, "adapter_rank": rank}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_)
        model = build_model(base.architecture, kwargs)
    adapters = set(parameter_roles(model).names["adapters"])
    loaded = model.load_state_dict(base.model.state_dict(), strict=False)
    if loaded.unexpected_keys or set(loaded.missing_keys) != adapters:
        raise ValueError(
            f"{base.name}: the trained weights do not fit the adapted {base.architecture}: "
            f"unexpected {sorted(loaded.unexpected_keys)}, missing besides the adapters "
            f"{sorted(set(loaded.missing_keys) - adapters)}"
        )
    return TorchCandidate(
        name=base.name,
        model=model,
        architecture=base.architecture,
        kwargs=kwargs,
        preprocessor=base.preprocessor,
        batch_size=base.batch_size,
    )


def with_replay(recent: pl.DataFrame, older: pl.DataFrame, replay: float, seed_: int) -> pl.DataFrame:
    """The fine-tune rows plus a seeded sample of training-window rows (rehearsal against
    forgetting what the recent window does not show)."""
    n = min(older.height, round(replay * recent.height))
    if n == 0:
        return recent
    return pl.concat([recent, older.sample(n, seed=seed_, shuffle=False)], how="vertical_relaxed")


def finetune(
    base: TorchCandidate,
    cfg: FinetuneConfig,
    train_cfg: TrainConfig,
    *,
    spec: FeatureSpec,
    train_df: pl.DataFrame,
    valid_df: pl.DataFrame,
    seed_: int,
    rt: Runtime,
    checkpoint_dir: Path | None,
    live_dir: Path | None,
    fingerprint_: str,
    refit_df: pl.DataFrame | None = None,
) -> tuple[TorchCandidate, dict[str, Any]]:
    """Fine-tune ``base`` (its preprocessing unchanged) and return the best-epoch candidate; with
    ``cfg.refit_epochs``, that many more epochs on ``refit_df`` (the fine-tune rows plus the
    validation rows), its answers for the validation rows kept from before them (``held_out``).
    Strategy ``adapter`` fine-tunes a copy of ``base`` with adapters (`with_adapters`); the others
    fine-tune ``base.model`` itself."""
    tr = arrays(base.preprocessor, train_df, spec.target, where="finetune part")
    va = arrays(base.preprocessor, valid_df, spec.target, where="finetune_valid part")
    start = with_adapters(base, cfg.adapter_rank, seed_=seed_) if cfg.strategy == "adapter" else base
    model = start.model
    lr_scale = apply_strategy(model, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt_cfg = train_cfg.model_copy(  # train's loss, weight decay, augmentation, ...
        update={
            "lr": cfg.lr,
            "epochs": cfg.epochs,
            "patience": cfg.patience,
            "warmup_epochs": cfg.warmup_epochs,
        }
    )
    result = fit(
        model,
        train=tr,
        valid=va,
        cfg=opt_cfg,
        seed=seed_,
        rt=rt,
        n_scaled=len(spec.numeric),
        checkpoint_dir=checkpoint_dir,
        fingerprint=fingerprint_,
        live_dir=live_dir,
        lr_scale=lr_scale,
        desc="finetune",
    )
    model.to("cpu").load_state_dict(result.best_state)
    held_out: dict[str, np.ndarray] = {}
    if cfg.refit_epochs and refit_df is not None:
        # The validation rows' answers come from the model that never trained on them.
        model.eval()
        held_out[VALID_PART] = sigmoid(
            predict_logits(model, va.x_num, va.x_cat, batch_size=train_cfg.eval_batch_size, device=CPU)
        )
        more = arrays(base.preprocessor, refit_df, spec.target, where="finetune + finetune_valid parts")
        refit_cfg = opt_cfg.model_copy(update={"epochs": cfg.refit_epochs, "patience": cfg.refit_epochs})
        fit(
            model, train=more, valid=va, cfg=refit_cfg, seed=seed_ + 1, rt=rt, n_scaled=len(spec.numeric),
            checkpoint_dir=None, fingerprint=f"{fingerprint_}:refit", lr_scale=lr_scale, desc="refit",
        )  # fmt: skip
        # the weights after the last refit epoch, not the "best": the validation rows are training rows
        # now, so nothing is left to stop early on
        model.to("cpu")
    model.requires_grad_(True)
    tuned = TorchCandidate(
        name="finetuned",
        model=model,
        architecture=start.architecture,
        kwargs=start.kwargs,
        preprocessor=start.preprocessor,
        held_out=held_out,
    )
    metrics = {
        "strategy": cfg.strategy,
        **({"adapter_rank": cfg.adapter_rank} if cfg.strategy == "adapter" else {}),
        "best_epoch": result.best_epoch + 1,
        "epochs_run": result.epochs_run,
        "valid_roc_auc": round(result.best_roc_auc, 6),
        "train_rows": len(tr.y),
        "valid_rows": len(va.y),
        "trainable_parameters": trainable,
        "parameters": sum(p.numel() for p in model.parameters()),
        "refit_epochs": cfg.refit_epochs if held_out else 0,
    }
    return tuned, metrics


def finetune_members(
    bases: list[TorchCandidate],
    cfg: FinetuneConfig,
    train_cfg: TrainConfig,
    *,
    spec: FeatureSpec,
    parts: dict[str, pl.DataFrame],
    seed_: int,
    rt: Runtime,
    checkpoint_dir: Path | None = None,
    live_dir: Path | None = None,
    fingerprint_: str = "",
) -> tuple[list[TorchCandidate], dict[str, Any]]:
    """Fine-tune each of ``bases`` (one model or a seed bag's members) on ``parts`` (``train``,
    ``finetune`` and ``finetune_valid`` as ``read_part`` gives them): the fine-tune rows with
    ``cfg.replay`` training rows mixed in and the optional groups masked; with ``cfg.refit_epochs``,
    the refit adds the validation rows. The bases are changed in place unless the strategy is
    ``adapter``. Without ``checkpoint_dir``, nothing is checkpointed (the backtest)."""
    train_df = mask_optional(
        with_replay(parts["finetune"], parts["train"], cfg.replay, seed_), spec, seed=seed_, part="finetune"
    )
    valid_df = parts[VALID_PART]
    refit_df = None
    if cfg.refit_epochs:
        refit_df = pl.concat(
            [train_df, mask_optional(valid_df, spec, seed=seed_, part=VALID_PART)], how="vertical_relaxed"
        )
    tuned_members, all_metrics = [], []
    for k, base in enumerate(bases):
        many = len(bases) > 1
        tuned, metrics = finetune(
            base,
            cfg,
            train_cfg,
            spec=spec,
            train_df=train_df,
            valid_df=valid_df,
            seed_=seed_,
            rt=rt,
            checkpoint_dir=None if checkpoint_dir is None else checkpoint_dir / (base.name if many else ""),
            live_dir=live_dir if k == 0 else None,
            fingerprint_=f"{fingerprint_}:{base.name}",
            refit_df=refit_df,
        )
        tuned.name = base.name.replace("base", "finetuned", 1)
        tuned_members.append(tuned)
        all_metrics.append(metrics)
    metrics = all_metrics[0] if len(bases) == 1 else {**all_metrics[0], "members": all_metrics}
    return tuned_members, metrics


def main(
    params_path: str,
    base_dir: str,
    split_dir: str,
    spec_path: str,
    out_dir: str,
    metrics_path: str,
    checkpoint_dir: str,
    live_dir: str,
) -> None:
    params = load_params(params_path)
    cfg = section(params, "finetune", FinetuneConfig, source=params_path)
    train_cfg = section(params, "train", TrainConfig, source=params_path)
    spec = FeatureSpec.load(spec_path)
    base_path = Path(base_dir)
    bases = load_torch_members(base_path)  # one model, or each member of a seed bag
    base_parts = read_json(base_path / CANDIDATE_FILE).get("trained_on") or ["train"]
    parts = {p: read_part(split_dir, p, spec) for p in ("train", "finetune", VALID_PART)}
    rt = setup_runtime(train_cfg.device, train_cfg.threads)
    fp = fingerprint(
        params={k: params.get(k) for k in ("finetune", "train", "seed")},
        files=[
            Path(split_dir) / "finetune.parquet",
            Path(split_dir) / "finetune_valid.parquet",
            *sorted(p for p in base_path.rglob("*") if p.is_file()),
        ],
        world_size=rt.world_size,
    )
    try:
        tuned_members, metrics = finetune_members(
            bases,
            cfg,
            train_cfg,
            spec=spec,
            parts=parts,
            seed_=seed(params),
            rt=rt,
            checkpoint_dir=Path(checkpoint_dir),
            live_dir=Path(live_dir),
            fingerprint_=fp,
        )
        if rt.is_main:
            info = {
                "trained_on": [
                    *base_parts,  # the trained model's (train, and train_valid after its refit)
                    "finetune",
                    *([VALID_PART] if cfg.refit_epochs else []),
                ],
                "validated_on": "finetune_valid",
                "strategy": cfg.strategy,
            }
            with atomic_outputs(out_dir, metrics_path) as (tmp, tmp_metrics):
                if len(bases) == 1:
                    tuned_members[0].save(tmp, **info)
                else:
                    save_seed_bag(tmp, name="finetuned", members=tuned_members, **info)
                write_json(tmp_metrics, metrics)
            log.info("finetune: %s", metrics)
        barrier(rt)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Fine-tune the trained model on the fine-tune window."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime finetune``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "Fine-tune the trained model on the fine-tune window (params `finetune`: strategy full, head, "
        "frozen_embeddings, discriminative or adapter; its own lr, epochs, patience) with early stopping on "
        "finetune_valid. Resumes from --checkpoints."
    )
    command.add_params(parser)
    parser.add_argument("--base", required=True, help=command.BASE)
    parser.add_argument("--split", required=True, help=command.SPLIT)
    parser.add_argument("--spec", required=True, help=command.SPEC)
    parser.add_argument("--out", required=True, help="output model folder")
    parser.add_argument("--metrics", required=True, help="JSON fine-tuning summary")
    parser.add_argument("--checkpoints", required=True, help=command.CHECKPOINTS)
    parser.add_argument("--live", required=True, help="dvclive folder for the curves")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(
        params_path=args.params,
        base_dir=args.base,
        split_dir=args.split,
        spec_path=args.spec,
        out_dir=args.out,
        metrics_path=args.metrics,
        checkpoint_dir=args.checkpoints,
        live_dir=args.live,
    )
