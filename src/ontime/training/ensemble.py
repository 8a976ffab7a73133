"""ensemble: combine candidates with weights fitted on rows no member trained on (never test rows).

Two methods: ``weighted`` (a convex combination of the members' probabilities minimising log loss)
and ``stacking`` (a logistic regression on the members' logits).

With walk-forward folds (``select.folds``, the default) both are fitted on the members' predictions
on the folds' test windows, pooled: the fold stages fit each member as its stage does, on what
precedes the fold, so these are out-of-sample answers of the same models, over months rather than
one fortnight. Each fold's own ensemble predictions (what select rates) are cross-fitted: weights
fitted on the other folds only, never on the rows that rate them. The ensemble's ``finetune_valid``
predictions combine the members' held-out ones (no validation row fitted the weights).

Without folds (``select.folds: []``) they are fitted on the ``finetune_valid`` part, which no member
trained on (a member refit on it afterwards gives its predictions from before the refit:
``ontime.candidates.validation_predictions``), and the validation predictions are out-of-fold: the
validation rows are cut into ``ensemble.folds`` time-ordered blocks, each predicted by weights
fitted on the others.
An ensemble folder holds copies of its members, so it is self-contained (for packaging).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

from ontime import command
from ontime.candidates import VALID_PART, Candidate, load_candidate, validation_predictions
from ontime.candidates.ensemble_model import EPS, EnsembleCandidate, combine, logit
from ontime.config import load_params, section
from ontime.config.ensemble import EnsembleConfig
from ontime.config.select import FOLD_PREDICTIONS, SelectConfig
from ontime.errors import ConfigError, DataError
from ontime.io import atomic_outputs, write_json
from ontime.spec import FeatureSpec, read_part

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- combiners ---
def fit_weights(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Convex weights (softmax-parametrised) minimising log loss of ``P @ w``. P: (n, m)."""

    def loss(z: np.ndarray) -> float:
        w = np.exp(z - z.max())
        w /= w.sum()
        return float(log_loss(y, np.clip(P @ w, EPS, 1 - EPS), labels=[0, 1]))

    z = minimize(
        loss,
        np.zeros(P.shape[1]),
        method="Nelder-Mead",
        options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 4000},
    ).x
    w = np.exp(z - z.max())
    return w / w.sum()


def fit_stacking(P: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    reg = LogisticRegression(C=c, max_iter=1000).fit(logit(P), y)
    return reg.coef_[0].astype(np.float64), float(reg.intercept_[0])


def fit_state(method: str, P: np.ndarray, y: np.ndarray, cfg: EnsembleConfig) -> dict[str, Any]:
    if method == "weighted":
        return {"weights": [float(w) for w in fit_weights(P, y)]}
    coef, intercept = fit_stacking(P, y, cfg.stacking_c)
    return {"coef": [float(c) for c in coef], "intercept": intercept}


def out_of_fold(method: str, P: np.ndarray, y: np.ndarray, cfg: EnsembleConfig) -> np.ndarray:
    """Each time-ordered block predicted by a combiner fitted on the other blocks."""
    oof = np.empty(len(y))
    for block in np.array_split(np.arange(len(y)), cfg.folds):
        rest = np.setdiff1d(np.arange(len(y)), block)
        if len(np.unique(y[rest])) < 2:
            raise DataError(
                f"ensemble: a validation fold has one class; lower ensemble.folds (now {cfg.folds})"
            )
        oof[block] = combine(method, P[block], fit_state(method, P[rest], y[rest], cfg))
    return oof


Blocks = dict[int, tuple[np.ndarray, np.ndarray]]  # fold -> (members' probabilities (n, m), labels)


def cross_fitted(method: str, folds: Blocks, cfg: EnsembleConfig) -> dict[int, dict[str, Any]]:
    """For each fold, the combiner's state fitted on the other folds' rows only (never its own)."""
    if len(folds) < 2:
        raise ConfigError(
            f"ensemble: folds {sorted(folds)} is one fold, but each fold's ensemble is weighted on the "
            "other folds; list two folds or more (select.folds, backtest.folds), or select.folds: [] "
            "(weights on the validation rows)"
        )
    out = {}
    for k in folds:
        P_rest = np.vstack([b[0] for j, b in folds.items() if j != k])
        y_rest = np.concatenate([b[1] for j, b in folds.items() if j != k])
        out[k] = fit_state(method, P_rest, y_rest, cfg)
    return out


def read_fold_blocks(folds_dir: str | Path, folds: list[int], members: list[str], target: str) -> Blocks:
    """The members' probabilities and the labels on each fold's test rows (``ontime fold``'s output)."""
    out = {}
    for k in folds:
        path = Path(folds_dir) / str(k) / FOLD_PREDICTIONS
        if not path.is_file():
            raise DataError(f"{path}: not found; run the fold stages first (dvc repro fold@{k})")
        df = pl.read_parquet(path)
        missing = [c for c in [target, *members] if c not in df.columns]
        if missing:
            raise DataError(
                f"{path}: no column(s) {missing} for ensemble.members; re-run it (dvc repro fold@{k})"
            )
        out[k] = (
            df.select(members).to_numpy().astype(np.float64),
            df.get_column(target).to_numpy().astype(np.int64),
        )
    return out


# -------------------------------------------------------------------------------------- stage ---
def build(
    cfg: EnsembleConfig,
    members: list[Candidate],
    valid: pl.DataFrame,
    target: str,
    folds: Blocks | None = None,
) -> tuple[list[EnsembleCandidate], dict[str, Any], dict[str, dict[int, np.ndarray]]]:
    """Fit every configured ensemble: on the pooled ``folds`` (members' fold test predictions) when
    given, else on ``valid``. Returns the ensembles, their metrics and, with folds, each ensemble's
    cross-fitted predictions on each fold's rows."""
    y = valid.get_column(target).to_numpy().astype(np.int64)
    P = np.column_stack([validation_predictions(m, valid, VALID_PART) for m in members])
    out: list[EnsembleCandidate] = []
    metrics: dict[str, Any] = {}
    on_folds: dict[str, dict[int, np.ndarray]] = {}
    if folds:
        P_folds = np.vstack([b[0] for b in folds.values()])
        y_folds = np.concatenate([b[1] for b in folds.values()])
    for method in cfg.methods:
        name = f"ens_{method}"
        if folds:
            state = fit_state(method, P_folds, y_folds, cfg)
            held_out = combine(method, P, state)  # no validation row fitted the weights
            states = cross_fitted(method, folds, cfg)
            on_folds[name] = {k: combine(method, folds[k][0], st) for k, st in states.items()}
            fold_auc = {
                str(k): round(float(roc_auc_score(folds[k][1], p)), 6) for k, p in on_folds[name].items()
            }
            metrics[name] = {"fitted_on": f"folds {sorted(folds)}", "fold_roc_auc": fold_auc}
        else:
            held_out = out_of_fold(method, P, y, cfg)
            state = fit_state(method, P, y, cfg)
            metrics[name] = {"fitted_on": VALID_PART}
        out.append(EnsembleCandidate(name=name, method=method, members=members, state=state, oof=held_out))
        metrics[name] |= {"oof_valid_roc_auc": round(float(roc_auc_score(y, held_out)), 6), **state}
        log.info("ensemble %s (on %s): validation ROC AUC %.4f, %s", name, metrics[name]["fitted_on"],
                 metrics[name]["oof_valid_roc_auc"], state)  # fmt: skip
    metrics["members_valid_roc_auc"] = {
        m.name: round(float(roc_auc_score(y, P[:, i])), 6) for i, m in enumerate(members)
    }
    if folds:
        metrics["members_fold_roc_auc"] = {
            m.name: {str(k): round(float(roc_auc_score(b[1], b[0][:, i])), 6) for k, b in folds.items()}
            for i, m in enumerate(members)
        }
    return out, metrics, on_folds


def write_fold_predictions(path: Path, folds: Blocks, on_folds: dict[str, dict[int, np.ndarray]]) -> None:
    """``fold`` and one column per ensemble, the folds' rows in order (as select reads them)."""
    order = sorted(folds)
    frame = pl.DataFrame(
        {
            "fold": np.concatenate([np.full(len(folds[k][1]), k, dtype=np.int64) for k in order]),
            **{name: np.concatenate([preds[k] for k in order]) for name, preds in sorted(on_folds.items())},
        }
    )
    frame.write_parquet(path)


ENSEMBLE_FOLDS = "folds.parquet"  # in the output folder: each ensemble's cross-fitted fold predictions


def main(
    params_path: str,
    split_dir: str,
    spec_path: str,
    member_dirs: list[str],
    out_dir: str,
    metrics_path: str,
    folds_dir: str | None = None,
) -> None:
    params = load_params(params_path)
    cfg = section(params, "ensemble", EnsembleConfig, source=params_path)
    select_folds = section(params, "select", SelectConfig, source=params_path).folds
    spec = FeatureSpec.load(spec_path)
    valid = read_part(split_dir, VALID_PART, spec)
    loaded = {Path(d): load_candidate(d) for d in member_dirs}
    by_name = {c.name: (path, c) for path, c in loaded.items()}
    unknown = [m for m in cfg.members if m not in by_name]
    if unknown:
        raise DataError(f"ensemble.members {unknown} are not among the candidates given: {sorted(by_name)}")
    members = [by_name[m][1] for m in cfg.members]
    folds = None
    if select_folds:
        if folds_dir is None:
            raise ConfigError(f"select.folds is {select_folds}: pass --folds (the fold stages' folder)")
        folds = read_fold_blocks(folds_dir, select_folds, cfg.members, spec.target)
    ensembles, metrics, on_folds = build(cfg, members, valid, spec.target, folds)
    with atomic_outputs(out_dir, metrics_path) as (tmp, tmp_metrics):
        for ens in ensembles:
            ens.save(tmp / ens.name, {m: by_name[m][0] for m in cfg.members})
        if folds:
            write_fold_predictions(tmp / ENSEMBLE_FOLDS, folds, on_folds)
        write_json(tmp_metrics, metrics)


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Fit weighted and stacked ensembles of the candidates."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime ensemble``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "Fit ensembles of candidates (params `ensemble`): a weighted average and stacking, fitted on the "
        "members' predictions on the walk-forward folds (select.folds; each fold's own predictions "
        "weighted on the other folds), or on finetune_valid rows with select.folds: []."
    )
    command.add_params(parser)
    parser.add_argument("--split", required=True, help=command.SPLIT)
    parser.add_argument("--spec", required=True, help=command.SPEC)
    parser.add_argument("--candidate", action="append", required=True, help="a member model folder; repeat")
    parser.add_argument("--out", required=True, help="output folder (one folder per ensemble)")
    parser.add_argument("--metrics", required=True, help="JSON: ensemble weights and validation scores")
    parser.add_argument("--folds", help="the fold stages' folder (data/folds), needed with select.folds")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(
        params_path=args.params,
        split_dir=args.split,
        spec_path=args.spec,
        member_dirs=args.candidate,
        out_dir=args.out,
        metrics_path=args.metrics,
        folds_dir=args.folds,
    )
