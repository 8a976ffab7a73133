"""fold: one walk-forward fold of the champion's cross-validation, every candidate refit on it.

Select compares the candidates on folds that lie before the test window, not on one fortnight of
validation rows. Fold ``k`` (an item of ``select.folds``) is the split moved back in time: every
window of ``split.windows`` ends ``k * select.fold_days`` days earlier (the training window keeps
its start, as the final fit's does), so its test window is the ``k``-th stretch of ``fold_days``
days before the pipeline's test window. In it, every member candidate is fitted as its stage fits
it, by the stage's own function (:func:`fit_candidates`: ``train.train_members``,
``finetune.finetune_members``, ``baseline.train_baseline``, ``linear.train_linear``,
``svm.train_svm``) with the params of the run, on the fold's parts (cut by ``split.split`` with the
run's validation rule), and scored on the fold's test window, which none of them saw:
preprocessing, vocabularies, early stopping and refits see the fold's training and validation rows
only. The ensembles come after the folds (the ensemble stage): their weights are fitted on these
test predictions, each fold's own on the other folds'. The backtest study calls the same function.

Writes ``<out>/predictions.parquet`` (the time column, the target and one probability column per
candidate, rows in time order), ``<out>/valid_predictions.parquet`` (the target and each
candidate's held-out probabilities on the fold's ``finetune_valid`` rows), ``<out>/fold.json`` (the
windows, rows, each candidate's ROC AUC on the fold's test window and on its validation rows) and
``<out>/base/`` (the trained network before fine-tuning, which the backtest study fine-tunes with
its other strategies). Nothing is checkpointed; LightGBM's CV is off (the folds are a CV of their own).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ontime import command
from ontime.candidates import VALID_PART, Candidate, validation_predictions
from ontime.candidates.torch_model import TorchCandidate, one, save_seed_bag
from ontime.config import load_params, section, seed
from ontime.config.baseline import BaselineConfig
from ontime.config.finetune import FinetuneConfig
from ontime.config.linear import LinearConfig
from ontime.config.model import model_section
from ontime.config.preprocess import PreprocessConfig
from ontime.config.select import FOLD_BASE, FOLD_INFO, FOLD_PREDICTIONS, FOLD_VALID, SelectConfig
from ontime.config.split import SplitConfig, SplitName, Window
from ontime.config.svm import SVMConfig
from ontime.config.train import TrainConfig
from ontime.data.split import split
from ontime.errors import ConfigError, DataError
from ontime.evaluation.metrics import roc_auc
from ontime.io import atomic_outputs, read_json, write_json, write_parquet
from ontime.spec import FeatureSpec, binary_labels, mask_optional
from ontime.training.baseline import train_baseline
from ontime.training.finetune import finetune_members
from ontime.training.linear import train_linear
from ontime.training.loop import Runtime, setup_runtime
from ontime.training.svm import train_svm
from ontime.training.train import refit_rows, train_members

log = logging.getLogger(__name__)


def fold_windows(windows: Mapping[SplitName, Window], k: int, days: int) -> dict[SplitName, Window]:
    """``windows`` (the split's) moved back by ``k * days`` days, the training window's start kept;
    the test window becomes the ``days`` days that end ``(k - 1) * days`` days before the split's
    test window starts.

    Raises:
        ConfigError: the fold leaves the training window empty (too many folds or too long).
    """
    shift = dt.timedelta(days=k * days)
    test_end = windows["test"].start - dt.timedelta(days=(k - 1) * days)
    train, finetune = windows["train"], windows["finetune"]
    if train.end - shift <= train.start:
        raise ConfigError(
            f"select.folds {k} x select.fold_days {days}: the fold's training window would end on "
            f"{train.end - shift}, before split.windows.train starts ({train.start}); use fewer or "
            "shorter folds (or an earlier training start)"
        )
    return {
        "train": Window(start=train.start, end=train.end - shift),
        "finetune": Window(start=finetune.start - shift, end=finetune.end - shift),
        "test": Window(start=test_end - dt.timedelta(days=days), end=test_end),
    }


@dataclass
class Fitted:
    """Every member candidate fitted on one set of parts (by its selection name), the fine-tuned
    models of further strategies (``finetuned_<strategy>``), each model's held-out ``finetune_valid``
    probabilities and ROC AUC, and fit seconds. The ensembles are fitted across folds
    (``ontime.training.ensemble.cross_fitted``), not here."""

    models: dict[str, Candidate]
    bases: list[TorchCandidate] = field(default_factory=list)  # the trained network(s) before fine-tuning
    strategies: dict[str, Candidate] = field(default_factory=dict)
    valid_roc_auc: dict[str, float] = field(default_factory=dict)
    valid_predictions: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def fit_candidates(
    parts: dict[str, pl.DataFrame],
    params: dict[str, Any],
    spec: FeatureSpec,
    rt: Runtime,
    *,
    source: str,
    strategies: list[str] | tuple[str, ...] = (),
) -> Fitted:
    """Fit every member candidate on ``parts`` (``split.split``'s) as the pipeline's stages fit them.

    ``base`` (train), ``finetuned`` (finetune, ``finetune.strategy``), ``lgbm_train`` and
    ``lgbm_all`` (baseline, its CV off), ``linear`` and ``svm``. The ensembles are not fitted here:
    their weights come from the members' predictions on the other folds. ``strategies``: further
    fine-tuning strategies, fitted from the same base.
    """
    seed_ = seed(params)
    train_cfg = section(params, "train", TrainConfig, source=source)
    ft_cfg = section(params, "finetune", FinetuneConfig, source=source)
    pre_cfg = section(params, "preprocess", PreprocessConfig, source=source)
    base_cfg = section(params, "baseline", BaselineConfig, source=source).model_copy(update={"cv_folds": 0})
    lin_cfg = section(params, "linear", LinearConfig, source=source)
    svm_cfg = section(params, "svm", SVMConfig, source=source)
    out = Fitted(models={})

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
    out.seconds["base"] = time.perf_counter() - started
    out.bases = bases  # fine-tuning below works on copies
    out.models["base"] = one("base", bases)
    out.extra["base"] = {"best_epoch": train_metrics["best_epoch"]}

    for strategy in dict.fromkeys([ft_cfg.strategy, *strategies]):
        name = "finetuned" if strategy == ft_cfg.strategy else f"finetuned_{strategy}"
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
        out.seconds[name] = time.perf_counter() - started
        (out.models if name == "finetuned" else out.strategies)[name] = one(name, tuned)
        out.extra[name] = {
            "best_epoch": ft_metrics["best_epoch"],
            "trainable_parameters": ft_metrics["trainable_parameters"],
        }

    started = time.perf_counter()
    lgbm, _ = train_baseline(parts, spec, base_cfg, seed_)
    out.seconds["lightgbm (both)"] = time.perf_counter() - started
    for name, booster in lgbm.items():
        out.models[name] = booster
        out.extra[name] = {"trees": booster.best_iteration}

    started = time.perf_counter()
    out.models["linear"], _ = train_linear(parts, spec, pre_cfg, lin_cfg, seed_)
    out.seconds["linear"] = time.perf_counter() - started
    started = time.perf_counter()
    out.models["svm"], _ = train_svm(parts, spec, pre_cfg, svm_cfg, seed_)
    out.seconds["svm"] = time.perf_counter() - started

    valid = parts[VALID_PART]
    y_valid = valid.get_column(spec.target).to_numpy()
    for name, fitted in {**out.models, **out.strategies}.items():
        out.valid_predictions[name] = validation_predictions(fitted, valid, VALID_PART)
        out.valid_roc_auc[name] = round(roc_auc(y_valid, out.valid_predictions[name]), 6)
    return out


def fold_parts(
    df: pl.DataFrame, spec_dict: dict[str, Any], split_cfg: SplitConfig, k: int, days: int, seed_: int
) -> dict[str, pl.DataFrame]:
    """The split parts of fold ``k``: ``split.split`` on the moved windows."""
    if split_cfg.method != "time":
        raise ConfigError(
            f"the folds walk forward in time, but split.method is {split_cfg.method!r}; use "
            "split.method: time (and a time column), or select.folds: [] to select on the validation rows"
        )
    windows = fold_windows(split_cfg.windows, k, days)
    try:
        return split(df, spec_dict, split_cfg.model_copy(update={"windows": windows}), seed_)
    except DataError as exc:
        raise DataError(f"fold {k}: {exc}; or change select.folds / select.fold_days") from exc


def main(params_path: str, fold: int, features_dir: str, out_dir: str) -> None:
    params = load_params(params_path)
    cfg = section(params, "select", SelectConfig, source=params_path)
    if fold not in cfg.folds:
        raise ConfigError(f"--fold {fold} is not in select.folds {cfg.folds}")
    split_cfg = section(params, "split", SplitConfig, source=params_path)
    features = Path(features_dir)
    spec = FeatureSpec.load(features / "spec.json")
    spec_dict = read_json(features / "spec.json")
    df = pl.read_parquet(features / "features.parquet")
    parts = fold_parts(df, spec_dict, split_cfg, fold, cfg.fold_days, seed(params))
    log.info("fold %d: %s", fold, {p: d.height for p, d in parts.items()})
    test = parts["test"]
    y = binary_labels(test, spec.target, f"fold {fold}: the test rows", fix="change select.folds / fold_days")
    train_cfg = section(params, "train", TrainConfig, source=params_path)
    fitted = fit_candidates(parts, params, spec, setup_runtime(train_cfg.device, train_cfg.threads),
                            source=params_path)  # fmt: skip
    probs = {name: np.asarray(m.predict_proba(test), dtype=np.float64) for name, m in fitted.models.items()}
    time_column = spec_dict.get("time_column")
    frame = pl.DataFrame(
        {
            **({time_column: test.get_column(time_column)} if time_column else {}),
            spec.target: test.get_column(spec.target),
            **{name: probs[name] for name in sorted(probs)},
        }
    )
    windows = fold_windows(split_cfg.windows, fold, cfg.fold_days)
    info: dict[str, Any] = {
        "fold": fold,
        "windows": {k: {"start": str(w.start), "end": str(w.end)} for k, w in windows.items()},
        "rows": {p: d.height for p, d in parts.items()},
        "positive_rate": round(float(y.mean()), 6),
        "roc_auc": {name: round(roc_auc(y, probs[name]), 6) for name in sorted(probs)},
        "valid_roc_auc": dict(sorted(fitted.valid_roc_auc.items())),
        "models": fitted.extra,
    }
    with atomic_outputs(out_dir) as (tmp,):
        tmp.mkdir()
        write_parquet(frame, tmp / FOLD_PREDICTIONS)
        valid = parts[VALID_PART]
        write_parquet(
            pl.DataFrame(
                {
                    spec.target: valid.get_column(spec.target),
                    **{name: fitted.valid_predictions[name] for name in sorted(fitted.models)},
                }
            ),
            tmp / FOLD_VALID,
        )
        write_json(tmp / FOLD_INFO, info)
        # the trained network, which the backtest study fine-tunes with its other strategies
        base_info = {"trained_on": ["train", *(["train_valid"] if train_cfg.refit else [])],
                     "validated_on": "train_valid"}  # fmt: skip
        if len(fitted.bases) == 1:
            fitted.bases[0].save(tmp / FOLD_BASE, **base_info)
        else:
            save_seed_bag(tmp / FOLD_BASE, name="base", members=fitted.bases, **base_info)
    for name, auc in info["roc_auc"].items():
        log.info("fold %d: %-14s ROC AUC %.4f", fold, name, auc)
    log.info("fold %d: seconds %s", fold, {k: round(v, 1) for k, v in fitted.seconds.items()})


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Refit every candidate on one walk-forward fold."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime fold``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "One fold of select's walk-forward cross-validation (params `select.folds`, `select.fold_days`): "
        "the split's windows moved back, every candidate fitted as its stage fits it, scored on the "
        "fold's test window."
    )
    command.add_params(parser)
    parser.add_argument("--fold", type=int, required=True, help="which fold (an item of select.folds)")
    parser.add_argument("--features", required=True, help=command.FEATURES)
    parser.add_argument("--out", required=True, help="output folder: predictions.parquet and fold.json")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(params_path=args.params, fold=args.fold, features_dir=args.features, out_dir=args.out)
