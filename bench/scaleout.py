"""Data-parallel training under torchrun, 1 process against N, measured in the same run.

Runs the train stage's own command (``ontime train``, the one ``dvc repro`` runs) under
``torchrun --standalone --nproc_per_node P`` for each ``--procs`` (default 1 and 2; gloo on CPU) on
the default split, with the default params except ``train.epochs`` (``--epochs``, default 3),
patience above it (every run trains the same number of epochs) and ``train.refit: false``; each
process gets ``train.threads / P`` threads, so the runs share the same cores. Prints wall seconds,
training samples per second (rows x epochs / wall seconds, start-up included), the final
validation ROC AUC and the ratio to one process. Outputs go to a temp folder.

    .venv/bin/python bench/scaleout.py
    .venv/bin/python bench/scaleout.py --procs 1 2 4 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from machine import cpu_model  # bench/machine.py: this script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def header() -> str:
    cpu = cpu_model()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')} | {cpu}, {os.cpu_count()} cores | Python "
        f"{platform.python_version()}, torch {torch.__version__} (gloo on CPU)"
    )


def run(procs: int, params: Path, work: Path) -> dict[str, float]:
    out = work / f"p{procs}"
    cmd = [
        str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={procs}", "-m", "ontime", "train",
        "--params", str(params), "--split", str(ROOT / "data/split"),
        "--spec", str(ROOT / "data/features/spec.json"), "--out", str(out / "model"),
        "--metrics", str(out / "train.json"), "--checkpoints", str(out / "ckpt"), "--live", str(out / "live"),
    ]  # fmt: skip
    env = {**os.environ, "ONTIME_FRESH": "1"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"torchrun with {procs} process(es) failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "train.json").read_text())
    return {"seconds": seconds, **metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    print(header())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(epochs=args.epochs, patience=args.epochs + 1, refit=False)
    work = Path(tempfile.mkdtemp(prefix="ontime-scaleout-"))
    try:
        path = work / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        results = {p: run(p, path, work) for p in args.procs}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    first = results[args.procs[0]]
    rows, threads = first["train_rows"], params["train"]["threads"]
    print(f"\n{args.epochs} epochs of the default model on {rows:,} rows, {threads} threads in all\n")
    print("| processes | wall s | samples/s | x 1 process | best valid ROC AUC |")
    print("|---|---|---|---|---|")
    for p, r in results.items():
        rate = r["train_rows"] * args.epochs / r["seconds"]
        base = first["train_rows"] * args.epochs / first["seconds"]
        print(f"| {p} | {r['seconds']:.0f} | {rate:,.0f} | {rate / base:.2f}x | {r['valid_roc_auc']:.4f} |")


if __name__ == "__main__":
    main()
