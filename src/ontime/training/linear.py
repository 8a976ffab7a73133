"""linear: a logistic regression on the neural models' preprocessing, the simplest candidate.

Inputs are what :class:`ontime.models.preprocess.Preprocessor` (params ``preprocess``) returns: the
scaled numeric columns with the training median for missing values, a 0/1 missing indicator per
numeric column that had missing values in the fitted rows, and the categorical codes (0: null,
unknown or rare), which enter one-hot, out-of-vocabulary slot included. scikit-learn's
``LogisticRegression`` (solver liblinear, L1 or L2 per ``linear.penalty``, strength ``1 / linear.C``)
fits them as a sparse matrix. liblinear because it is the faster of the two solvers that take both
penalties on this input: on the default data (294k rows, 7,085 columns) it fits L2 in 26 s (C=0.05)
where saga had not converged after 100 epochs (42 s), and L1 in 35 s (tol 1e-3) where saga needs
9 s per epoch. liblinear penalises the intercept like any weight (``intercept_scaling`` 1).

Rows: the preprocessor and the model are fitted on ``train`` + ``train_valid`` + ``finetune`` (the rows
``lgbm_all`` fits on, optional groups blanked on a share of them as for every fitting row) and scored
on ``finetune_valid``. With ``linear.refit``, both are fitted again with the same settings on every
non-test row (those parts plus ``finetune_valid``) and that model is saved; it keeps the first fit's
``finetune_valid`` predictions as its held-out predictions, which evaluate, ensemble and select use
(``ontime.candidates.validation_predictions``), so its validation scores stay honest.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ontime import command
from ontime.candidates import VALID_PART
from ontime.candidates.linear_model import LinearCandidate
from ontime.config import load_params, section
from ontime.config import seed as read_seed
from ontime.config.linear import LinearConfig
from ontime.config.preprocess import PreprocessConfig
from ontime.errors import DataError
from ontime.io import atomic_outputs, write_json
from ontime.models.preprocess import Preprocessor, design_matrix
from ontime.spec import FeatureSpec, binary_labels, mask_optional, read_part

log = logging.getLogger(__name__)

NAME = "linear"
FITTING = ("train", "train_valid", "finetune")  # the first fit's rows (lgbm_all's); scored on VALID_PART
SOLVER = "liblinear"  # L1 and L2 on sparse one-hot input; faster than saga here (see above)


# ------------------------------------------------------------------------------------------ fit ---
def fit_preprocessor(
    cfg: PreprocessConfig, spec: FeatureSpec, rows: pl.DataFrame, where: str
) -> Preprocessor:
    pre = Preprocessor(
        numeric=list(spec.numeric),
        categorical=list(spec.categorical),
        scaling=cfg.scaling,
        min_frequency=cfg.min_frequency,
        n_quantiles=cfg.n_quantiles,
    )
    try:
        return pre.fit(rows)
    except ValueError as exc:
        raise DataError(f"preprocessing cannot be fitted on {where}: {exc}") from exc


def fit_logistic(x: sp.csr_matrix, y: np.ndarray, cfg: LinearConfig, seed: int) -> LogisticRegression:
    """scikit-learn's logistic regression on ``x`` (n, d) and 0/1 ``y`` (n,); deterministic for a seed."""
    model = LogisticRegression(
        l1_ratio=1.0 if cfg.penalty == "l1" else 0.0,
        C=cfg.C,
        solver=SOLVER,
        max_iter=cfg.max_iter,
        tol=cfg.tol,
        random_state=seed,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning(
            "linear: the solver stopped at linear.max_iter=%d before reaching linear.tol=%g; raise "
            "max_iter (or tol) if the validation score matters",
            cfg.max_iter,
            cfg.tol,
        )
    return model


def to_candidate(
    pre: Preprocessor, model: LogisticRegression, cfg: LinearConfig, *, name: str, trained_on: Sequence[str]
) -> LinearCandidate:
    """The inference-side candidate of a model fitted on ``design_matrix(pre, ...)``."""
    coef = np.asarray(model.coef_, dtype=np.float64).ravel()  # (n_num_features + sum(cardinalities),)
    offsets = np.cumsum([pre.n_num_features, *pre.cardinalities])
    return LinearCandidate(
        name=name,
        preprocessor=pre,
        coef_numeric=coef[: offsets[0]],
        coef_categorical={c: coef[offsets[j] : offsets[j + 1]] for j, c in enumerate(pre.categorical)},
        intercept=float(np.asarray(model.intercept_).ravel()[0]),
        trained_on=list(trained_on),
        penalty=cfg.penalty,
        C=cfg.C,
    )


def fit_linear(
    rows: pl.DataFrame,
    spec: FeatureSpec,
    pre_cfg: PreprocessConfig,
    cfg: LinearConfig,
    seed: int,
    *,
    name: str = NAME,
    trained_on: Sequence[str] = FITTING,
) -> LinearCandidate:
    """Fit the preprocessor and the logistic regression on ``rows``; ``trained_on`` names them."""
    where = f"training rows ({'+'.join(trained_on)})"
    y = binary_labels(rows, spec.target, where)
    pre = fit_preprocessor(pre_cfg, spec, rows, where)
    model = fit_logistic(design_matrix(pre, rows), y, cfg, seed)
    return to_candidate(pre, model, cfg, name=name, trained_on=trained_on)


def roc_auc(model: LinearCandidate, df: pl.DataFrame, target: str, where: str) -> tuple[float, np.ndarray]:
    """ROC AUC of ``model`` on ``df`` and its predictions (n,)."""
    y = binary_labels(df, target, where)
    p = model.predict_proba(df)
    return float(roc_auc_score(y, p)), p


def train_linear(
    parts: dict[str, pl.DataFrame], spec: FeatureSpec, pre_cfg: PreprocessConfig, cfg: LinearConfig, seed: int
) -> tuple[LinearCandidate, dict[str, Any]]:
    """The candidate and its metrics from the split parts (``FITTING`` and ``VALID_PART``, as
    ``read_part`` gives them): fit on ``FITTING``, score ``VALID_PART``, refit on all when
    ``cfg.refit``."""
    # Fitting rows with the optional groups blanked on a share of them (validation rows stay whole).
    fitting = {p: mask_optional(parts[p], spec, seed=seed, part=p) for p in (*FITTING, VALID_PART)}
    valid = parts[VALID_PART]
    binary_labels(valid, spec.target, f"validation rows ({VALID_PART})")
    rows = pl.concat([fitting[p] for p in FITTING], how="vertical_relaxed")
    start = time.perf_counter()
    model = fit_linear(rows, spec, pre_cfg, cfg, seed, trained_on=FITTING)
    seconds = time.perf_counter() - start
    auc, held = roc_auc(model, valid, spec.target, f"validation rows ({VALID_PART})")
    metrics: dict[str, Any] = {
        "penalty": cfg.penalty,
        "C": cfg.C,
        "valid_roc_auc": round(auc, 6),
        "train_rows": rows.height,
        "nonzero_coefficients": model.nonzero_coefficients,
        "coefficients": model.n_coefficients,
    }  # no timings: the same inputs give the same metrics file (times are logged)
    log.info(
        "linear (%s, C=%g): %s ROC AUC %.4f, %d rows, %d nonzero weights, %.1f s",
        cfg.penalty,
        cfg.C,
        VALID_PART,
        auc,
        rows.height,
        model.nonzero_coefficients,
        seconds,
    )
    if cfg.refit:
        every = (*FITTING, VALID_PART)
        all_rows = pl.concat([fitting[p] for p in every], how="vertical_relaxed")
        start = time.perf_counter()
        refit = fit_linear(all_rows, spec, pre_cfg, cfg, seed, trained_on=every)
        seconds = time.perf_counter() - start
        refit.refit = True
        refit.held_out = {VALID_PART: held}  # selection's rows: answered by the fit that never saw them
        metrics.update(
            refit_rows=all_rows.height,
            refit_nonzero_coefficients=refit.nonzero_coefficients,
        )
        log.info("linear: refit on %s (%d rows), %.1f s", "+".join(every), all_rows.height, seconds)
        model = refit
    return model, metrics


# ------------------------------------------------------------------------------------------ edge ---
def main(params_path: str, split_dir: str, spec_path: str, out_dir: str, metrics_path: str) -> None:
    """Fit the linear candidate (``out_dir`` is its folder) and write its metrics."""
    params = load_params(params_path)
    cfg = section(params, "linear", LinearConfig, source=params_path)
    pre_cfg = section(params, "preprocess", PreprocessConfig, source=params_path)
    seed = read_seed(params)
    spec = FeatureSpec.load(spec_path)
    parts = {p: read_part(split_dir, p, spec) for p in (*FITTING, VALID_PART)}
    model, metrics = train_linear(parts, spec, pre_cfg, cfg, seed)
    with atomic_outputs(out_dir, metrics_path) as (tmp_dir, tmp_metrics):
        model.save(tmp_dir)
        write_json(tmp_metrics, metrics)


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Fit the linear baseline, a logistic regression."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime linear``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "Fit the linear baseline: a logistic regression (params `linear`: L1 or L2, C) on the neural "
        "models' preprocessing (params `preprocess`, categorical codes one-hot) on the non-test rows but "
        "finetune_valid, score finetune_valid, then (linear.refit) fit again on every non-test row."
    )
    command.add_params(parser)
    parser.add_argument("--split", required=True, help=command.SPLIT)
    parser.add_argument("--spec", required=True, help=command.SPEC)
    parser.add_argument("--out", required=True, help="output model folder")
    parser.add_argument(
        "--metrics",
        required=True,
        help="JSON summary: validation ROC AUC, rows, nonzero weights, fit seconds",
    )


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(
        params_path=args.params,
        split_dir=args.split,
        spec_path=args.spec,
        out_dir=args.out,
        metrics_path=args.metrics,
    )
