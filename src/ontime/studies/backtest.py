"""backtest: walk-forward over the periods before the test window, and the test window itself.

The periods are select's folds (``ontime fold``): period ``k`` of ``backtest.folds`` is the split
moved back ``k * select.fold_days`` days, so its test window is the ``k``-th stretch of ``fold_days``
days before the pipeline's test window, and its train and fine-tune windows keep the final fit's
structure. The last period is the pipeline's own test window. In each, every candidate is fitted
by ``ontime.training.folds.fit_candidates`` (the stages' own functions: ``train.train_members``,
``finetune.finetune_members``, ``baseline.train_baseline``, ``linear.train_linear``,
``svm.train_svm``, ``ensemble.build``) with the params of the run, and scored on the period's test
window, which none of them saw. Each ``backtest.strategies`` strategy is fine-tuned from the
period's trained network as well (``finetuned`` is ``finetune.strategy``'s).

Nothing is fitted twice: the periods that are also select's folds (``select.folds``) are read from
the fold stages' outputs (``data/folds/<k>``: predictions, validation figures and the trained
network the other strategies start from), and the test window's candidates are the pipeline's own
(evaluate's predictions and figures; strategies from ``models/train``). Only the other periods are
fitted here.

Selection regret: for each period with ``len(select.folds)`` periods before it, what select's rule
(the best mean test ROC AUC over those periods, as select's folds rate the candidates) and the rule
before the folds (the best ROC AUC on the period's own ``finetune_valid`` rows) would have served,
against the period's best candidate and each fixed choice. On the test window, the fold rule is
exactly what select served.

Writes ``metrics/backtest.json`` (per period and averaged ROC AUC; fine-tuned minus base; base minus
LightGBM on the same rows; the selection regret), the points of the ``dvc plots`` plot (period x ROC
AUC per candidate) and a Markdown table with the fitting times.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ontime import command
from ontime.candidates.ensemble_model import combine
from ontime.candidates.torch_model import load_torch_members, one
from ontime.config import load_params, section, seed
from ontime.config.backtest import BacktestConfig
from ontime.config.ensemble import EnsembleConfig
from ontime.config.finetune import FinetuneConfig
from ontime.config.select import FOLD_BASE, FOLD_INFO, FOLD_PREDICTIONS, FOLD_VALID, SelectConfig
from ontime.config.split import SplitConfig, Window
from ontime.config.train import TrainConfig
from ontime.errors import DataError
from ontime.io import atomic_outputs, read_json, write_json
from ontime.spec import FeatureSpec, binary_labels, read_part
from ontime.studies import markdown_table, roc_auc
from ontime.training.ensemble import cross_fitted
from ontime.training.finetune import finetune_members
from ontime.training.folds import fit_candidates, fold_parts, fold_windows
from ontime.training.loop import Runtime, setup_runtime

log = logging.getLogger(__name__)

TEST = "test"  # the last period's name: the pipeline's own test window
PARTS = ("train", "train_valid", "finetune", "finetune_valid", TEST)


def label(name: str, window: Window) -> str:
    """A period's name in tables: ``fold 3 (2013-09-02 to 2013-10-01)``, last day included."""
    last = window.end - dt.timedelta(days=1)
    return f"{name} ({window.start} to {last})"


def strategy_name(strategy: str, chosen: str) -> str:
    """The backtest's name for the model fine-tuned with ``strategy`` (``chosen``: finetune.strategy's)."""
    return "finetuned" if strategy == chosen else f"finetuned_{strategy}"


def other_strategies(
    bases: list[Any], strategies: list[str], parts: dict[str, pl.DataFrame], params: dict[str, Any],
    spec: FeatureSpec, rt: Runtime, *, source: str,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], float]:  # fmt: skip
    """The strategies other than ``finetune.strategy``, fine-tuned from ``bases`` on ``parts``."""
    ft_cfg = section(params, "finetune", FinetuneConfig, source=source)
    train_cfg = section(params, "train", TrainConfig, source=source)
    models, extra = {}, {}
    started = time.perf_counter()
    for strategy in dict.fromkeys(strategies):
        if strategy == ft_cfg.strategy:
            continue
        name = strategy_name(strategy, ft_cfg.strategy)
        tuned, metrics = finetune_members(
            copy.deepcopy(bases), ft_cfg.model_copy(update={"strategy": strategy}), train_cfg,
            spec=spec, parts=parts, seed_=seed(params), rt=rt,
        )  # fmt: skip
        models[name] = one(name, tuned)
        extra[name] = {
            "best_epoch": metrics["best_epoch"],
            "trainable_parameters": metrics["trainable_parameters"],
        }
    return models, extra, time.perf_counter() - started


def fitted_period(
    name: str, parts: dict[str, pl.DataFrame], params: dict[str, Any], cfg: BacktestConfig,
    spec: FeatureSpec, rt: Runtime, *, source: str,
) -> dict[str, Any]:  # fmt: skip
    """Fit every candidate (and the strategies) on one period's parts; score each on its test part."""
    test = parts["test"]
    y = binary_labels(test, spec.target, f"backtest {name}: the test rows", fix="change backtest.folds")
    fitted = fit_candidates(parts, params, spec, rt, source=source, strategies=cfg.strategies)
    models = {**fitted.models, **fitted.strategies}
    test_p = {n: np.asarray(m.predict_proba(test), dtype=np.float64) for n, m in models.items()}
    return {
        "roc_auc": {n: roc_auc(y, p) for n, p in test_p.items()},
        "valid_roc_auc": fitted.valid_roc_auc,
        "_members": _Members(
            test=test_p,
            y=y,
            valid=fitted.valid_predictions,
            y_valid=parts["finetune_valid"].get_column(spec.target).to_numpy(),
        ),
        "positive_rate": round(float(y.mean()), 6),
        "models": fitted.extra,
        "_seconds": {k: round(v, 1) for k, v in fitted.seconds.items()},
        "reused": False,
    }


def read_period(
    name: str, frame: pl.DataFrame, valid_roc_auc: dict[str, float], bases: list[Any],
    parts: dict[str, pl.DataFrame], params: dict[str, Any], cfg: BacktestConfig, spec: FeatureSpec,
    rt: Runtime, *, source: str, valid_frame: pl.DataFrame | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A period the pipeline already fitted (a fold, or the test window): its candidates' predictions
    as the pipeline wrote them, and the other strategies fine-tuned from its trained network.
    ``valid_frame``: a fold's held-out ``finetune_valid`` predictions (the ensembles are fitted
    across the folds afterwards); the test window's ensembles are the pipeline's."""
    y = frame.get_column(spec.target).to_numpy()
    if not parts["test"].get_column(spec.target).equals(frame.get_column(spec.target)):
        raise DataError(
            f"backtest {name}: the pipeline's predictions do not hold this period's test rows in order; "
            "they come from another run: re-run dvc repro, then the study"
        )
    candidates = [c for c in frame.columns if c in valid_roc_auc]
    scores = {c: roc_auc(y, frame.get_column(c).to_numpy()) for c in candidates}
    models, extra, seconds = other_strategies(bases, cfg.strategies, parts, params, spec, rt, source=source)
    valid = parts["finetune_valid"]
    y_valid = valid.get_column(spec.target).to_numpy()
    scores |= {n: roc_auc(y, m.predict_proba(parts["test"])) for n, m in models.items()}
    valid_scores = {c: valid_roc_auc[c] for c in candidates}
    valid_scores |= {n: roc_auc(y_valid, m.predict_proba(valid)) for n, m in models.items()}
    members = None
    if valid_frame is not None:
        members = _Members(
            test={c: frame.get_column(c).to_numpy().astype(np.float64) for c in candidates}, y=y,
            valid={c: valid_frame.get_column(c).to_numpy().astype(np.float64) for c in candidates},
            y_valid=y_valid,
        )  # fmt: skip
    return {
        "_members": members,
        "roc_auc": scores,
        "valid_roc_auc": valid_scores,
        "positive_rate": round(float(y.mean()), 6),
        "models": extra,
        "_seconds": {"strategies": round(seconds, 1)},
        "reused": True,
    }


@dataclass
class _Members:
    """A fold period's member candidates' probabilities: on its test rows and held out on its
    ``finetune_valid`` rows (what the ensembles combine)."""

    test: dict[str, np.ndarray]
    y: np.ndarray
    valid: dict[str, np.ndarray]
    y_valid: np.ndarray


def add_ensembles(periods: list[dict[str, Any]], cfg: EnsembleConfig) -> None:
    """Each fold period's ensembles, as the pipeline's are fitted: weights on the members' test
    predictions of the other fold periods (never the period's own rows), applied to the period's
    test and held-out validation predictions."""
    folds = {i: m["_members"] for i, m in enumerate(periods) if m.get("_members") is not None}
    blocks = {i: (np.column_stack([f.test[c] for c in cfg.members]), f.y) for i, f in folds.items()}
    valid = {i: np.column_stack([f.valid[c] for c in cfg.members]) for i, f in folds.items()}
    for method in cfg.methods:
        for i, state in cross_fitted(method, blocks, cfg).items():
            name = f"ens_{method}"
            periods[i]["roc_auc"][name] = roc_auc(folds[i].y, combine(method, blocks[i][0], state))
            periods[i]["valid_roc_auc"][name] = roc_auc(folds[i].y_valid, combine(method, valid[i], state))


def summarise(periods: list[dict[str, Any]], strategies: list[str], chosen: str) -> dict[str, Any]:
    """Per model, the mean test ROC AUC; fine-tuned minus base and base minus LightGBM (same rows),
    each as a mean over periods and how many periods it is positive."""
    names = list(periods[0]["roc_auc"])
    mean = {n: round(float(np.mean([m["roc_auc"][n] for m in periods])), 6) for n in names}

    def diff(a: str, b: str) -> dict[str, Any]:
        d = [m["roc_auc"][a] - m["roc_auc"][b] for m in periods]
        return {
            "mean": round(float(np.mean(d)), 6),
            "periods_above": int(sum(x > 0 for x in d)),
            "periods": len(d),
        }

    return {
        "mean_roc_auc": mean,
        "finetuned_minus_base": {s: diff(strategy_name(s, chosen), "base") for s in strategies},
        "base_minus_lgbm_train": diff("base", "lgbm_train"),
        "best_mean": max(mean, key=lambda n: mean[n]),
    }


def regret(periods: list[dict[str, Any]], candidates: list[str], folds: int) -> dict[str, Any]:
    """What each selection rule would have served each period, against the period's best candidate.

    ``folds``: select's rule, the best mean test ROC AUC over the ``folds`` periods just before
    (walk-forward fits of their own, as select's folds are); periods without that many before them
    are left out. ``validation``: the rule before the folds, the best ROC AUC on the period's own
    ``finetune_valid`` rows. Each fixed candidate is averaged over the same periods. Ties go to the
    candidate listed first (as select's do).
    """
    rows = []
    for i in range(folds, len(periods)):
        m, prior = periods[i], periods[i - folds : i]
        fold_mean = {c: float(np.mean([p["roc_auc"][c] for p in prior])) for c in candidates}
        by_folds = max(candidates, key=lambda c: (fold_mean[c], -candidates.index(c)))
        by_valid = max(candidates, key=lambda c: (m["valid_roc_auc"][c], -candidates.index(c)))
        best = max(candidates, key=lambda c: (m["roc_auc"][c], -candidates.index(c)))
        rows.append(
            {
                "period": m["period"],
                "best": best,
                "best_roc_auc": m["roc_auc"][best],
                "folds": by_folds,
                "folds_roc_auc": m["roc_auc"][by_folds],
                "validation": by_valid,
                "validation_roc_auc": m["roc_auc"][by_valid],
            }
        )
    if not rows:
        return {"folds": folds, "periods": [], "mean": {}, "fixed": {}}
    mean = {
        rule: round(float(np.mean([r[f"{rule}_roc_auc"] for r in rows])), 6)
        for rule in ("best", "folds", "validation")
    }
    scored = periods[folds:]
    fixed = {c: round(float(np.mean([m["roc_auc"][c] for m in scored])), 6) for c in candidates}
    return {"folds": folds, "periods": rows, "mean": mean, "fixed": fixed}


def report_markdown(result: dict[str, Any]) -> str:
    periods = result["periods"]
    names = list(periods[0]["roc_auc"])
    rows = [[m["period"], *(m["roc_auc"][n] for n in names)] for m in periods]
    rows.append(["mean", *(result["mean_roc_auc"][n] for n in names)])
    out = ["# Walk-forward backtest: test ROC AUC by period\n", markdown_table(["period", *names], rows)]
    out.append("\n## Fine-tuned minus base (mean over periods; periods above zero)\n")
    out.append(
        markdown_table(
            ["strategy", "mean", "periods above"],
            [
                [s, d["mean"], f"{d['periods_above']}/{d['periods']}"]
                for s, d in result["finetuned_minus_base"].items()
            ],
        )
    )
    d = result["base_minus_lgbm_train"]
    out.append(
        f"\nBase minus LightGBM on the same rows (lgbm_train): {d['mean']:+.4f} "
        f"({d['periods_above']}/{d['periods']} periods above)\n"
    )
    sel = result["selection"]
    if sel["periods"]:
        k = sel["folds"]
        out.append(
            "\n## Selection regret: what each rule would have served\n\nIn each period, `folds` serves "
            f"the candidate with the best mean test ROC AUC over the {k} periods before it (select's "
            "rule), `validation` the best on the period's own `finetune_valid` rows (the rule before the "
            "folds); `best` is the period's best candidate, known only afterwards. Periods with fewer "
            f"than {k} before them are left out.\n\n"
        )
        table = [
            [r["period"], r["best"], r["best_roc_auc"], r["folds"], r["folds_roc_auc"], r["validation"],
             r["validation_roc_auc"]]
            for r in sel["periods"]
        ]  # fmt: skip
        means = sel["mean"]
        table.append(["mean", "", means["best"], "", means["folds"], "", means["validation"]])
        header = ["period", "best", "ROC AUC", "folds", "ROC AUC", "validation", "ROC AUC"]
        out.append(markdown_table(header, table))
        out.append("\nEach candidate served in every one of those periods (a fixed choice):\n\n")
        fixed = sorted(sel["fixed"].items(), key=lambda kv: -kv[1])
        out.append(markdown_table(["fixed choice", "mean ROC AUC"], [[c, v] for c, v in fixed]))
    out.append("\n## Windows, rows and fitting seconds (this machine; reused: the pipeline fitted it)\n")
    time_names = list(dict.fromkeys(n for m in periods for n in m["_seconds"]))
    out.append(
        markdown_table(
            ["period", "train", "finetune", "test", "reused", *time_names],
            [
                [m["period"], m["rows"]["train"] + m["rows"]["train_valid"],
                 m["rows"]["finetune"] + m["rows"]["finetune_valid"], m["rows"]["test"],
                 "yes" if m["reused"] else "",
                 *(f"{m['_seconds'][n]:.0f}" if n in m["_seconds"] else "" for n in time_names)]
                for m in periods
            ],
        )
    )  # fmt: skip
    return "".join(out)


def main(
    params_path: str,
    features_dir: str,
    folds_dir: str,
    split_dir: str,
    predictions_dir: str,
    base_dir: str,
    evaluation: str,
    out_dir: str,
    metrics_path: str,
) -> None:
    params = load_params(params_path)
    cfg = section(params, "backtest", BacktestConfig, source=params_path)
    select_cfg = section(params, "select", SelectConfig, source=params_path)
    split_cfg = section(params, "split", SplitConfig, source=params_path)
    features = Path(features_dir)
    spec_dict = read_json(features / "spec.json")
    spec = FeatureSpec.load(features / "spec.json")
    df = pl.read_parquet(features / "features.parquet")
    train_cfg = section(params, "train", TrainConfig, source=params_path)
    rt = setup_runtime(train_cfg.device, train_cfg.threads)
    ft_strategy = section(params, "finetune", FinetuneConfig, source=params_path).strategy
    strategies = list(dict.fromkeys([ft_strategy, *cfg.strategies]))
    periods = []
    for k in sorted(cfg.folds, reverse=True):  # the oldest first
        parts = fold_parts(df, spec_dict, split_cfg, k, select_cfg.fold_days, seed(params))
        window = fold_windows(split_cfg.windows, k, select_cfg.fold_days)["test"]
        name = label(f"fold {k}", window)
        log.info("backtest %s: %s", name, {p: d.height for p, d in parts.items()})
        folder = Path(folds_dir) / str(k)
        if k in select_cfg.folds:
            if not (folder / FOLD_PREDICTIONS).is_file():
                raise DataError(f"{folder}: no fold output; run the pipeline first (dvc repro)")
            period = read_period(
                name, pl.read_parquet(folder / FOLD_PREDICTIONS),
                read_json(folder / FOLD_INFO)["valid_roc_auc"], load_torch_members(folder / FOLD_BASE),
                parts, params, cfg, spec, rt, source=params_path,
                valid_frame=pl.read_parquet(folder / FOLD_VALID),
            )  # fmt: skip
        else:
            period = fitted_period(name, parts, params, cfg, spec, rt, source=params_path)
        periods.append({"period": name, "rows": {p: d.height for p, d in parts.items()}, **period})
    add_ensembles(periods, section(params, "ensemble", EnsembleConfig, source=params_path))
    parts = {p: read_part(split_dir, p, spec) for p in PARTS}
    name = label(TEST, split_cfg.windows["test"])
    evaluated = read_json(evaluation)
    period = read_period(
        name, pl.read_parquet(Path(predictions_dir) / "test.parquet"),
        {c: m["valid"]["roc_auc"] for c, m in evaluated.items()}, load_torch_members(base_dir),
        parts, params, cfg, spec, rt, source=params_path,
    )  # fmt: skip
    periods.append({"period": name, "rows": {p: d.height for p, d in parts.items()}, **period})

    result = {
        "periods": periods,
        **summarise(periods, strategies, ft_strategy),
        "selection": regret(periods, select_cfg.candidates, max(len(select_cfg.folds), 1)),
    }
    points = [
        {"period": m["period"], "candidate": name, "roc_auc": auc}
        for m in periods
        for name, auc in m["roc_auc"].items()
    ]
    markdown = report_markdown(result)
    metrics = {
        **{k: v for k, v in result.items() if k != "periods"},
        "periods": [{k: v for k, v in m.items() if not k.startswith("_")} for m in periods],
    }  # no timings in the metrics: the same inputs give the same file (the Markdown has them)
    with atomic_outputs(out_dir, metrics_path) as (tmp_dir, tmp_metrics):
        tmp_dir.mkdir()
        (tmp_dir / "backtest.md").write_text(markdown)
        write_json(tmp_metrics, metrics)
        write_json(tmp_dir / "points.json", points)
    log.info("backtest:\n%s", markdown)


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Study: walk-forward backtest, folds and the test window."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime backtest``: its description and options (the studies/dvc.yaml stage passes them)."""
    parser.description = (
        "Walk-forward backtest (params `backtest`): for each period (select's folds, further back than "
        "select.folds, and the test window) every candidate fitted as its stage fits it, each fine-tune "
        "strategy too, scored on the period; the periods select's folds and the pipeline already fitted "
        "are read, not refit. Per period and averaged, and the selection regret."
    )
    command.add_params(parser)
    parser.add_argument("--features", required=True, help=command.FEATURES)
    parser.add_argument("--folds", required=True, help="the fold stages' folder (data/folds)")
    parser.add_argument("--split", required=True, help=command.SPLIT)
    parser.add_argument("--predictions", required=True, help="evaluate's predictions folder")
    parser.add_argument("--base", required=True, help="train's model (the test window's strategies)")
    parser.add_argument("--evaluation", required=True, help="evaluate's metrics (validation figures)")
    parser.add_argument(
        "--out",
        required=True,
        help="output folder: backtest.md (with fitting times) and points.json (the plot)",
    )
    parser.add_argument(
        "--metrics", required=True, help="JSON: ROC AUC per period and model, means, fine-tuned minus base"
    )


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(
        params_path=args.params,
        features_dir=args.features,
        folds_dir=args.folds,
        split_dir=args.split,
        predictions_dir=args.predictions,
        base_dir=args.base,
        evaluation=args.evaluation,
        out_dir=args.out,
        metrics_path=args.metrics,
    )
