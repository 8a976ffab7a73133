"""evaluate: every candidate on the test window, with thresholds chosen on validation rows.

Writes one metrics file (a block per candidate: threshold, validation and test metrics) that
``dvc exp show`` displays, the predictions (validation and test rows, a probability column per
candidate) for later stages, the points of the ROC / precision-recall / calibration / confusion plots
(one file per plot, a ``candidate`` column telling the candidates apart; dvc.yaml's ``plots`` draws
them), and what leaving each optional input group out costs (``optional_inputs``: per candidate, the
test ROC AUC and mean probability with the group's features missing, as a request without them is
scored).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ontime import command
from ontime.candidates import Candidate, load_candidate, validation_predictions
from ontime.config import load_params, section
from ontime.config.evaluate import EvaluateConfig
from ontime.errors import DataError
from ontime.evaluation.metrics import (
    calibration_points,
    choose_threshold,
    classification_metrics,
    confusion_counts,
    precision_recall_points,
    roc_auc,
    roc_points,
)
from ontime.io import atomic_outputs, write_json, write_parquet
from ontime.spec import FeatureSpec, read_part

log = logging.getLogger(__name__)

# At most this many points per ROC / precision-recall curve in the plot files: a test window has tens
# of thousands of distinct scores, and a page of full curves weighs tens of megabytes. The metrics
# (metrics/evaluate.json) are computed on every row, never on these points.
CURVE_POINTS = 200
CALIBRATION_BINS = 10


def evaluate(
    candidates: list[Candidate],
    valid: pl.DataFrame,
    test: pl.DataFrame,
    spec: FeatureSpec,
    cfg: EvaluateConfig,
) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
    """Metrics per candidate, and predictions per part (``valid``, ``test``)."""
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise DataError(f"candidate names must be unique, got {names}")
    y_valid = valid.get_column(spec.target).to_numpy()
    y_test = test.get_column(spec.target).to_numpy()
    keep = [c for c in (spec.time_column, spec.target) if c]
    preds = {"valid": valid.select(keep), "test": test.select(keep)}
    metrics: dict[str, Any] = {}
    for cand in candidates:
        p_valid = validation_predictions(cand, valid, cfg.valid_part)
        p_test = cand.predict_proba(test)
        t = choose_threshold(y_valid, p_valid, method=cfg.threshold, cost_fp=cfg.cost_fp, cost_fn=cfg.cost_fn)
        metrics[cand.name] = {
            "threshold": round(t, 6),
            "valid": classification_metrics(y_valid, p_valid, t),
            "test": classification_metrics(y_test, p_test, t),
        }
        preds["valid"] = preds["valid"].with_columns(pl.Series(cand.name, p_valid))
        preds["test"] = preds["test"].with_columns(pl.Series(cand.name, p_test))
        log.info("evaluate: %s: test ROC AUC %.4f", cand.name, metrics[cand.name]["test"]["roc_auc"])
    return metrics, preds


def optional_inputs(
    candidates: list[Candidate], test: pl.DataFrame, spec: FeatureSpec, preds: pl.DataFrame
) -> dict[str, Any]:
    """Per candidate: test ROC AUC and mean probability with all inputs, and with each optional
    group (``featurize.optional``) missing, i.e. a request that leaves those fields out."""
    y = test.get_column(spec.target).to_numpy()
    out: dict[str, Any] = {}
    for cand in candidates:
        full = preds.get_column(cand.name).to_numpy()
        block = {"all_inputs": _summary(y, full)}
        for group, columns in sorted(spec.optional.items()):
            blank = test.with_columns(pl.lit(None, dtype=test.schema[c]).alias(c) for c in columns)
            p = cand.predict_proba(blank)
            block[f"without_{group}"] = {
                **_summary(y, p),
                "roc_auc_change": round(roc_auc(y, p) - roc_auc(y, full), 6),
                "mean_probability_change": round(float(p.mean() - full.mean()), 6),
            }
        out[cand.name] = block
        log.info("evaluate: %s without each optional group: %s", cand.name, block)
    return {"rows": test.height, "groups": spec.optional, "candidates": out}


def _summary(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"roc_auc": round(roc_auc(y, p), 6), "mean_probability": round(float(p.mean()), 6)}


def plot_points(
    metrics: dict[str, Any], test: pl.DataFrame, target: str, *, max_points: int = CURVE_POINTS
) -> dict[str, list[dict[str, Any]]]:
    """The rows of each evaluation plot, every candidate's rows tagged with ``candidate``: ROC and
    precision-recall curves (at most ``max_points`` each), calibration bins, and the confusion
    counts at the candidate's threshold."""
    y = test.get_column(target).to_numpy()
    out: dict[str, list[dict[str, Any]]] = {}
    for name, block in metrics.items():
        p = test.get_column(name).to_numpy()
        pred = (p >= block["threshold"]).astype(np.int64)
        rows: dict[str, list[dict[str, Any]]] = {
            "roc": roc_points(y, p, max_points=max_points),
            "precision_recall": precision_recall_points(y, p, max_points=max_points),
            "calibration": calibration_points(y, p, n_bins=CALIBRATION_BINS),
            "confusion": confusion_counts(y, pred),
        }
        for plot, points in rows.items():
            out.setdefault(plot, []).extend({"candidate": name, **row} for row in points)
    return out


def write_plots(plots_dir: Path, points: dict[str, list[dict[str, Any]]]) -> None:
    """One JSON file per plot (``<plot>.json``: a list of rows) in ``plots_dir``."""
    plots_dir.mkdir(parents=True)
    for plot, rows in points.items():
        write_json(plots_dir / f"{plot}.json", rows)


def main(
    params_path: str,
    split_dir: str,
    spec_path: str,
    candidate_dirs: list[str],
    metrics_path: str,
    predictions_dir: str,
    live_dir: str,
    optional_path: str,
) -> None:
    cfg = section(load_params(params_path), "evaluate", EvaluateConfig, source=params_path)
    spec = FeatureSpec.load(spec_path)
    valid = read_part(split_dir, cfg.valid_part, spec)
    test = read_part(split_dir, "test", spec)
    candidates = [load_candidate(d) for d in candidate_dirs]
    metrics, preds = evaluate(candidates, valid, test, spec, cfg)
    costs = optional_inputs(candidates, test, spec, preds["test"])
    outputs = (metrics_path, predictions_dir, live_dir, optional_path)
    with atomic_outputs(*outputs) as (tmp_metrics, tmp_preds, tmp_live, tmp_optional):
        write_json(tmp_metrics, metrics)
        write_json(tmp_optional, costs)
        tmp_preds.mkdir()
        for part, df in preds.items():
            write_parquet(df, tmp_preds / f"{part}.parquet")
        write_plots(tmp_live / "plots", plot_points(metrics, preds["test"], spec.target))


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Score every candidate on the test window."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime evaluate``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "Score every candidate on the test window: accuracy, precision, recall, F1, ROC AUC, PR AUC, log "
        "loss, Brier, at a threshold chosen on validation rows (params `evaluate`); plots."
    )
    command.add_params(parser)
    parser.add_argument("--split", required=True, help=command.SPLIT)
    parser.add_argument("--spec", required=True, help=command.SPEC)
    parser.add_argument("--candidate", action="append", required=True, help=command.CANDIDATE)
    parser.add_argument("--metrics", required=True, help="JSON metrics, a block per candidate")
    parser.add_argument("--predictions", required=True, help="output folder for valid/test predictions")
    parser.add_argument("--live", required=True, help="dvclive folder for the plots")
    parser.add_argument(
        "--optional-inputs",
        required=True,
        help="JSON: per candidate, test ROC AUC and mean probability without each optional input group",
    )


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(
        params_path=args.params,
        split_dir=args.split,
        spec_path=args.spec,
        candidate_dirs=args.candidate,
        metrics_path=args.metrics,
        predictions_dir=args.predictions,
        live_dir=args.live,
        optional_path=args.optional_inputs,
    )
