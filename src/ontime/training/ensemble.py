"""ensemble: combine candidates with weights fitted on validation rows (never test rows).

Two methods: ``weighted`` (a convex combination of the members' probabilities minimising log loss)
and ``stacking`` (a logistic regression on the members' logits). Both are fitted on the
``finetune_valid`` part, which no member trained on (a member refit on it afterwards gives its
predictions from before the refit: ``ontime.candidates.validation_predictions``). So that
selection can compare an ensemble with its members fairly, its validation predictions are
out-of-fold: the validation rows are cut into ``folds`` time-ordered blocks and each block is
predicted by weights fitted on the others.
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
from ontime.errors import DataError
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


# -------------------------------------------------------------------------------------- stage ---
def build(
    cfg: EnsembleConfig, members: list[Candidate], valid: pl.DataFrame, target: str
) -> tuple[list[EnsembleCandidate], dict[str, Any]]:
    """Fit every configured ensemble on ``valid`` (validation rows only)."""
    y = valid.get_column(target).to_numpy().astype(np.int64)
    P = np.column_stack([validation_predictions(m, valid, VALID_PART) for m in members])
    out, metrics = [], {}
    for method in cfg.methods:
        oof = out_of_fold(method, P, y, cfg)
        state = fit_state(method, P, y, cfg)
        name = f"ens_{method}"
        out.append(EnsembleCandidate(name=name, method=method, members=members, state=state, oof=oof))
        metrics[name] = {"oof_valid_roc_auc": round(float(roc_auc_score(y, oof)), 6), **state}
        log.info(
            "ensemble %s: out-of-fold validation ROC AUC %.4f, %s",
            name,
            metrics[name]["oof_valid_roc_auc"],
            state,
        )
    metrics["members_valid_roc_auc"] = {
        m.name: round(float(roc_auc_score(y, P[:, i])), 6) for i, m in enumerate(members)
    }
    return out, metrics


def main(
    params_path: str, split_dir: str, spec_path: str, member_dirs: list[str], out_dir: str, metrics_path: str
) -> None:
    cfg = section(load_params(params_path), "ensemble", EnsembleConfig, source=params_path)
    spec = FeatureSpec.load(spec_path)
    valid = read_part(split_dir, VALID_PART, spec)
    loaded = {Path(d): load_candidate(d) for d in member_dirs}
    by_name = {c.name: (path, c) for path, c in loaded.items()}
    unknown = [m for m in cfg.members if m not in by_name]
    if unknown:
        raise DataError(f"ensemble.members {unknown} are not among the candidates given: {sorted(by_name)}")
    members = [by_name[m][1] for m in cfg.members]
    ensembles, metrics = build(cfg, members, valid, spec.target)
    with atomic_outputs(out_dir, metrics_path) as (tmp, tmp_metrics):
        for ens in ensembles:
            ens.save(tmp / ens.name, {m: by_name[m][0] for m in cfg.members})
        write_json(tmp_metrics, metrics)


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Fit weighted and stacked ensembles of the candidates."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime ensemble``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "Fit ensembles of candidates on finetune_valid rows (params `ensemble`): a weighted average and "
        "stacking, with out-of-fold validation predictions for a fair selection."
    )
    command.add_params(parser)
    parser.add_argument("--split", required=True, help=command.SPLIT)
    parser.add_argument("--spec", required=True, help=command.SPEC)
    parser.add_argument("--candidate", action="append", required=True, help="a member model folder; repeat")
    parser.add_argument("--out", required=True, help="output folder (one folder per ensemble)")
    parser.add_argument("--metrics", required=True, help="JSON: ensemble weights and validation scores")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(
        params_path=args.params,
        split_dir=args.split,
        spec_path=args.spec,
        member_dirs=args.candidate,
        out_dir=args.out,
        metrics_path=args.metrics,
    )
