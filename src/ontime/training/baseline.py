"""baseline: LightGBM on the spec's features, the bar the neural model must clear.

Two candidates: ``lgbm_train`` trains on the ``train`` part with early stopping on ``train_valid``
(the rows the neural model trains on: a fair comparison); ``lgbm_all`` trains on every non-test row
but the fine-tune window's validation days (``train`` + ``train_valid`` + ``finetune``) and stops
early on ``finetune_valid``. An expanding-window time-series CV over the training window reports how
stable the score is from month to month.

Refit (``baseline.refit``): once early stopping has chosen the number of trees, each candidate is
fitted again, with that many trees and the same settings, on its rows plus its validation days
(``lgbm_train``: ``train`` + ``train_valid``; ``lgbm_all``: every non-test row). The most recent
days are worth the most on a drifting problem, and early stopping alone never trains on them.
Validation scores stay the first fit's: ``lgbm_all`` keeps that fit's predictions for
``finetune_valid`` as its held-out predictions, which evaluate, ensemble and select use instead of
the refit model's (``ontime.candidates.validation_predictions``).

Recency weighting (``baseline.half_life_days``): a fitting row's weight halves every N days before
the newest fitting row (its time column), in the first fit and the refit alike.

Categoricals are encoded with vocabularies fitted on the rows a model trains on (code 0: unknown or
null, ``i + 1``: ``vocab[i]``) and passed to LightGBM as native categorical features; numeric features
go in as float64 with NaN for missing values, which LightGBM handles natively. A model saves as
LightGBM's text format plus JSON, never pickle.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

from ontime import command
from ontime.candidates import VALID_PART
from ontime.candidates.lightgbm_model import LightGBMCandidate, encode
from ontime.config import load_params, section
from ontime.config import seed as read_seed
from ontime.config.baseline import BaselineConfig
from ontime.errors import DataError
from ontime.io import atomic_outputs, write_json
from ontime.spec import FeatureSpec, binary_labels, mask_optional, read_part

log = logging.getLogger(__name__)
FIX = "widen split.windows (or baseline.cv_folds for CV)"  # a part with one class

FITTING = ("train", "train_valid", "finetune", "finetune_valid")  # parts some candidate fits on
# name -> (parts it trains on, part it stops early on; the refit fits on both)
CANDIDATES = {
    "lgbm_train": (("train",), "train_valid"),
    "lgbm_all": (("train", "train_valid", "finetune"), "finetune_valid"),
}


# ----------------------------------------------------------------------------------- encoding ---
def fit_vocabularies(df: pl.DataFrame, categorical: Sequence[str]) -> dict[str, list[str]]:
    """Per categorical column, the sorted distinct non-null values of ``df`` (as strings)."""
    return {c: df.get_column(c).cast(pl.String).drop_nulls().unique().sort().to_list() for c in categorical}


def fit_lightgbm(
    train: pl.DataFrame,
    valid: pl.DataFrame,
    spec: FeatureSpec,
    cfg: BaselineConfig,
    seed: int,
    *,
    name: str = "lightgbm",
    trained_on: Sequence[str] = ("train",),
    valid_on: str = "train_valid",
) -> LightGBMCandidate:
    """Train on ``train`` with early stopping (AUC) on ``valid``; encodings are fitted on ``train`` only.

    ``trained_on`` and ``valid_on`` name the rows, for error messages and ``candidate.json``.
    """
    y_valid = binary_labels(valid, spec.target, f"validation rows ({valid_on})", fix=FIX)
    return _fit(train, spec, cfg, seed, name=name, trained_on=trained_on, valid=(valid, y_valid, valid_on))


def refit_lightgbm(
    rows: pl.DataFrame,
    spec: FeatureSpec,
    cfg: BaselineConfig,
    seed: int,
    *,
    trees: int,
    name: str,
    trained_on: Sequence[str],
) -> LightGBMCandidate:
    """Fit on ``rows`` with exactly ``trees`` trees (chosen earlier by early stopping) and no
    validation rows; encodings are fitted on ``rows``."""
    return _fit(rows, spec, cfg, seed, name=name, trained_on=trained_on, trees=trees)


def recency_weights(df: pl.DataFrame, spec: FeatureSpec, half_life_days: float | None) -> np.ndarray | None:
    """Per row, ``0.5 ** (age / half_life_days)`` with age in days before the newest row of ``df``;
    None without a half-life (equal weights)."""
    if half_life_days is None:
        return None
    if not spec.time_column:
        raise DataError(
            "baseline.half_life_days weights rows by age, which needs a time column "
            "(featurize.time_column); set baseline.half_life_days: null"
        )
    t = pl.col(spec.time_column)
    age = df.select(((t.max() - t).dt.total_seconds() / 86_400.0).alias("age")).get_column("age")
    return np.power(0.5, age.to_numpy() / half_life_days)


def _fit(
    train: pl.DataFrame,
    spec: FeatureSpec,
    cfg: BaselineConfig,
    seed: int,
    *,
    name: str,
    trained_on: Sequence[str],
    valid: tuple[pl.DataFrame, np.ndarray, str] | None = None,
    trees: int | None = None,
) -> LightGBMCandidate:
    """One LightGBM fit: with ``valid`` (rows, labels, name), up to ``cfg.n_estimators`` trees and
    early stopping on it; without, exactly ``trees`` trees."""
    y_train = binary_labels(train, spec.target, f"training rows ({'+'.join(trained_on)})", fix=FIX)
    vocabularies = fit_vocabularies(train, spec.categorical)
    x_train = encode(train, spec.numeric, spec.categorical, vocabularies)
    # The config's keys are LightGBM parameter names (min_child_samples is an alias of min_data_in_leaf).
    params: dict[str, Any] = {
        **cfg.model_dump(
            exclude={"n_estimators", "early_stopping_rounds", "cv_folds", "refit", "half_life_days"}
        ),
        **{"objective": "binary", "metric": "auc", "seed": seed, "verbosity": -1},
        **{"deterministic": True, "force_row_wise": True},
    }
    n_numeric = len(spec.numeric)
    train_set = lgb.Dataset(
        x_train,
        label=y_train,
        weight=recency_weights(train, spec, cfg.half_life_days),
        feature_name=[*spec.numeric, *spec.categorical],
        categorical_feature=list(range(n_numeric, n_numeric + len(spec.categorical))),
    )
    if valid is None:
        trained = lgb.train(params, train_set, num_boost_round=int(trees or cfg.n_estimators))
        best = trained.current_iteration()
    else:
        rows, y_valid, valid_on = valid
        x_valid = encode(rows, spec.numeric, spec.categorical, vocabularies)
        trained = lgb.train(
            params,
            train_set,
            num_boost_round=cfg.n_estimators,
            valid_sets=[lgb.Dataset(x_valid, label=y_valid, reference=train_set)],
            valid_names=[valid_on],
            callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
        )
        best = trained.best_iteration if trained.best_iteration > 0 else trained.current_iteration()
    # Rebuild from the saved text so the model in memory is exactly the one a later load reads.
    booster = lgb.Booster(model_str=trained.model_to_string(num_iteration=best))
    return LightGBMCandidate(
        name=name,
        booster=booster,
        vocabularies=vocabularies,
        numeric=list(spec.numeric),
        categorical=list(spec.categorical),
        best_iteration=best,
        trained_on=list(trained_on),
        refit=valid is None,
    )


# ------------------------------------------------------------------------------------------- CV ---
def roc_auc(model: LightGBMCandidate, df: pl.DataFrame, target: str) -> float:
    return float(roc_auc_score(df.get_column(target).to_numpy(), model.predict_proba(df)))


def cv_periods(window: pl.DataFrame, spec: FeatureSpec, n_folds: int) -> pl.DataFrame:
    """``window`` ordered by time, with a sortable ``_period`` label per row.

    With a time column the periods are calendar months (``YYYY-MM``, in the column's own time
    zone); without one, ``n_folds + 1`` contiguous equal-size chunks in row order (as scikit-learn's
    ``TimeSeriesSplit``).
    """
    if spec.time_column:
        ordered = window.sort(spec.time_column, maintain_order=True)
        return ordered.with_columns(pl.col(spec.time_column).dt.strftime("%Y-%m").alias("_period"))
    chunk = (pl.int_range(pl.len(), dtype=pl.Int64) * (n_folds + 1) // pl.len()).cast(pl.String)
    return window.with_columns(pl.format("chunk-{}", chunk.str.zfill(len(str(n_folds)))).alias("_period"))


def cross_validate(window: pl.DataFrame, spec: FeatureSpec, cfg: BaselineConfig, seed: int) -> dict[str, Any]:
    """Expanding-window CV: fold k trains on periods [0, m - folds + k - 1) and scores the next one.

    Each fold keeps ``cfg.n_estimators`` and stops early on the period it scores, as the real
    candidates do on their validation days. The fold scores are therefore slightly optimistic; they
    measure the spread between months, not an unbiased level.
    """
    n_folds = cfg.cv_folds
    df = cv_periods(window, spec, n_folds)
    periods = df.get_column("_period").unique().sort().to_list()
    if len(periods) < n_folds + 1:
        unit = "month(s)" if spec.time_column else "row chunk(s)"
        raise DataError(
            f"baseline.cv_folds={n_folds} needs {n_folds + 1} periods in the training window, but it "
            f"has {len(periods)} {unit} ({', '.join(periods)}); lower baseline.cv_folds (0 disables CV)"
        )
    folds = []
    for k in range(1, n_folds + 1):
        cut = len(periods) - n_folds + k - 1
        train = df.filter(pl.col("_period").is_in(periods[:cut]))
        valid = df.filter(pl.col("_period") == periods[cut])
        model = fit_lightgbm(
            train, valid, spec, cfg, seed, name=f"cv{k}", trained_on=periods[:cut], valid_on=periods[cut]
        )
        auc = roc_auc(model, valid, spec.target)
        folds.append(
            {
                "fold": k,
                "train_periods": periods[:cut],
                "valid_period": periods[cut],
                "train_rows": train.height,
                "valid_rows": valid.height,
                "best_iteration": model.best_iteration,
                "roc_auc": round(auc, 6),
            }
        )
        log.info("baseline cv fold %d: valid %s, ROC AUC %.4f", k, periods[cut], auc)
    scores = np.array([f["roc_auc"] for f in folds])
    return {
        "folds": folds,
        "roc_auc_mean": round(float(scores.mean()), 6),
        "roc_auc_std": round(float(scores.std()), 6),
    }


def train_baseline(
    parts: dict[str, pl.DataFrame], spec: FeatureSpec, cfg: BaselineConfig, seed: int
) -> tuple[dict[str, LightGBMCandidate], dict[str, Any]]:
    """Both candidates (and the CV when ``cfg.cv_folds`` > 0) from the split parts (``FITTING``, as
    ``read_part`` gives them); the models by name and the metrics."""
    # Fitting rows with the optional groups blanked on a share of them (validation rows stay whole).
    fitting = {p: mask_optional(parts[p], spec, seed=seed, part=p) for p in FITTING}
    metrics: dict[str, Any] = {}
    if cfg.cv_folds:
        window = pl.concat([fitting["train"], parts["train_valid"]], how="vertical_relaxed")
        metrics["cv"] = cross_validate(window, spec, cfg, seed)
        log.info(
            "baseline cv: ROC AUC %.4f ± %.4f", metrics["cv"]["roc_auc_mean"], metrics["cv"]["roc_auc_std"]
        )
    models = {}
    for name, (train_parts, valid_part) in CANDIDATES.items():
        train = pl.concat([fitting[p] for p in train_parts], how="vertical_relaxed")
        valid = parts[valid_part]
        model = fit_lightgbm(
            train, valid, spec, cfg, seed, name=name, trained_on=train_parts, valid_on=valid_part
        )
        auc = roc_auc(model, valid, spec.target)
        metrics[name] = {
            "valid_roc_auc": round(auc, 6),
            "best_iteration": model.best_iteration,
            "train_rows": train.height,
        }
        log.info("baseline %s: %d trees, %s ROC AUC %.4f", name, model.best_iteration, valid_part, auc)
        if cfg.refit:
            every = (*train_parts, valid_part)
            rows = pl.concat([fitting[p] for p in every], how="vertical_relaxed")
            refit = refit_lightgbm(
                rows, spec, cfg, seed, trees=model.best_iteration, name=name, trained_on=every
            )
            if valid_part == VALID_PART:  # selection's rows: answered by the fit that never saw them
                refit.held_out = {VALID_PART: model.predict_proba(valid)}
            metrics[name]["refit_rows"] = rows.height
            trees, on = model.best_iteration, "+".join(every)
            log.info("baseline %s: refit with %d trees on %s (%d rows)", name, trees, on, rows.height)
            model = refit
        models[name] = model
    return models, metrics


# ------------------------------------------------------------------------------------------ edge ---
def main(params_path: str, split_dir: str, spec_path: str, out_dir: str, metrics_path: str) -> None:
    """Train both candidates (and the CV when ``baseline.cv_folds`` > 0); write models and metrics."""
    params = load_params(params_path)
    cfg = section(params, "baseline", BaselineConfig, source=params_path)
    seed = read_seed(params)
    spec = FeatureSpec.load(spec_path)
    parts = {p: read_part(split_dir, p, spec) for p in FITTING}
    models, metrics = train_baseline(parts, spec, cfg, seed)
    with atomic_outputs(out_dir, metrics_path) as (tmp_dir, tmp_metrics):
        tmp_dir.mkdir()
        for name, model in models.items():
            model.save(tmp_dir / name)
        write_json(tmp_metrics, metrics)


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Train the LightGBM baseline, with a time-series CV."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime baseline``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "Train the LightGBM baseline (params `baseline`) twice: on the train part (the neural model's rows) "
        "and on all non-test rows; plus an expanding-window time-series CV."
    )
    command.add_params(parser)
    parser.add_argument("--split", required=True, help=command.SPLIT)
    parser.add_argument("--spec", required=True, help=command.SPEC)
    parser.add_argument("--out", required=True, help="output folder (one model folder per candidate)")
    parser.add_argument("--metrics", required=True, help="JSON summary: validation and CV ROC AUC")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(
        params_path=args.params,
        split_dir=args.split,
        spec_path=args.spec,
        out_dir=args.out,
        metrics_path=args.metrics,
    )
