"""ensemble: combine candidates with weights fitted on validation rows (never test rows).

Two methods: ``weighted`` (a convex combination of the members' probabilities minimising log loss)
and ``stacking`` (a logistic regression on the members' logits). Both are fitted on the
``finetune_valid`` part, which no member trained on. So that selection can compare an ensemble
with its members fairly, its validation predictions are out-of-fold: the validation rows are cut
into ``folds`` time-ordered blocks and each block is predicted by weights fitted on the others.
An ensemble folder holds copies of its members, so it is self-contained (for packaging).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

from ontime.candidates import Candidate, load_candidate, write_candidate_info
from ontime.config import EnsembleConfig, load_params, section
from ontime.errors import DataError
from ontime.io import atomic_outputs, read_json, write_json, write_parquet
from ontime.spec import FeatureSpec, read_part

log = logging.getLogger(__name__)

VALID_PART = "finetune_valid"
EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


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
    reg = LogisticRegression(C=c, max_iter=1000).fit(_logit(P), y)
    return reg.coef_[0].astype(np.float64), float(reg.intercept_[0])


def combine(method: str, P: np.ndarray, state: dict[str, Any]) -> np.ndarray:
    if method == "weighted":
        return P @ np.asarray(state["weights"])
    z = _logit(P) @ np.asarray(state["coef"]) + state["intercept"]
    return 1.0 / (1.0 + np.exp(-z))


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


# ---------------------------------------------------------------------------------- candidate ---
class EnsembleCandidate:
    """Members plus a fitted combiner; ``oof`` holds its out-of-fold validation predictions."""

    def __init__(
        self,
        *,
        name: str,
        method: str,
        members: list[Candidate],
        state: dict[str, Any],
        oof: np.ndarray | None = None,
    ) -> None:
        self.name, self.method, self.members, self.state = name, method, members, state
        self.oof = {VALID_PART: oof} if oof is not None else {}

    def predict_proba(self, df: pl.DataFrame) -> np.ndarray:
        P = np.column_stack([m.predict_proba(df) for m in self.members])
        return combine(self.method, P, self.state)

    def save(self, folder: Path, member_dirs: dict[str, Path]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, src in member_dirs.items():
            shutil.copytree(src, folder / "members" / name)
        write_json(
            folder / "combiner.json",
            {"method": self.method, "members": [m.name for m in self.members], **self.state},
        )
        if VALID_PART in self.oof:
            write_parquet(pl.DataFrame({"oof": self.oof[VALID_PART]}), folder / f"oof_{VALID_PART}.parquet")
        write_candidate_info(folder, kind="ensemble", name=self.name, method=self.method)

    @classmethod
    def load(cls, folder: str | Path) -> EnsembleCandidate:
        folder = Path(folder)
        combiner = read_json(folder / "combiner.json")
        members = [load_candidate(folder / "members" / n) for n in combiner.pop("members")]
        oof_path = folder / f"oof_{VALID_PART}.parquet"
        oof = pl.read_parquet(oof_path).get_column("oof").to_numpy() if oof_path.is_file() else None
        method = combiner.pop("method")
        return cls(
            name=read_json(folder / "candidate.json")["name"],
            method=method,
            members=members,
            state=combiner,
            oof=oof,
        )


# -------------------------------------------------------------------------------------- stage ---
def build(
    cfg: EnsembleConfig, members: list[Candidate], valid: pl.DataFrame, target: str
) -> tuple[list[EnsembleCandidate], dict[str, Any]]:
    """Fit every configured ensemble on ``valid`` (validation rows only)."""
    y = valid.get_column(target).to_numpy().astype(np.int64)
    P = np.column_stack([m.predict_proba(valid) for m in members])
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
