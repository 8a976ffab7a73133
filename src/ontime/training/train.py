"""train: the PyTorch model from scratch on the training window, early-stopped on its last days.

Preprocessing is fitted on the ``train`` part only; the model (``conf/model/``) trains with the
shared loop (``training/loop.py``): resumable from ``checkpoints/``, deterministic, and distributed
under ``torchrun`` without code changes. ``ONTIME_FRESH=1 dvc repro -f -s train`` retrains from scratch
instead of resuming; Ctrl-C ends with one line naming the checkpoint a re-run resumes from.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.distributed as dist
from sklearn.metrics import roc_auc_score
from torch import nn

from ontime import command
from ontime.candidates.torch_model import TorchCandidate, build_model, save_seed_bag
from ontime.config import load_params, section, seed
from ontime.config.model import ModelConfig, model_section
from ontime.config.preprocess import PreprocessConfig
from ontime.config.train import TrainConfig
from ontime.errors import DataError
from ontime.io import atomic_outputs, write_json
from ontime.models.mlp import MLP
from ontime.models.preprocess import Preprocessor
from ontime.spec import FeatureSpec, mask_optional, read_part
from ontime.training.loop import Arrays, Runtime, barrier, fingerprint, fit, setup_runtime

log = logging.getLogger(__name__)


def arrays(pre: Preprocessor, df: pl.DataFrame, target: str, *, where: str) -> Arrays:
    try:
        x_num, x_cat = pre.transform(df)
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from exc
    return Arrays(x_num, x_cat, df.get_column(target).cast(pl.Float32).to_numpy().copy())


def model_kwargs(cfg: ModelConfig, *, pre: Preprocessor, x_num_train: np.ndarray) -> dict[str, Any]:
    """Keyword arguments of the architecture: its params plus what the data decides."""
    kwargs = cfg.model_dump(exclude={"name"})
    kwargs.update(n_num=pre.n_num_features, cardinalities=pre.cardinalities)
    if cfg.name == "mlp":
        n_bins = kwargs.pop("n_bins")
        if cfg.num_embedding == "piecewise_linear":  # bin edges from training quantiles
            kwargs["bin_edges"] = MLP.compute_bin_edges(x_num_train, n_bins)
    return kwargs


def fit_preprocessor(cfg: PreprocessConfig, spec: FeatureSpec, train: pl.DataFrame) -> Preprocessor:
    pre = Preprocessor(
        numeric=spec.numeric,
        categorical=spec.categorical,
        scaling=cfg.scaling,
        min_frequency=cfg.min_frequency,
        n_quantiles=cfg.n_quantiles,
    )
    try:
        return pre.fit(train)
    except ValueError as exc:
        raise DataError(f"preprocessing cannot be fitted on the train part: {exc}") from exc


def train(
    *,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    pre_cfg: PreprocessConfig,
    seed_: int,
    spec: FeatureSpec,
    train_df: pl.DataFrame,
    valid_df: pl.DataFrame,
    rt: Runtime,
    checkpoint_dir: Path | None,
    live_dir: Path | None,
    fingerprint_: str,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    refit_df: pl.DataFrame | None = None,
) -> tuple[TorchCandidate, dict[str, Any]]:
    """Fit preprocessing and the model; return the best-epoch candidate and its metrics. With
    ``train_cfg.refit`` and ``refit_df`` (the training rows plus the validation rows), the model is
    then trained again from the same initial weights on ``refit_df`` for the epochs early stopping
    chose (the first ``best_epoch + 1`` of the same schedule; preprocessing stays the train part's),
    and that model is the candidate; its metrics stay the first fit's."""
    pre = fit_preprocessor(pre_cfg, spec, train_df)
    tr = arrays(pre, train_df, spec.target, where="train part")
    va = arrays(pre, valid_df, spec.target, where="train_valid part")
    kwargs = model_kwargs(model_cfg, pre=pre, x_num_train=tr.x_num)
    torch.manual_seed(seed_)  # the same initial weights on every run and every rank
    model: nn.Module = build_model(model_cfg.name, kwargs)
    result = fit(
        model,
        train=tr,
        valid=va,
        cfg=train_cfg,
        seed=seed_,
        rt=rt,
        n_scaled=len(spec.numeric),
        checkpoint_dir=checkpoint_dir,
        fingerprint=fingerprint_,
        live_dir=live_dir,
        desc="train",
        on_epoch=on_epoch,
    )
    model.to("cpu").load_state_dict(result.best_state)
    refit_rows = 0
    if train_cfg.refit and refit_df is not None:
        more = arrays(pre, refit_df, spec.target, where="train + train_valid parts")
        torch.manual_seed(seed_)  # the first fit's initial weights
        model = build_model(model_cfg.name, kwargs)
        fit(
            model, train=more, valid=va, cfg=train_cfg, seed=seed_, rt=rt, n_scaled=len(spec.numeric),
            checkpoint_dir=None, fingerprint=f"{fingerprint_}:refit", desc="refit",
            stop_after=result.best_epoch + 1,
        )  # fmt: skip
        model.to("cpu")  # the last epoch's weights: the validation rows are training rows now
        refit_rows = len(more.y)
    candidate = TorchCandidate(
        name="base", model=model, architecture=model_cfg.name, kwargs=kwargs, preprocessor=pre
    )
    metrics = {
        "model": model_cfg.name,
        "best_epoch": result.best_epoch + 1,
        "epochs_run": result.epochs_run,
        "valid_roc_auc": round(result.best_roc_auc, 6),
        "train_rows": len(tr.y),
        "valid_rows": len(va.y),
        "parameters": sum(p.numel() for p in model.parameters()),
        "processes": rt.world_size,
        **({"refit_rows": refit_rows} if refit_rows else {}),
    }
    return candidate, metrics


def train_members(
    *,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    pre_cfg: PreprocessConfig,
    seed_: int,
    spec: FeatureSpec,
    train_df: pl.DataFrame,
    valid_df: pl.DataFrame,
    rt: Runtime,
    checkpoint_dir: Path | None = None,
    live_dir: Path | None = None,
    fingerprint_: str = "",
    refit_df: pl.DataFrame | None = None,
) -> tuple[list[TorchCandidate], dict[str, Any]]:
    """One model, or a bag of ``train.bagging_seeds`` models (seeds seed, seed+1, ...), and the
    metrics (a bag's ``valid_roc_auc`` is its averaged prediction's). ``train_df`` is the fitting
    rows as the stage prepares them (optional groups masked). Without ``checkpoint_dir``, nothing is
    checkpointed (the backtest)."""
    n = train_cfg.bagging_seeds
    members, member_metrics = [], []
    for k in range(n):
        candidate, metrics = train(
            model_cfg=model_cfg,
            train_cfg=train_cfg,
            pre_cfg=pre_cfg,
            seed_=seed_ + k,
            spec=spec,
            train_df=train_df,
            valid_df=valid_df,
            rt=rt,
            checkpoint_dir=None
            if checkpoint_dir is None
            else checkpoint_dir / (f"seed-{seed_ + k}" if n > 1 else ""),
            live_dir=live_dir if k == 0 else None,  # curves of the first seed
            fingerprint_=f"{fingerprint_}:{seed_ + k}",
            refit_df=refit_df,
        )
        candidate.name = f"base_seed{seed_ + k}" if n > 1 else "base"
        members.append(candidate)
        member_metrics.append(metrics)
    metrics = member_metrics[0]
    if n > 1:
        probs = np.mean([m.predict_proba(valid_df) for m in members], axis=0)
        metrics = {
            **metrics,
            "bagging_seeds": n,
            "members_valid_roc_auc": [m["valid_roc_auc"] for m in member_metrics],
            "valid_roc_auc": round(float(roc_auc_score(valid_df.get_column(spec.target), probs)), 6),
        }
    return members, metrics


def refit_rows(
    train_cfg: TrainConfig, train_df: pl.DataFrame, valid_df: pl.DataFrame, spec: FeatureSpec, seed_: int
) -> pl.DataFrame | None:
    """The rows ``train.refit`` trains on: the fitting rows (as given) plus the validation rows with
    the optional groups masked as fitting rows are; None without ``train.refit``."""
    if not train_cfg.refit:
        return None
    masked = mask_optional(valid_df, spec, seed=seed_, part="train_valid")
    return pl.concat([train_df, masked], how="vertical_relaxed")


def main(
    params_path: str,
    split_dir: str,
    spec_path: str,
    out_dir: str,
    metrics_path: str,
    checkpoint_dir: str,
    live_dir: str,
) -> None:
    params = load_params(params_path)
    model_cfg = model_section(params, source=params_path)
    train_cfg = section(params, "train", TrainConfig, source=params_path)
    pre_cfg = section(params, "preprocess", PreprocessConfig, source=params_path)
    seed_ = seed(params)
    spec = FeatureSpec.load(spec_path)
    train_df = mask_optional(read_part(split_dir, "train", spec), spec, seed=seed_, part="train")
    valid_df = read_part(split_dir, "train_valid", spec)
    refit_df = refit_rows(train_cfg, train_df, valid_df, spec, seed_)
    rt = setup_runtime(train_cfg.device, train_cfg.threads)
    fp = fingerprint(
        params={k: params.get(k) for k in ("model", "train", "preprocess", "seed")},
        files=[Path(split_dir) / "train.parquet", Path(split_dir) / "train_valid.parquet", Path(spec_path)],
        world_size=rt.world_size,
    )
    try:
        members, metrics = train_members(
            model_cfg=model_cfg,
            train_cfg=train_cfg,
            pre_cfg=pre_cfg,
            seed_=seed_,
            spec=spec,
            train_df=train_df,
            valid_df=valid_df,
            rt=rt,
            checkpoint_dir=Path(checkpoint_dir),
            live_dir=Path(live_dir),
            fingerprint_=fp,
            refit_df=refit_df,
        )
        n = len(members)
        if rt.is_main:
            info = {
                "trained_on": ["train", *(["train_valid"] if train_cfg.refit else [])],
                "validated_on": "train_valid",
            }
            with atomic_outputs(out_dir, metrics_path) as (tmp, tmp_metrics):
                if n == 1:
                    members[0].save(tmp, **info)
                else:
                    save_seed_bag(tmp, name="base", members=members, **info)
                write_json(tmp_metrics, metrics)
            log.info("train: %s", metrics)
        barrier(rt)
    finally:
        if rt.distributed and dist.is_initialized():
            dist.destroy_process_group()


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Train the PyTorch model from scratch (early stopping)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime train``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "Train the PyTorch model (params `model`, `train`, `preprocess`) from scratch on the train part "
        "with early stopping on train_valid. Resumes from --checkpoints after an interruption; under "
        "`torchrun --nproc_per_node N` it trains with DDP."
    )
    command.add_params(parser)
    parser.add_argument("--split", required=True, help=command.SPLIT)
    parser.add_argument("--spec", required=True, help=command.SPEC)
    parser.add_argument("--out", required=True, help="output model folder")
    parser.add_argument("--metrics", required=True, help="JSON training summary")
    parser.add_argument("--checkpoints", required=True, help=command.CHECKPOINTS)
    parser.add_argument("--live", required=True, help="dvclive folder for the training curves")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(
        params_path=args.params,
        split_dir=args.split,
        spec_path=args.spec,
        out_dir=args.out,
        metrics_path=args.metrics,
        checkpoint_dir=args.checkpoints,
        live_dir=args.live,
    )
