"""learning_curve: validation and test ROC AUC against the size of the training window.

For each share of ``learning_curve.shares``, the most recent rows of the ``train`` part (that share
of them; older rows are dropped, as a shorter history would) train the neural model
(``train.train_members``, the params' ``model`` / ``train`` / ``preprocess``) and LightGBM as
``lgbm_train`` is fitted (``baseline``: early stopping on ``train_valid``, then the refit when
``baseline.refit``), so the 100% share gives the train stage's model and ``lgbm_train`` again. Each
is scored on ``train_valid`` (LightGBM: its fit before the refit) and on the test window. Writes
``metrics/learning_curve.json``, the points of the ``dvc plots`` plot and a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
from typing import Any

import polars as pl

from ontime import command
from ontime.config import load_params, section, seed
from ontime.config.baseline import BaselineConfig
from ontime.config.learning_curve import LearningCurveConfig
from ontime.config.model import model_section
from ontime.config.preprocess import PreprocessConfig
from ontime.config.train import TrainConfig
from ontime.io import atomic_outputs, write_json
from ontime.spec import FeatureSpec, binary_labels, mask_optional, read_part
from ontime.studies import markdown_table, one, roc_auc
from ontime.training.baseline import fit_lightgbm, refit_lightgbm
from ontime.training.loop import setup_runtime
from ontime.training.train import refit_rows, train_members

log = logging.getLogger(__name__)


def most_recent(df: pl.DataFrame, share: float, time_column: str | None) -> pl.DataFrame:
    """The newest ``share`` of ``df``'s rows (at least one), in ``df``'s order; without a time
    column, the last rows in file order."""
    n = max(1, round(share * df.height))
    if not time_column:
        return df.tail(n)
    keep = df.with_row_index("_row").sort(time_column, "_row").tail(n).get_column("_row")
    return df.with_row_index("_row").filter(pl.col("_row").is_in(keep.implode())).drop("_row")


def _day(value: object) -> str:
    """A time as its date (YYYY-MM-DD) where it has one."""
    return value.date().isoformat() if isinstance(value, dt.datetime) else str(value)


def main(params_path: str, split_dir: str, spec_path: str, out_dir: str, metrics_path: str) -> None:
    params = load_params(params_path)
    cfg = section(params, "learning_curve", LearningCurveConfig, source=params_path)
    train_cfg = section(params, "train", TrainConfig, source=params_path)
    pre_cfg = section(params, "preprocess", PreprocessConfig, source=params_path)
    lgbm_cfg = section(params, "baseline", BaselineConfig, source=params_path)
    model_cfg = model_section(params, source=params_path)
    seed_ = seed(params)
    spec = FeatureSpec.load(spec_path)
    train, valid, test = (read_part(split_dir, p, spec) for p in ("train", "train_valid", "test"))
    y_valid = binary_labels(valid, spec.target, "validation rows (train_valid)")
    y_test = binary_labels(test, spec.target, "test rows")
    rt = setup_runtime(train_cfg.device, train_cfg.threads)
    rows: list[dict[str, Any]] = []
    seconds: list[dict[str, float]] = []
    for share in cfg.shares:
        part = most_recent(train, share, spec.time_column)
        fitting = mask_optional(part, spec, seed=seed_, part="train")
        started = time.perf_counter()
        members, metrics = train_members(
            model_cfg=model_cfg, train_cfg=train_cfg, pre_cfg=pre_cfg, seed_=seed_, spec=spec,
            train_df=fitting, valid_df=valid, rt=rt,
            refit_df=refit_rows(train_cfg, fitting, valid, spec, seed_),
        )  # fmt: skip
        neural = one("neural", members)
        t_neural = time.perf_counter() - started
        started = time.perf_counter()
        first = fit_lightgbm(fitting, valid, spec, lgbm_cfg, seed_, name="lgbm_train")
        lgbm = first
        if lgbm_cfg.refit:
            # as the baseline stage refits lgbm_train: its validation rows masked like fitting rows
            masked_valid = mask_optional(valid, spec, seed=seed_, part="train_valid")
            rows_all = pl.concat([fitting, masked_valid], how="vertical_relaxed")
            lgbm = refit_lightgbm(
                rows_all, spec, lgbm_cfg, seed_, trees=first.best_iteration, name="lgbm_train",
                trained_on=("train", "train_valid"),
            )  # fmt: skip
        t_lgbm = time.perf_counter() - started
        row = {
            "share": share,
            "train_rows": part.height,
            "first": _day(part.get_column(spec.time_column).min()) if spec.time_column else None,
            "neural": {
                "valid_roc_auc": metrics["valid_roc_auc"],  # before any refit on these rows
                "test_roc_auc": roc_auc(y_test, neural.predict_proba(test)),
                "best_epoch": metrics["best_epoch"],
            },
            "lightgbm": {
                "valid_roc_auc": roc_auc(y_valid, first.predict_proba(valid)),
                "test_roc_auc": roc_auc(y_test, lgbm.predict_proba(test)),
                "trees": first.best_iteration,
            },
        }
        rows.append(row)
        seconds.append({"neural": round(t_neural, 1), "lightgbm": round(t_lgbm, 1)})
        log.info("learning curve %.0f%% (%d rows): %s", share * 100, part.height, row)
    points = [
        {"train_rows": r["train_rows"], "candidate": f"{model} {p}", "roc_auc": r[model][f"{p}_roc_auc"]}
        for r in rows
        for model in ("neural", "lightgbm")
        for p in ("valid", "test")
    ]
    table = markdown_table(
        ["share", "train rows", "from", "neural valid", "neural test", "LightGBM valid", "LightGBM test",
         "neural s", "LightGBM s"],
        [[f"{r['share']:.0%}", r["train_rows"], r["first"], r["neural"]["valid_roc_auc"],
          r["neural"]["test_roc_auc"], r["lightgbm"]["valid_roc_auc"], r["lightgbm"]["test_roc_auc"],
          f"{s['neural']:.0f}", f"{s['lightgbm']:.0f}"] for r, s in zip(rows, seconds, strict=True)],
    )  # fmt: skip
    markdown = "# Learning curve: ROC AUC against training rows (most recent kept)\n\n" + table
    with atomic_outputs(out_dir, metrics_path) as (tmp_dir, tmp_metrics):
        tmp_dir.mkdir()
        (tmp_dir / "learning_curve.md").write_text(markdown)
        write_json(tmp_metrics, {"shares": rows})  # no timings: the same inputs give the same file
        write_json(tmp_dir / "points.json", points)
    log.info("learning curve:\n%s", markdown)


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Study: ROC AUC against the size of the training window."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime learning_curve``: its description and options (the studies/dvc.yaml stage passes them)."""
    parser.description = (
        "Train the neural model and LightGBM on growing shares of the train part (params "
        "`learning_curve.shares`, most recent rows kept) and score train_valid and the test window."
    )
    command.add_params(parser)
    parser.add_argument("--split", required=True, help=command.SPLIT)
    parser.add_argument("--spec", required=True, help=command.SPEC)
    parser.add_argument(
        "--out",
        required=True,
        help="output folder: learning_curve.md (with fitting times) and points.json (the plot)",
    )
    parser.add_argument("--metrics", required=True, help="JSON: per share, rows and ROC AUC of both models")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(
        params_path=args.params,
        split_dir=args.split,
        spec_path=args.spec,
        out_dir=args.out,
        metrics_path=args.metrics,
    )
