"""strategies: every fine-tuning strategy from the same trained model, side by side.

Loads the trained model (``models/train``) afresh for each strategy of ``strategies.names`` and
fine-tunes it exactly as the finetune stage does (``finetune.finetune_members``, the params'
``finetune`` section with only ``strategy`` changed), then scores it on ``finetune_valid`` (the
answers from before any refit on those rows: the figure selection would use) and on the test window.
The trained model itself is the first row (no fine-tuning). Writes ``metrics/strategies.json``
(ROC AUC, trainable parameters, epochs), the points of the ``dvc plots`` bar chart, and a Markdown
table with the fitting times.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from ontime import command
from ontime.candidates import VALID_PART, validation_predictions
from ontime.candidates.torch_model import load_torch_members
from ontime.config import load_params, section, seed
from ontime.config.finetune import FinetuneConfig
from ontime.config.strategies import StrategiesConfig
from ontime.config.train import TrainConfig
from ontime.io import atomic_outputs, write_json
from ontime.spec import FeatureSpec, binary_labels, read_part
from ontime.studies import markdown_table, one, roc_auc
from ontime.training.finetune import finetune_members
from ontime.training.loop import setup_runtime

log = logging.getLogger(__name__)


def main(
    params_path: str, base_dir: str, split_dir: str, spec_path: str, out_dir: str, metrics_path: str
) -> None:
    params = load_params(params_path)
    cfg = section(params, "strategies", StrategiesConfig, source=params_path)
    ft_cfg = section(params, "finetune", FinetuneConfig, source=params_path)
    train_cfg = section(params, "train", TrainConfig, source=params_path)
    spec = FeatureSpec.load(spec_path)
    parts = {p: read_part(split_dir, p, spec) for p in ("train", "finetune", VALID_PART, "test")}
    y_valid = binary_labels(parts[VALID_PART], spec.target, f"validation rows ({VALID_PART})")
    y_test = binary_labels(parts["test"], spec.target, "test rows")
    rt = setup_runtime(train_cfg.device, train_cfg.threads)
    base = one("trained", load_torch_members(base_dir))
    rows: dict[str, dict[str, Any]] = {
        "none (trained model)": {
            "valid_roc_auc": roc_auc(y_valid, base.predict_proba(parts[VALID_PART])),
            "test_roc_auc": roc_auc(y_test, base.predict_proba(parts["test"])),
            "trainable_parameters": 0,
        }
    }
    seconds: dict[str, float] = {"none (trained model)": 0.0}
    for strategy in cfg.names:
        started = time.perf_counter()
        tuned, metrics = finetune_members(
            load_torch_members(base_dir),
            ft_cfg.model_copy(update={"strategy": strategy}),
            train_cfg,
            spec=spec,
            parts=parts,
            seed_=seed(params),
            rt=rt,
        )
        seconds[strategy] = round(time.perf_counter() - started, 1)
        model = one(strategy, tuned)
        rows[strategy] = {
            "valid_roc_auc": roc_auc(y_valid, validation_predictions(model, parts[VALID_PART], VALID_PART)),
            "test_roc_auc": roc_auc(y_test, model.predict_proba(parts["test"])),
            "trainable_parameters": metrics["trainable_parameters"],
            "parameters": metrics["parameters"],
            "best_epoch": metrics["best_epoch"],
            "epochs_run": metrics["epochs_run"],
        }
        log.info("strategies %s: %s, %.1f s", strategy, rows[strategy], seconds[strategy])
    points = [
        {"strategy": name, "candidate": part, "roc_auc": row[f"{part}_roc_auc"]}
        for name, row in rows.items()
        for part in ("valid", "test")
    ]
    table = markdown_table(
        ["strategy", f"{VALID_PART} ROC AUC", "test ROC AUC", "trainable parameters", "seconds"],
        [
            [n, r["valid_roc_auc"], r["test_roc_auc"], r["trainable_parameters"], f"{seconds[n]:.0f}"]
            for n, r in rows.items()
        ],
    )
    markdown = "# Fine-tuning strategies from the same trained model\n\n" + table
    with atomic_outputs(out_dir, metrics_path) as (tmp_dir, tmp_metrics):
        tmp_dir.mkdir()
        (tmp_dir / "strategies.md").write_text(markdown)
        write_json(tmp_metrics, rows)  # no timings: the same inputs give the same file
        write_json(tmp_dir / "points.json", points)
    log.info("strategies:\n%s", markdown)


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Study: every fine-tuning strategy from one trained model."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime strategies``: its description and options (the studies/dvc.yaml stage passes them)."""
    parser.description = (
        "Fine-tune the trained model with every strategy of params `strategies.names` (the finetune section "
        "otherwise) and compare finetune_valid and test ROC AUC, trainable parameters and time."
    )
    command.add_params(parser)
    parser.add_argument("--base", required=True, help=command.BASE)
    parser.add_argument("--split", required=True, help=command.SPLIT)
    parser.add_argument("--spec", required=True, help=command.SPEC)
    parser.add_argument(
        "--out",
        required=True,
        help="output folder: strategies.md (with fitting times) and points.json (the plot)",
    )
    parser.add_argument(
        "--metrics", required=True, help="JSON: per strategy, ROC AUC, trainable parameters, epochs"
    )


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(
        params_path=args.params,
        base_dir=args.base,
        split_dir=args.split,
        spec_path=args.spec,
        out_dir=args.out,
        metrics_path=args.metrics,
    )
