"""Inference latency of the neural models: PyTorch eager against ONNX Runtime, measured in the same run.

For each model of the default run (``models/train``, ``models/finetune``; every member of a seed
bag) it exports the network to ONNX (``ontime.export.onnx``, in a temp folder) and, for each batch
size (``--batches``, default 1, 64 and 1024 rows of ``data/split/test.parquet``), times:

- **preprocessing**: ``Preprocessor.transform`` of the polars rows into ``(x_num, x_cat)``;
- **torch**: the model alone on the preprocessed tensors, eager, ``torch.inference_mode()``,
  ``torch.set_num_threads(--threads)``;
- **ORT**: ``InferenceSession.run`` alone on the same arrays (CPU provider, ``--threads`` intra-op
  threads, 1 inter-op thread, all graph optimizations).

Each is warmed up (``--warmup`` calls), then called ``--repeats`` times in a block of its own,
cycling over a few distinct batches of test rows; the table shows the medians
(``time.perf_counter_ns``), the speedup torch/ORT and the largest absolute difference between the
two sides' probabilities on those batches. A last line per model gives that difference over the
whole test part. The header shows the load average: on a machine busy with other work, 2 threads on
2 cores wait for each other and the figures mean little. Needs the default run's models and split
(``dvc repro train finetune``)::

    .venv/bin/python bench/inference.py
    .venv/bin/python bench/inference.py --repeats 20 --batches 1 1024
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl
import torch
from machine import cpu_model  # bench/machine.py: this script's folder is on sys.path

from ontime.candidates.onnx_model import OnnxCandidate
from ontime.candidates.torch_model import TorchCandidate, load_torch_members, predict_logits, sigmoid
from ontime.errors import DataError
from ontime.export.onnx import from_torch
from ontime.spec import FeatureSpec, read_part

ROOT = Path(__file__).resolve().parent.parent
AIMS = {1: 2.0, 1024: 1.2}  # issue 15: torch/ORT at least this much faster
DISTINCT = 8  # distinct batches of test rows cycled through


def header(threads: int) -> str:
    cpu = cpu_model()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')} | {cpu}, {os.cpu_count()} cores, {threads} threads used | "
        f"Python {platform.python_version()}, torch {torch.__version__}, onnxruntime {ort.__version__}, "
        f"polars {pl.__version__} | load average (1, 5, 15 min) {load}"
    )


def load_models(folders: list[str]) -> list[TorchCandidate]:
    models = []
    for folder in folders:
        try:
            members = load_torch_members(ROOT / folder)
        except DataError as e:
            raise SystemExit(
                f"{e}\nbench/inference.py needs the default run's neural models: run `dvc repro train` "
                "(and `dvc repro finetune` for models/finetune) first"
            ) from e
        for member in members:
            member.name = folder if len(members) == 1 else f"{folder}/{member.name}"
            models.append(member)
    return models


def batches(test: pl.DataFrame, size: int) -> list[pl.DataFrame]:
    """Up to ``DISTINCT`` disjoint slices of ``size`` test rows, spread over the test part."""
    if size > test.height:
        raise SystemExit(f"batch size {size} exceeds the {test.height} test rows; pass smaller --batches")
    starts = np.linspace(0, test.height - size, min(DISTINCT, test.height // size), dtype=int)
    return [test.slice(int(s), size) for s in starts]


def median_ms(fn: Callable[[int], object], n_batches: int, warmup: int, repeats: int) -> float:
    """Median milliseconds of ``fn(i)`` over ``repeats`` calls after ``warmup``, ``i`` cycling."""
    for r in range(warmup):
        fn(r % n_batches)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter_ns()
        fn(r % n_batches)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e6


def measure(
    torch_model: TorchCandidate,
    onnx_model: OnnxCandidate,
    rows: list[pl.DataFrame],
    warmup: int,
    repeats: int,
) -> dict[str, float]:
    """Median ms of preprocessing, torch and ORT on ``rows`` (cycled), and the largest |Δp|.

    Each side runs its calls in one block: interleaved, the worker threads one runtime leaves
    spinning after a call (OpenMP's, ONNX Runtime's) take the cores from the other's next call.
    """
    pre, model, session = torch_model.preprocessor, torch_model.model.eval(), onnx_model.session
    arrays = [pre.transform(df) for df in rows]
    tensors = [(torch.from_numpy(xn), torch.from_numpy(xc)) for xn, xc in arrays]
    feeds = [{"x_num": xn, "x_cat": xc} for xn, xc in arrays]

    def run_torch(i: int) -> np.ndarray:
        return model(*tensors[i]).numpy()

    def run_ort(i: int) -> np.ndarray:
        return session.run(["logits"], feeds[i])[0]

    n = len(rows)
    with torch.inference_mode():
        diff = max(
            float(
                np.abs(
                    sigmoid(run_torch(i).astype(np.float64)) - sigmoid(run_ort(i).astype(np.float64))
                ).max()
            )
            for i in range(n)
        )
        return {
            "pre": median_ms(lambda i: pre.transform(rows[i]), n, warmup, repeats),
            "torch": median_ms(run_torch, n, warmup, repeats),
            "ort": median_ms(run_ort, n, warmup, repeats),
            "diff": diff,
        }


def whole_test_diff(torch_model: TorchCandidate, onnx_model: OnnxCandidate, test: pl.DataFrame) -> float:
    x_num, x_cat = torch_model.preprocessor.transform(test)
    cpu = torch.device("cpu")
    p_torch = sigmoid(predict_logits(torch_model.model, x_num, x_cat, batch_size=4096, device=cpu))
    return float(np.abs(p_torch - sigmoid(onnx_model.predict_logits(x_num, x_cat))).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["models/train", "models/finetune"])
    parser.add_argument("--split", default="data/split")
    parser.add_argument("--spec", default="data/features/spec.json")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64, 1024])
    parser.add_argument("--threads", type=int, default=2, help="torch threads and ORT intra-op threads")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls before the timed ones")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per side and batch size")
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")

    torch.set_num_threads(args.threads)
    print(header(args.threads))
    models = load_models(args.models)
    try:
        test = read_part(ROOT / args.split, "test", FeatureSpec.load(ROOT / args.spec))
    except DataError as e:
        raise SystemExit(
            f"{e}\nbench/inference.py needs the default run's split: run `dvc repro train`"
        ) from e

    print(f"\n{test.height} test rows, {args.warmup} warm-up and {args.repeats} timed calls per cell\n")
    print("| model | batch | torch ms | ORT ms | speedup | aim | preprocessing ms | max abs Δp |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    notes = []
    with tempfile.TemporaryDirectory(prefix="ontime-onnx-") as tmp:
        for k, model in enumerate(models):
            onnx_model = from_torch(model, Path(tmp) / f"model{k}.onnx", intra_op_num_threads=args.threads)
            for size in args.batches:
                m = measure(model, onnx_model, batches(test, size), args.warmup, args.repeats)
                aim = f"≥ {AIMS[size]:.1f}x" if size in AIMS else "-"
                print(
                    f"| {model.name} ({model.architecture}) | {size} | {m['torch']:.3f} | {m['ort']:.3f} | "
                    f"{m['torch'] / m['ort']:.2f}x | {aim} | {m['pre']:.3f} | {m['diff']:.1e} |",
                    flush=True,
                )
            notes.append(f"{model.name}: max abs Δp over all {test.height} test rows "
                         f"{whole_test_diff(model, onnx_model, test):.1e}")  # fmt: skip
    print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
