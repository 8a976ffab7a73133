"""Training cost of the neural models against LightGBM on the same rows, measured in the same run.

On the default split (``data/split``, after ``make repro``) and the default params, with the
train stage's own functions (preprocessing fitted on ``train``, the same masking, the same loop):

- **LightGBM** (the ``lgbm_train`` candidate's first fit: ``train`` rows, early stopping on
  ``train_valid``): wall seconds and its ``train_valid`` ROC AUC, the target below.
- **Each neural model** (``--models``, default the MLP and the FT-Transformer, each with its
  ``conf/model`` defaults): trained as the train stage trains it (refit off, no checkpoints) for at
  most ``--epochs`` epochs (default: the params' epochs, early stopping as configured; the
  FT-Transformer on the newest ``--rows`` rows only when given): training samples per second, the
  wall time until its ``train_valid`` ROC AUC first reaches LightGBM's (``-`` when it never does)
  and that time over LightGBM's. Both sides use ``train.threads`` (2) threads.

    .venv/bin/python bench/training.py
    .venv/bin/python bench/training.py --models mlp --epochs 5
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import lightgbm
import polars as pl
import torch
import yaml
from machine import cpu_model  # bench/machine.py: this script's folder is on sys.path

from ontime.config import section, seed
from ontime.config.baseline import BaselineConfig
from ontime.config.model import model_section
from ontime.config.preprocess import PreprocessConfig
from ontime.config.train import TrainConfig
from ontime.overrides import compose
from ontime.spec import FeatureSpec, mask_optional, read_part
from ontime.training.baseline import fit_lightgbm, roc_auc
from ontime.training.loop import setup_runtime
from ontime.training.train import train

ROOT = Path(__file__).resolve().parent.parent


def header() -> str:
    cpu = cpu_model()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')} | {cpu}, {os.cpu_count()} cores | Python "
        f"{platform.python_version()}, torch {torch.__version__}, lightgbm {lightgbm.__version__}, "
        f"polars {pl.__version__}"
    )


def neural(
    params: dict[str, Any],
    parts: dict[str, pl.DataFrame],
    spec: FeatureSpec,
    target: float,
    epochs: int | None,
) -> dict[str, Any]:
    train_cfg = section(params, "train", TrainConfig).model_copy(
        update={"refit": False, **({"epochs": epochs} if epochs else {})}
    )
    rt = setup_runtime(train_cfg.device, train_cfg.threads)
    marks: list[tuple[float, float]] = []  # (seconds since start, valid ROC AUC) per epoch
    start = time.perf_counter()

    def on_epoch(epoch: int, row: dict[str, float]) -> None:
        marks.append((time.perf_counter() - start, row["valid/roc_auc"]))

    _, metrics = train(
        model_cfg=model_section(params),
        train_cfg=train_cfg,
        pre_cfg=section(params, "preprocess", PreprocessConfig),
        seed_=seed(params),
        spec=spec,
        train_df=parts["train"],
        valid_df=parts["train_valid"],
        rt=rt,
        checkpoint_dir=None,
        live_dir=None,
        fingerprint_="bench",
        on_epoch=on_epoch,
    )
    total = time.perf_counter() - start
    reached = next((t for t, auc in marks if auc >= target), None)
    return {
        "rows": parts["train"].height,
        "epochs": len(marks),
        "seconds": total,
        "samples_per_s": parts["train"].height * len(marks) / total,
        "best_valid": metrics["valid_roc_auc"],
        "reached_s": reached,
        "parameters": metrics["parameters"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "ft_transformer"])
    parser.add_argument("--epochs", type=int, default=None, help="at most this many epochs (default: params)")
    parser.add_argument("--rows", type=int, default=None, help="newest training rows for the FT-Transformer")
    parser.add_argument("--split", default="data/split")
    args = parser.parse_args()
    print(header())
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    spec = FeatureSpec.load(ROOT / "data/features/spec.json")
    seed_ = seed(base)
    parts = {
        "train": mask_optional(read_part(args.split, "train", spec), spec, seed=seed_, part="train"),
        "train_valid": read_part(args.split, "train_valid", spec),
    }
    cfg = section(base, "baseline", BaselineConfig)
    threads = section(base, "train", TrainConfig).threads
    t0 = time.perf_counter()
    lgbm = fit_lightgbm(
        parts["train"], parts["train_valid"], spec, cfg.model_copy(update={"threads": threads}), seed_
    )
    lgbm_s = time.perf_counter() - t0
    target = roc_auc(lgbm, parts["train_valid"], spec.target)
    print(f"\nLightGBM (lgbm_train's first fit): {lgbm_s:.1f} s, train_valid ROC AUC {target:.4f}\n")
    columns = ["model", "parameters", "train rows", "epochs", "samples/s", "best valid ROC AUC"]
    columns += ["s to LightGBM's AUC", "x LightGBM"]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        params = (
            yaml.safe_load(compose(ROOT / "conf", [f"model={name}"]))
            if name != base["model"]["name"]
            else base
        )
        rows = parts
        if args.rows and name == "ft_transformer":
            rows = {**parts, "train": parts["train"].tail(args.rows)}
        r = neural(params, rows, spec, target, args.epochs)
        reached = "-" if r["reached_s"] is None else f"{r['reached_s']:.0f}"
        ratio = "-" if r["reached_s"] is None else f"{r['reached_s'] / lgbm_s:.1f}x"
        print(
            f"| {name} | {r['parameters']:,} | {r['rows']:,} | {r['epochs']} | {r['samples_per_s']:,.0f} | "
            f"{r['best_valid']:.4f} | {reached} | {ratio} |"
        )


if __name__ == "__main__":
    main()
