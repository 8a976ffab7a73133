"""backtest: walk-forward over test months, the honest answer to "does fine-tuning help?".

For each test month m of ``backtest.test_months``, the pipeline's own fitting runs on windows that
move with m: the neural model trains on the months before the fine-tune window (every month since
the data starts, or the last ``train_months``), is fine-tuned on the ``finetune_months`` before m
(each strategy of ``backtest.strategies``), LightGBM (``lgbm_train``, ``lgbm_all``), the linear
baseline and the ensembles are fitted as their stages fit them, and every model is scored on month
m, which none of them saw. Validation parts are cut from each window as ``split`` says
(``valid_days`` / ``valid_rows`` / ``valid_share``), so every fitted thing (preprocessing,
vocabularies, early stopping, refits, ensemble weights) sees training or validation rows only.

It re-uses the stages' functions (``split.split``, ``train.train_members``,
``finetune.finetune_members``, ``baseline.train_baseline``, ``linear.train_linear``,
``ensemble.build``) with the params of the run: a change there changes the backtest too. The
fine-tuned model the ensembles combine is ``finetune.strategy``'s. Nothing is checkpointed; LightGBM's
CV is off (the backtest is a CV of its own).

Writes ``metrics/backtest.json`` (per month and averaged ROC AUC; fine-tuned minus base; base minus
LightGBM on the same rows), the points of the ``dvc plots`` plot (month x ROC AUC per model) and a
Markdown table with the fitting times.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ontime import command
from ontime.candidates import VALID_PART, Candidate
from ontime.config import load_params, section, seed
from ontime.config.backtest import BacktestConfig
from ontime.config.baseline import BaselineConfig
from ontime.config.ensemble import EnsembleConfig
from ontime.config.finetune import FinetuneConfig
from ontime.config.linear import LinearConfig
from ontime.config.model import model_section
from ontime.config.preprocess import PreprocessConfig
from ontime.config.split import SplitConfig, Window
from ontime.config.train import TrainConfig
from ontime.data.split import split
from ontime.errors import ConfigError, DataError
from ontime.io import atomic_outputs, read_json, write_json
from ontime.spec import FeatureSpec, binary_labels, mask_optional
from ontime.studies import markdown_table, one, roc_auc
from ontime.training.baseline import train_baseline
from ontime.training.ensemble import build as build_ensembles
from ontime.training.finetune import finetune_members
from ontime.training.linear import train_linear
from ontime.training.loop import Runtime, setup_runtime
from ontime.training.train import refit_rows, train_members

log = logging.getLogger(__name__)


def month_start(month: str, shift: int = 0) -> dt.date:
    """The first day of ``month`` (YYYY-MM) moved by ``shift`` months."""
    year, mon = (int(x) for x in month.split("-"))
    index = year * 12 + (mon - 1) + shift
    return dt.date(index // 12, index % 12 + 1, 1)


def windows(month: str, cfg: BacktestConfig, data_start: dt.date) -> dict[str, Window]:
    """The train, fine-tune and test windows for test month ``month``."""
    ft_start = month_start(month, -cfg.finetune_months)
    train_start = (
        data_start
        if cfg.train_months is None
        else month_start(month, -cfg.finetune_months - cfg.train_months)
    )
    return {
        "train": Window(start=min(train_start, ft_start - dt.timedelta(days=1)), end=ft_start),
        "finetune": Window(start=ft_start, end=month_start(month)),
        "test": Window(start=month_start(month), end=month_start(month, 1)),
    }


def run_month(
    month: str,
    parts: dict[str, pl.DataFrame],
    params: dict[str, Any],
    cfg: BacktestConfig,
    spec: FeatureSpec,
    rt: Runtime,
    *,
    source: str,
) -> dict[str, Any]:
    """Fit every model on one month's parts and score each on its test part."""
    seed_ = seed(params)
    train_cfg = section(params, "train", TrainConfig, source=source)
    ft_cfg = section(params, "finetune", FinetuneConfig, source=source)
    ens_cfg = section(params, "ensemble", EnsembleConfig, source=source)
    pre_cfg = section(params, "preprocess", PreprocessConfig, source=source)
    base_cfg = section(params, "baseline", BaselineConfig, source=source).model_copy(update={"cv_folds": 0})
    lin_cfg = section(params, "linear", LinearConfig, source=source)
    test = parts["test"]
    y_test = binary_labels(
        test, spec.target, f"backtest {month}: the test rows", fix="change backtest.test_months"
    )
    models: dict[str, Candidate] = {}
    seconds: dict[str, float] = {}
    extra: dict[str, dict[str, Any]] = {}

    started = time.perf_counter()
    fitting = mask_optional(parts["train"], spec, seed=seed_, part="train")
    bases, train_metrics = train_members(
        model_cfg=model_section(params, source=source),
        train_cfg=train_cfg,
        pre_cfg=pre_cfg,
        seed_=seed_,
        spec=spec,
        train_df=fitting,
        valid_df=parts["train_valid"],
        rt=rt,
        refit_df=refit_rows(train_cfg, fitting, parts["train_valid"], spec, seed_),
    )
    seconds["base"] = time.perf_counter() - started
    models["base"] = one("base", bases)
    extra["base"] = {
        "valid_roc_auc": train_metrics["valid_roc_auc"],
        "best_epoch": train_metrics["best_epoch"],
    }

    for strategy in dict.fromkeys([ft_cfg.strategy, *cfg.strategies]):
        name = f"finetuned_{strategy}"
        started = time.perf_counter()
        tuned, ft_metrics = finetune_members(
            copy.deepcopy(bases),  # strategies other than adapter change the model in place
            ft_cfg.model_copy(update={"strategy": strategy}),
            train_cfg,
            spec=spec,
            parts=parts,
            seed_=seed_,
            rt=rt,
        )
        seconds[name] = time.perf_counter() - started
        models[name] = one(name, tuned)
        extra[name] = {
            "valid_roc_auc": ft_metrics["valid_roc_auc"],
            "best_epoch": ft_metrics["best_epoch"],
            "trainable_parameters": ft_metrics["trainable_parameters"],
        }

    started = time.perf_counter()
    lgbm, lgbm_metrics = train_baseline(parts, spec, base_cfg, seed_)
    seconds["lightgbm (both)"] = time.perf_counter() - started
    for name, model in lgbm.items():
        models[name] = model
        extra[name] = {"valid_roc_auc": lgbm_metrics[name]["valid_roc_auc"], "trees": model.best_iteration}

    started = time.perf_counter()
    linear, lin_metrics = train_linear(parts, spec, pre_cfg, lin_cfg, seed_)
    seconds["linear"] = time.perf_counter() - started
    models["linear"] = linear
    extra["linear"] = {"valid_roc_auc": lin_metrics["valid_roc_auc"]}

    named = {**models, "finetuned": models[f"finetuned_{ft_cfg.strategy}"]}
    unknown = [m for m in ens_cfg.members if m not in named]
    if unknown:
        raise ConfigError(
            f"ensemble.members {unknown}: the backtest fits {sorted(named)}; "
            "list only those in ensemble.members"
        )
    started = time.perf_counter()
    ensembles, ens_metrics = build_ensembles(
        ens_cfg, [named[m] for m in ens_cfg.members], parts[VALID_PART], spec.target
    )
    seconds["ensembles"] = time.perf_counter() - started
    for ens in ensembles:
        models[ens.name] = ens
        extra[ens.name] = {"valid_roc_auc": ens_metrics[ens.name]["oof_valid_roc_auc"]}

    scores = {name: roc_auc(y_test, model.predict_proba(test)) for name, model in models.items()}
    for name, auc in scores.items():
        log.info("backtest %s: %-24s test ROC AUC %.4f", month, name, auc)
    return {
        "month": month,
        "rows": {p: df.height for p, df in parts.items()},
        "positive_rate": round(float(y_test.mean()), 6),
        "roc_auc": scores,
        "models": extra,
        "_seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


def summarise(months: list[dict[str, Any]], strategies: list[str]) -> dict[str, Any]:
    """Per model, the mean test ROC AUC; fine-tuned minus base and base minus LightGBM (same rows),
    each as a mean over months and how many months it is positive."""
    names = list(months[0]["roc_auc"])
    mean = {n: round(float(np.mean([m["roc_auc"][n] for m in months])), 6) for n in names}

    def diff(a: str, b: str) -> dict[str, Any]:
        d = [m["roc_auc"][a] - m["roc_auc"][b] for m in months]
        return {
            "mean": round(float(np.mean(d)), 6),
            "months_above": int(sum(x > 0 for x in d)),
            "months": len(d),
        }

    return {
        "mean_roc_auc": mean,
        "finetuned_minus_base": {s: diff(f"finetuned_{s}", "base") for s in strategies},
        "base_minus_lgbm_train": diff("base", "lgbm_train"),
        "best_mean": max(mean, key=lambda n: mean[n]),
    }


def report_markdown(result: dict[str, Any]) -> str:
    months = result["months"]
    names = list(months[0]["roc_auc"])
    rows = [[m["month"], *(m["roc_auc"][n] for n in names)] for m in months]
    rows.append(["mean", *(result["mean_roc_auc"][n] for n in names)])
    out = ["# Walk-forward backtest: test ROC AUC by month\n", markdown_table(["month", *names], rows)]
    out.append("\n## Fine-tuned minus base (mean over months; months above zero)\n")
    out.append(
        markdown_table(
            ["strategy", "mean", "months above"],
            [
                [s, d["mean"], f"{d['months_above']}/{d['months']}"]
                for s, d in result["finetuned_minus_base"].items()
            ],
        )
    )
    d = result["base_minus_lgbm_train"]
    out.append(
        f"\nBase minus LightGBM on the same rows (lgbm_train): {d['mean']:+.4f} "
        f"({d['months_above']}/{d['months']} months above)\n"
    )
    out.append("\n## Windows, rows and fitting time (seconds, this machine)\n")
    time_names = list(months[0]["_seconds"])
    out.append(
        markdown_table(
            ["month", "train", "finetune", "test", *time_names],
            [
                [m["month"], m["rows"]["train"] + m["rows"]["train_valid"],
                 m["rows"]["finetune"] + m["rows"]["finetune_valid"], m["rows"]["test"],
                 *(f"{m['_seconds'][n]:.0f}" for n in time_names)]
                for m in months
            ],
        )
    )  # fmt: skip
    return "".join(out)


def main(params_path: str, features_dir: str, out_dir: str, metrics_path: str) -> None:
    params = load_params(params_path)
    cfg = section(params, "backtest", BacktestConfig, source=params_path)
    split_cfg = section(params, "split", SplitConfig, source=params_path)
    if split_cfg.method != "time":
        raise ConfigError(
            f"the backtest walks forward in time, but split.method is {split_cfg.method!r}; "
            "it needs split.method: time (and a time column)"
        )
    features = Path(features_dir)
    spec_dict = read_json(features / "spec.json")
    spec = FeatureSpec.load(features / "spec.json")
    df = pl.read_parquet(features / "features.parquet")
    first = df.get_column(spec_dict["time_column"]).min()
    if not isinstance(first, dt.date):
        raise DataError(
            f"the time column {spec_dict['time_column']!r} holds no dates; the backtest needs them"
        )
    data_start = first.date() if isinstance(first, dt.datetime) else first
    train_cfg = section(params, "train", TrainConfig, source=params_path)
    rt = setup_runtime(train_cfg.device, train_cfg.threads)
    ft_strategy = section(params, "finetune", FinetuneConfig, source=params_path).strategy
    strategies = list(dict.fromkeys([ft_strategy, *cfg.strategies]))
    months = []
    for month in cfg.test_months:
        month_cfg = split_cfg.model_copy(update={"windows": windows(month, cfg, data_start)})
        try:
            parts = split(df, spec_dict, month_cfg, seed(params))
        except DataError as exc:
            raise DataError(f"backtest month {month}: {exc}; or change backtest.test_months") from exc
        log.info("backtest %s: %s", month, {p: d.height for p, d in parts.items()})
        months.append(run_month(month, parts, params, cfg, spec, rt, source=params_path))
    result = {"months": months, **summarise(months, strategies)}
    points = [
        {"month": m["month"], "candidate": name, "roc_auc": auc}
        for m in months
        for name, auc in m["roc_auc"].items()
    ]
    markdown = report_markdown(result)
    metrics = {
        **{k: v for k, v in result.items() if k != "months"},
        "months": [{k: v for k, v in m.items() if not k.startswith("_")} for m in months],
    }  # no timings in the metrics: the same inputs give the same file (the Markdown has them)
    with atomic_outputs(out_dir, metrics_path) as (tmp_dir, tmp_metrics):
        tmp_dir.mkdir()
        (tmp_dir / "backtest.md").write_text(markdown)
        write_json(tmp_metrics, metrics)
        write_json(tmp_dir / "points.json", points)
    log.info("backtest:\n%s", markdown)


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Study: walk-forward backtest over test months."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime backtest``: its description and options (the studies/dvc.yaml stage passes them)."""
    parser.description = (
        "Walk-forward backtest (params `backtest`): for each test month, train on the months before the "
        "fine-tune window, fine-tune on the months just before (each strategy), fit LightGBM, the linear "
        "model and the ensembles as their stages do, and score everything on the month; per month and "
        "averaged."
    )
    command.add_params(parser)
    parser.add_argument("--features", required=True, help=command.FEATURES)
    parser.add_argument(
        "--out",
        required=True,
        help="output folder: backtest.md (with fitting times) and points.json (the plot)",
    )
    parser.add_argument(
        "--metrics", required=True, help="JSON: ROC AUC per month and model, means, fine-tuned minus base"
    )


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(params_path=args.params, features_dir=args.features, out_dir=args.out, metrics_path=args.metrics)
