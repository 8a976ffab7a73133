"""analyze: feature statistics, correlations, PCA and a leakage audit, on the train part only.

Everything here is fitted on ``data/split/train.parquet`` (the rows the models learn from), so the
report never looks at validation or test rows. Per feature of the spec:

- statistics: numeric: count, mean, std, min, p05/p25/p50/p75/p95, max; categorical: the number of
  distinct values and the 5 most frequent with their share of all rows;
- missingness: the share of rows where it is missing (null, NaN or infinite), and the label rate of
  the rows where it is missing and where it is present;
- a univariate ROC AUC with the label, on the rows where it is present. Numeric: the value itself as
  the score, reported as max(auc, 1 - auc) with the direction (``higher`` or ``lower`` values go with
  positives). Categorical: an out-of-fold target encoding (``analyze.cv_folds`` seeded folds; each
  fold is scored by the smoothed label mean of its category in the other folds, ``(positives +
  smoothing * prior) / (rows + smoothing)``; a category seen in fewer than
  ``analyze.min_category_rows`` rows there, or not at all, gets the prior), so an identifier with
  thousands of values (flight or tail number) cannot look predictive by memorising its rows. That AUC
  is not flipped: the encoding already points the direction, and a value below 0.5 means no signal.

Over the numeric block: Pearson correlations on the rows where both features are present (a heat
map), and a PCA (median imputation, standardisation, numpy SVD): explained variance ratio per
component, cumulative, the number of components for 90%, and the top loadings of the first three.

The leakage audit flags a feature when its univariate ROC AUC reaches ``analyze.max_auc`` (one
feature alone separates the label), or when its missing (or present) rows form a group of at least
``analyze.min_group_rows`` rows whose label rate is at least ``analyze.max_group_purity`` (or at most
1 - that), and a random group of that size drawn from the train part would be that pure with a
probability under 1e-6 (missingness that identifies the label: all flights without a tail number
are cancelled; a pure group in data whose label is itself that rare is chance, not a leak).
``analyze.accept`` lists features audited and accepted, with the reason; they are reported, never
flagged (nor part of the joint check below).

A joint check catches features that pass one by one but rebuild the label together (the share of
votes at each star rebuilds a film's rating, and ``rating >= 7`` is the label): when the label is a
threshold on a numeric column (the spec's ``label_source``, its values in the part's
``LABEL_SOURCE`` column), a linear model of that source on the numeric features (a missing value as
the column mean plus a missing indicator, standardised, a tiny ridge) is scored by its out-of-fold
R^2 over ``analyze.cv_folds`` contiguous folds of the rows where the source is present (a seeded
sample of 50,000 of them, in order, when there are more). At or above ``analyze.max_source_r2``, a
greedy forward selection names the features: it adds the one that raises the out-of-fold R^2 most
until it reaches 95% of the R^2 of all of them or the threshold (at most 15), and starts again on the
features left while they still reach the threshold. Categorical features are not part of it; accepted
ones are left out. Without a label source the check is skipped, and the report says so.

Outputs: ``<out>/analysis.json`` (everything, sorted keys, floats rounded to 4 decimals),
``<out>/index.html`` (self-contained: no scripts, the heat map is inline SVG), ``<out>/audit.json``
(only the verdict, so a stage depending on it re-runs when the verdict changes, not when a figure
moves) and the metrics file. When a feature is flagged, all of them are still written (whole, each
atomically) so the report can be read, and then the stage fails with a DataError naming each feature,
its figure and the fix: DVC records nothing for a failed stage, so the stages after it do not run.
"""

from __future__ import annotations

import argparse
import html
import logging
import math
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

from ontime import command
from ontime.config import load_params, section
from ontime.config import seed as read_seed
from ontime.config.analyze import AnalyzeConfig
from ontime.errors import ConfigError, DataError
from ontime.io import atomic_outputs, write_json
from ontime.spec import LABEL_SOURCE, FeatureSpec, binary_labels, read_part

log = logging.getLogger(__name__)

PART = "train"
QUANTILES = {"p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}
TOP_VALUES = 5
TOP_PAIRS = 10
TOP_LOADINGS = 5
PCA_SHOWN = 3
VARIANCE_TARGET = 0.9
DIGITS = 4
# A pure group is a leak only when a random group of its size would be that pure with a probability
# under this (binomial at the train part's label rate): a group as pure as the data itself (a rare
# label) is chance, not a leak.
LOG_CHANCE = math.log(1e-6)
FIX = "add it to featurize.exclude, fix the data rule in clean, or list it under analyze.accept with a reason"


# ------------------------------------------------------------------------------------ helpers ---
def rounded(obj: Any, digits: int = DIGITS) -> Any:
    """``obj`` with every float rounded (non-finite ones as null, no ``-0.0``) and numpy scalars as
    Python numbers, for readable, stable JSON."""
    if isinstance(obj, dict):
        return {str(k): rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v, digits) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return round(value, digits) + 0.0 if math.isfinite(value) else None
    return obj


def _rate(y: np.ndarray) -> float | None:
    return float(y.mean()) if y.size else None


def numeric_values(df: pl.DataFrame, name: str) -> np.ndarray:
    """The column as float64, NaN where it is missing (null, NaN or infinite)."""
    x = df.get_column(name).cast(pl.Float64).to_numpy().astype(np.float64, copy=True)
    x[~np.isfinite(x)] = np.nan
    return x


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """A seeded assignment of ``n`` rows to ``folds`` folds of (nearly) equal size."""
    return np.random.default_rng(seed).permutation(n) % folds


# ------------------------------------------------------------------------------- per feature ---
def numeric_stats(x: np.ndarray) -> dict[str, Any]:
    present = x[~np.isnan(x)]
    if present.size == 0:
        return {"count": 0, "max": None, "mean": None, "min": None, "std": None, **dict.fromkeys(QUANTILES)}
    qs = np.quantile(present, list(QUANTILES.values()))
    return {
        "count": int(present.size),
        "mean": float(present.mean()),
        "std": float(present.std(ddof=1)) if present.size > 1 else None,
        "min": float(present.min()),
        **{k: float(q) for k, q in zip(QUANTILES, qs, strict=True)},
        "max": float(present.max()),
    }


def categorical_stats(s: pl.Series) -> dict[str, Any]:
    values = s.cast(pl.String).drop_nulls()
    counts = (
        values.value_counts(name="rows")
        .sort(["rows", values.name], descending=[True, False])
        .head(TOP_VALUES)
        .iter_rows()
    )
    return {
        "n_unique": values.n_unique(),
        "top": [{"value": v, "rows": n, "share": n / s.len()} for v, n in counts],
    }


def missingness(missing: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    n_missing = int(missing.sum())
    return {
        "rows": n_missing,
        "share": n_missing / missing.size,
        "positives": int(y[missing].sum()),
        "label_rate": _rate(y[missing]),
        "present_rows": int(missing.size - n_missing),
        "present_positives": int(y[~missing].sum()),
        "present_label_rate": _rate(y[~missing]),
    }


def numeric_auc(x: np.ndarray, y: np.ndarray) -> tuple[float | None, str | None]:
    """max(auc, 1 - auc) of the value as a score on its present rows, and which way it points."""
    present = ~np.isnan(x)
    yp = y[present]
    if yp.size == 0 or yp.min() == yp.max():
        return None, None
    auc = float(roc_auc_score(yp, x[present]))
    return max(auc, 1.0 - auc), "higher" if auc >= 0.5 else "lower"


def target_encoding_auc(
    codes: np.ndarray, y: np.ndarray, folds: np.ndarray, cfg: AnalyzeConfig
) -> float | None:
    """ROC AUC of the out-of-fold smoothed target encoding of category ``codes`` (0..k-1)."""
    if y.size == 0 or y.min() == y.max():
        return None
    k = int(codes.max()) + 1
    encoded = np.empty(y.size, dtype=np.float64)
    for fold in range(cfg.cv_folds):
        held = folds == fold
        if not held.any():
            continue
        fit = ~held
        prior = float(y[fit].mean()) if fit.any() else float(y.mean())
        rows = np.bincount(codes[fit], minlength=k).astype(np.float64)
        positives = np.bincount(codes[fit], weights=y[fit], minlength=k)
        mean = (positives + cfg.smoothing * prior) / np.maximum(rows + cfg.smoothing, 1e-12)
        mean[rows < cfg.min_category_rows] = prior
        encoded[held] = mean[codes[held]]
    return float(roc_auc_score(y, encoded))


def category_codes(s: pl.Series) -> np.ndarray:
    """Dense codes 0..k-1 of the present values (nulls are dropped)."""
    ranks = s.cast(pl.String).drop_nulls().rank("dense")
    return ranks.cast(pl.Int64).to_numpy() - 1


# ---------------------------------------------------------------------------- numeric block ---
def correlations(block: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Pearson correlation of every pair of numeric features on the rows where both are present.

    All pairs at once from sums over the pairwise-present rows (each column centred on its own mean
    first, which keeps the sums well conditioned); a pair with fewer than 3 such rows or a constant
    side has no correlation (null).
    """
    p = len(names)
    present = ~np.isnan(block)
    m = present.astype(np.float64)
    means = np.array([block[present[:, i], i].mean() if present[:, i].any() else 0.0 for i in range(p)])
    x = np.where(present, block - means, 0.0)
    rows = m.T @ m  # [i, j]: rows where both are present
    sums = x.T @ m  # [i, j]: sum of x_i over those rows
    squares = (x * x).T @ m  # [i, j]: sum of x_i^2 over those rows
    products = x.T @ x  # [i, j]: sum of x_i x_j over those rows
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = products - sums * sums.T / rows
        var_i = squares - sums**2 / rows
        denom = np.sqrt(var_i * var_i.T)
        r = np.clip(cov / denom, -1.0, 1.0)
    varies = var_i > 1e-12 * squares  # not constant on the pair's rows
    defined = (rows >= 3) & varies & varies.T
    matrix: list[list[float | None]] = [
        [float(r[i, j]) if defined[i, j] else None for j in range(p)] for i in range(p)
    ]
    found = sorted(
        (-round(abs(float(r[i, j])), DIGITS), names[i], names[j], i, j)
        for i in range(p)
        for j in range(i + 1, p)
        if defined[i, j]
    )
    pairs = [{"a": a, "b": b, "r": float(r[i, j]), "rows": int(rows[i, j])} for _, a, b, i, j in found]
    return {
        "method": "pearson on the rows where both features are present",
        "features": list(names),
        "matrix": matrix,
        "top_pairs": pairs[:TOP_PAIRS],
    }


def pca(block: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """PCA of the numeric block: median imputation, standardisation, numpy SVD.

    A column without present values or with a single value carries no variance and is left out
    (listed under ``dropped``). Each component's sign is fixed so that its largest loading is positive.
    """
    kept: list[int] = []
    columns: list[np.ndarray] = []
    for i in range(len(names)):
        x = block[:, i]
        present = x[~np.isnan(x)]
        if present.size == 0 or present.min() == present.max():
            continue
        filled = np.where(np.isnan(x), np.median(present), x)
        columns.append((filled - filled.mean()) / filled.std())
        kept.append(i)
    used = [names[i] for i in kept]
    dropped = [n for i, n in enumerate(names) if i not in kept]
    if not used:
        return {
            "features": [],
            "dropped": dropped,
            "explained_variance_ratio": [],
            "cumulative": [],
            "components_for_90": 0,
            "top_loadings": {},
        }
    z = np.column_stack(columns)
    # Z = QR and R = U S Vt give Z's singular values and right vectors from a p x p SVD.
    r = np.linalg.qr(z, mode="r")
    _, s, vt = np.linalg.svd(r)
    variance = s**2
    ratio = variance / variance.sum()
    cumulative = np.cumsum(ratio)
    for row in vt:  # deterministic signs
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    loadings: dict[str, list[dict[str, Any]]] = {}
    for c in range(min(PCA_SHOWN, len(used))):
        weights = [float(w) for w in vt[c]]
        order = sorted(range(len(used)), key=lambda i: (-round(abs(weights[i]), DIGITS), used[i]))
        loadings[f"PC{c + 1}"] = [{"feature": used[i], "loading": weights[i]} for i in order[:TOP_LOADINGS]]
    return {
        "features": used,
        "dropped": dropped,
        "explained_variance_ratio": [float(v) for v in ratio],
        "cumulative": [float(v) for v in cumulative],
        "components_for_90": int(np.searchsorted(cumulative, VARIANCE_TARGET - 1e-9) + 1),
        "top_loadings": loadings,
    }


# -------------------------------------------------------------------------------- joint leak ---
# The joint check: how much of the label's source (the numeric column the label thresholds, e.g. a
# rating or the arrival delay) a linear model of the numeric features explains out of fold. Features
# that are harmless one by one can rebuild it together (vote shares per star rebuild the rating).
MAX_SELECTED = 15  # the greedy selection names at most this many features
SELECTED_SHARE = 0.95  # ... and stops once it explains this share of the full R^2 (or the threshold)
RIDGE = 1e-6  # penalty per fitting row on standardised columns: keeps exact collinearity solvable
MIN_ROWS_PER_FOLD = 10
MAX_ROWS = 50_000  # a seeded sample of the rows (kept in order) beyond this: plenty for R^2, and fast
SOURCE_ORIGIN = "the label's source, clean.label.column"
SOURCE_FIX = (
    "exclude {them} (featurize.exclude) or, if {they} {are} known before the prediction moment, accept "
    "{them} with a reason (analyze.accept)"
)


def design(block: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, dict[str, list[int]], list[str]]:
    """The standardised design matrix of the numeric block, column 0 the intercept.

    Per feature: its value with missing values as the column's mean, and a missing indicator when
    some (not all) values are missing. A column that does not vary is left out; a feature left
    without columns is returned in ``dropped``. ``groups`` maps each kept feature to its columns.

    Shape:
        block: (n, p) with NaN where missing; returned matrix: (n, 1 + columns kept)
    """
    n, p = block.shape
    missing = np.isnan(block)  # (n, p)
    present = n - missing.sum(axis=0)  # (p,)
    sums = np.where(missing, 0.0, block).sum(axis=0)
    means = np.divide(sums, present, out=np.zeros(p), where=present > 0)
    holey = np.flatnonzero((present > 0) & (present < n))  # features that get an indicator
    z = np.concatenate([np.where(missing, means, block), missing[:, holey]], axis=1)  # (n, p + q)
    owner = [*range(p), *holey]  # the feature of each column of z
    scale = z.std(axis=0)
    kept = np.flatnonzero(scale > 1e-12 * np.maximum(1.0, np.abs(z).max(axis=0)))
    x = np.empty((n, 1 + kept.size))  # (n, 1 + c): the intercept, then the kept columns
    x[:, 0] = 1.0
    x[:, 1:] = (z[:, kept] - z[:, kept].mean(axis=0)) / scale[kept]
    groups: dict[str, list[int]] = {}
    for column, index in enumerate(kept, 1):
        groups.setdefault(names[owner[index]], []).append(column)
    return x, groups, [name for name in names if name not in groups]


class FoldGrams:
    """Out-of-fold R^2 of least squares (a tiny ridge) on any subset of columns, from per-fold Gram
    matrices computed once: a subset costs a few small solves, not a pass over the rows.

    The folds are contiguous blocks of rows (deterministic, no shuffling). Each fold is predicted by
    the model fitted on the other folds (intercept unpenalised); R^2 = 1 - SSE / SST over all rows.

    Shape:
        x: (n, c) with column 0 the intercept; y: (n,)
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, folds: int) -> None:
        y = (y - y.mean()) / y.std()  # well-scaled sums: SSE comes from differences of them
        bounds = [x.shape[0] * k // folds for k in range(folds + 1)]
        blocks = [(x[a:b], y[a:b]) for a, b in pairwise(bounds)]
        self.gram_ = np.stack([xb.T @ xb for xb, _ in blocks])  # (K, c, c)
        self.cross_ = np.stack([xb.T @ yb for xb, yb in blocks])  # (K, c)
        self.yy_ = np.array([yb @ yb for _, yb in blocks])  # (K,)
        self.sst_ = float(y @ y)  # y is centred
        self.gram_all_ = self.gram_.sum(axis=0)
        self.cross_all_ = self.cross_.sum(axis=0)

    def r2(self, columns: Sequence[int]) -> float:
        """The out-of-fold R^2 on ``columns`` (the intercept, column 0, first)."""
        idx = np.asarray(columns)
        assert idx[0] == 0, "the intercept comes first"
        held = self.gram_[:, idx[:, None], idx]  # (K, s, s)
        fit = self.gram_all_[idx[:, None], idx] - held  # (K, s, s)
        cross_held = self.cross_[:, idx]  # (K, s)
        cross_fit = self.cross_all_[idx] - cross_held  # (K, s)
        penalty = np.eye(idx.size) * (idx != 0)  # no penalty on the intercept (column 0)
        rows = fit[:, 0, 0]  # the intercept column is ones: its sum of squares counts the rows
        beta = np.linalg.solve(fit + RIDGE * rows[:, None, None] * penalty, cross_fit[..., None])[..., 0]
        sse = self.yy_ - 2 * np.einsum("ks,ks->k", beta, cross_held)
        sse += np.einsum("ks,kst,kt->k", beta, held, beta)
        return 1.0 - float(sse.sum()) / self.sst_


def columns_of(groups: dict[str, list[int]], names: Sequence[str]) -> list[int]:
    """The intercept and the design columns of ``names``."""
    return [0, *(c for name in names for c in groups[name])]


def forward_selection(grams: FoldGrams, groups: dict[str, list[int]], target: float) -> list[dict[str, Any]]:
    """Greedy forward selection among ``groups``: each step adds the feature that raises the
    out-of-fold R^2 most (ties: the first name), until it reaches ``target`` or MAX_SELECTED features."""
    steps: list[dict[str, Any]] = []
    columns = [0]
    left = sorted(groups)
    while left and len(steps) < MAX_SELECTED:
        scores = {name: grams.r2(columns + groups[name]) for name in left}
        best = max(left, key=lambda name: scores[name])
        steps.append({"feature": best, "r2": scores[best]})
        columns += groups[best]
        left.remove(best)
        if scores[best] >= target:
            break
    return steps


def culprits(grams: FoldGrams, groups: dict[str, list[int]], full: float, threshold: float) -> dict[str, Any]:
    """The features that leak the source jointly, in rounds: a forward selection until it reaches
    SELECTED_SHARE of the R^2 of the features left or ``threshold``, whichever comes first; then
    again on the features left while they still reach ``threshold``, so that leaving out every
    feature named passes the check (redundant copies of a leak are all named at once)."""
    steps: list[dict[str, Any]] = []
    left = dict(groups)
    rest = full
    rounds = 0
    while left and rest >= threshold:
        rounds += 1
        chosen = forward_selection(grams, left, min(SELECTED_SHARE * rest, threshold))
        steps += [{**step, "round": rounds} for step in chosen]
        for step in chosen:
            del left[step["feature"]]
        rest = grams.r2(columns_of(groups, sorted(left))) if left else 0.0
    names = [step["feature"] for step in steps]
    return {
        "selected": steps,
        "flagged": names,
        "flagged_r2": grams.r2(columns_of(groups, names)),
        "rest_r2": rest if left else None,
    }


def source_message(joint: dict[str, Any]) -> str:
    """The failure line of the joint check: the features, their R^2, the source and the fix."""
    names = joint["flagged"]
    if len(names) == 1:
        verb, leak, fix = "explains", "it leaks the label", SOURCE_FIX.format(them="it", they="it", are="is")
    else:
        verb, leak = "together explain", "they leak the label jointly"
        fix = SOURCE_FIX.format(them="them", they="they", are="are")
    n_checked, n_rest = len(joint["features"]), len(joint["features"]) - len(names)
    rest = f", the other {n_rest}: {joint['rest_r2']:.1%}" if joint["rest_r2"] is not None else ""
    return (
        f"{', '.join(names)} {verb} {joint['flagged_r2']:.1%} of the variance of {joint['source']} "
        f"({SOURCE_ORIGIN}) out of fold (all {n_checked} numeric features checked: {joint['r2']:.1%}"
        f"{rest}; analyze.max_source_r2 = {joint['threshold']}): {leak}; {fix}"
    )


def source_check(
    block: np.ndarray,
    names: Sequence[str],
    source: np.ndarray | None,
    source_name: str | None,
    cfg: AnalyzeConfig,
    seed: int,
) -> dict[str, Any]:
    """The joint check of the label's source against the numeric features not in ``analyze.accept``.

    ``block`` holds the numeric features (NaN where missing) and ``source`` the source values of the
    same rows (NaN where missing), or None when the label has no numeric source. The rows where the
    source is present are used (a seeded sample of MAX_ROWS of them, in their order, when there are
    more). When the out-of-fold R^2 of all the features reaches ``analyze.max_source_r2``, those
    that ``culprits`` selects are flagged.
    """
    accepted = sorted(n for n in names if n in cfg.accept)
    out: dict[str, Any] = {
        "source": source_name,
        "method": f"least squares (ridge {RIDGE:g} x rows on standardised columns; a missing value as "
        f"the column mean plus a missing indicator) of the source on the numeric features, "
        f"out of fold over {cfg.cv_folds} contiguous folds of the rows where the source is present "
        f"(a seeded sample of {MAX_ROWS:,}, in order, when there are more)",
        "threshold": cfg.max_source_r2,
        "accepted": accepted,
        "rows": 0,
        "rows_used": 0,
        "features": [],
        "dropped": [],
        "r2": None,
        "selected": [],
        "flagged": [],
        "flagged_r2": None,
        "rest_r2": None,
        "reason": None,
    }

    def skipped(why: str) -> dict[str, Any]:
        return {**out, "verdict": "skipped", "skipped_because": why}

    if source is None or source_name is None:
        return skipped("the label is not a threshold on a numeric column (the spec names no label source)")
    used = np.isfinite(source)
    out["rows"] = rows = int(used.sum())
    if rows < MIN_ROWS_PER_FOLD * cfg.cv_folds:
        return skipped(f"{rows} train rows have the source, under {MIN_ROWS_PER_FOLD * cfg.cv_folds}")
    index = np.flatnonzero(used)
    if rows > MAX_ROWS:
        index = np.sort(np.random.default_rng(seed).choice(index, MAX_ROWS, replace=False))
    out["rows_used"] = index.size
    y = source[index]
    if y.min() == y.max():
        return skipped("the source is constant on the train part")
    checked = np.array([i for i, n in enumerate(names) if n not in cfg.accept], dtype=np.int64)
    x, groups, dropped = design(block[np.ix_(index, checked)], [names[i] for i in checked])
    out["features"], out["dropped"] = sorted(groups), dropped
    if not groups:
        return skipped("no numeric feature to check (none, all accepted, or all constant)")
    grams = FoldGrams(x, y, cfg.cv_folds)
    full = grams.r2(range(x.shape[1]))
    out["r2"] = full
    if full < cfg.max_source_r2:
        return {**out, "verdict": "passed", "skipped_because": None}
    out |= {"verdict": "flagged", "skipped_because": None, **culprits(grams, groups, full, cfg.max_source_r2)}
    return {**out, "reason": source_message(out)}


# -------------------------------------------------------------------------------------- audit ---
def log_binom_cdf(k: int, n: int, p: float) -> float:
    """log P(X <= k) for X ~ Binomial(n, p): how likely a random group of n rows is that pure."""
    if p <= 0:
        return 0.0
    if p >= 1:
        return 0.0 if k >= n else -math.inf
    terms = [
        math.lgamma(n + 1)
        - math.lgamma(i + 1)
        - math.lgamma(n - i + 1)
        + i * math.log(p)
        + (n - i) * math.log1p(-p)
        for i in range(k + 1)
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def _count(n: int) -> str:
    return f"{n:,}"


def findings(
    name: str, feature: dict[str, Any], base_rate: float, cfg: AnalyzeConfig
) -> list[dict[str, Any]]:
    """What the leakage checks found for one feature (empty: nothing)."""
    found: list[dict[str, Any]] = []
    auc = feature["roc_auc"]
    if auc is not None and auc >= cfg.max_auc:
        found.append(
            {
                "check": "roc_auc",
                "figure": auc,
                "reason": f"{name}: univariate ROC AUC {auc:.3f} (analyze.max_auc {cfg.max_auc})",
            }
        )
    miss = feature["missing"]
    if miss["rows"] and miss["present_rows"]:
        high, low = cfg.max_group_purity, 1.0 - cfg.max_group_purity
        for group, rows, positives in (
            ("missing", miss["rows"], miss["positives"]),
            ("present", miss["present_rows"], miss["present_positives"]),
        ):
            rate = positives / rows
            pure = rate >= high or rate <= low
            # the other class's rows in the group, and their share in the whole train part
            minority, share = (rows - positives, 1 - base_rate) if rate >= high else (positives, base_rate)
            if rows >= cfg.min_group_rows and pure and log_binom_cdf(minority, rows, share) < LOG_CHANCE:
                found.append(
                    {
                        "check": f"{group}_group",
                        "figure": rate,
                        "reason": f"{name}: {group} in {_count(rows)} rows of which {_count(positives)} "
                        f"({rate:.1%}) are positive (train part: {base_rate:.1%})",
                    }
                )
    return found


def audit(
    features: dict[str, dict[str, Any]], base_rate: float, joint: dict[str, Any], cfg: AnalyzeConfig
) -> dict[str, Any]:
    """The verdict: flagged features (figure and reason), accepted ones (reason, checks they hit) and
    the joint check's verdict on the label's source (``joint``: what ``source_check`` found).

    Only verdicts and names when nothing is flagged (``audit.json`` must not change with a figure);
    a flagged feature carries its figure, as the stage fails and nothing is recorded then.
    """
    flagged: dict[str, list[dict[str, Any]]] = {}
    accepted: dict[str, dict[str, Any]] = {}
    for name in sorted(features):
        found = findings(name, features[name], base_rate, cfg)
        if name in cfg.accept:
            accepted[name] = {"reason": cfg.accept[name], "checks": [f["check"] for f in found]}
        elif found:
            flagged[name] = found
    if joint["verdict"] == "flagged":
        r2, source, n = joint["flagged_r2"], joint["source"], len(joint["flagged"])
        for name in joint["flagged"]:
            flagged.setdefault(name, []).append(
                {
                    "check": "label_source",
                    "figure": r2,
                    "reason": f"{name}: one of {n} features that explain {r2:.1%} of {source} jointly",
                }
            )
        flagged = dict(sorted(flagged.items()))
    label_source: dict[str, Any] = {"column": joint["source"], "verdict": joint["verdict"]}
    if joint["verdict"] == "flagged":
        label_source |= {"features": joint["flagged"], "reason": joint["reason"]}
    return {"passed": not flagged, "flagged": flagged, "accepted": accepted, "label_source": label_source}


def reasons(verdict: dict[str, Any]) -> tuple[list[str], str | None]:
    """One line per finding of the per-feature checks (each takes FIX), and the joint check's line
    (which names its own fix), if it flagged."""
    lines = [
        f["reason"]
        for name in sorted(verdict["flagged"])
        for f in verdict["flagged"][name]
        if f["check"] != "label_source"
    ]
    joint = verdict["label_source"]
    return lines, joint["reason"] if joint["verdict"] == "flagged" else None


def label_source(df: pl.DataFrame, spec: FeatureSpec, where: str) -> np.ndarray | None:
    """The label's source values (NaN where missing), or None when the label has no numeric source."""
    if spec.label_source is None:
        return None
    if LABEL_SOURCE not in df.columns:
        raise DataError(
            f"{where}: the spec names {spec.label_source!r} as the label's source but the part has no "
            f"{LABEL_SOURCE!r} column; the data and the spec come from different featurize runs: re-run "
            "`dvc repro`"
        )
    return numeric_values(df, LABEL_SOURCE)


def check_accept(cfg: AnalyzeConfig, spec: FeatureSpec, *, source: str, spec_path: str) -> None:
    unknown = sorted(set(cfg.accept) - set(spec.columns))
    if unknown:
        raise ConfigError(
            f"{source}: analyze.accept names {unknown}, which are not features of {spec_path}; "
            f"remove them or check the spelling (features: {', '.join(spec.columns)})"
        )


# ------------------------------------------------------------------------------------ analyze ---
def analyze(
    df: pl.DataFrame, spec: FeatureSpec, cfg: AnalyzeConfig, seed: int, *, where: str
) -> dict[str, Any]:
    """The whole analysis of ``df`` (the train part) as a dict of plain (unrounded) values."""
    y = binary_labels(df, spec.target, where, needs="the analysis")
    base_rate = float(y.mean())
    folds = fold_ids(df.height, cfg.cv_folds, seed)
    kinds = {f["name"]: f for f in spec.features}
    features: dict[str, dict[str, Any]] = {}
    block: list[np.ndarray] = []
    for name in spec.numeric:
        x = numeric_values(df, name)
        block.append(x)
        auc, direction = numeric_auc(x, y)
        features[name] = {
            "kind": "numeric",
            "dtype": kinds[name].get("dtype"),
            "stats": numeric_stats(x),
            "missing": missingness(np.isnan(x), y),
            "roc_auc": auc,
            "direction": direction,
        }
    for name in spec.categorical:
        s = df.get_column(name)
        missing = s.is_null().to_numpy()
        auc = target_encoding_auc(category_codes(s), y[~missing], folds[~missing], cfg)
        features[name] = {
            "kind": "categorical",
            "dtype": kinds[name].get("dtype"),
            "stats": categorical_stats(s),
            "missing": missingness(missing, y),
            "roc_auc": auc,
            "direction": "target-encoded" if auc is not None else None,
        }

    def order(name: str) -> tuple[float, str]:
        auc = features[name]["roc_auc"]
        return (-round(auc, DIGITS) if auc is not None else 1.0, name)

    ranking = sorted(features, key=order)
    numeric = list(spec.numeric)
    matrix = np.column_stack(block) if block else np.empty((df.height, 0))
    joint = source_check(matrix, numeric, label_source(df, spec, where), spec.label_source, cfg, seed)
    return {
        "part": PART,
        "rows": df.height,
        "target": spec.target,
        "label_rate": base_rate,
        "n_features": len(features),
        "roc_auc_method": {
            "numeric": "the value as a score on its present rows, max(auc, 1 - auc); direction: which "
            "values go with positives",
            "categorical": f"out-of-fold ({cfg.cv_folds} seeded folds) smoothed target encoding on the "
            f"present rows (smoothing {cfg.smoothing} rows; categories under {cfg.min_category_rows} "
            "rows or unseen get the prior); not flipped",
        },
        "features": features,
        "ranking": ranking,
        "correlation": correlations(matrix, numeric),
        "pca": pca(matrix, numeric),
        "label_source": joint,
        "audit": audit(features, base_rate, joint, cfg),
        "settings": {**cfg.model_dump(), "seed": seed},
    }


def summary(analysis: dict[str, Any]) -> dict[str, Any]:
    """The short DVC metrics of an analysis."""
    top = analysis["ranking"][0] if analysis["ranking"] else None
    return {
        "n_features": analysis["n_features"],
        "n_rows": analysis["rows"],
        "top_feature": top,
        "top_feature_roc_auc": analysis["features"][top]["roc_auc"] if top else None,
        "n_flagged": len(analysis["audit"]["flagged"]),
        "n_accepted": len(analysis["audit"]["accepted"]),
        "pca_components_90": analysis["pca"]["components_for_90"],
        "label_source_r2": analysis["label_source"]["r2"],
    }


def failure_message(analysis: dict[str, Any], where: str, report: str) -> str:
    flagged = analysis["audit"]["flagged"]
    lines, joint = reasons(analysis["audit"])
    return (
        f"{where}: the leakage audit flagged {len(flagged)} feature(s):"
        + "".join(f"\n  {line}" for line in lines)
        + (f"\nFor each: {FIX}." if lines else "")
        + (f"\nJointly: {joint}." if joint else "")
        + f"\nReport: {report}"
    )


# --------------------------------------------------------------------------------------- html ---
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:right}
th{background:#f2f2f2}
td.name,th.name,td.text{text-align:left}
tr.flagged td{background:#f8d0d0}
tr.accepted td{background:#fbeec2}
.verdict{padding:0.6em 1em;border-radius:4px;display:inline-block}
.pass{background:#d6f0d6}
.fail{background:#f8d0d0}
.bar{display:inline-block;height:10px;background:#4a78b5}
"""


def _fmt(value: Any, digits: int = DIGITS) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return html.escape(str(value))


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _colour(r: float | None) -> str:
    """Diverging blue (-1) - white (0) - red (+1)."""
    if r is None:
        return "#bbbbbb"
    t = abs(r)
    end = (178, 24, 43) if r > 0 else (33, 102, 172)
    rgb = [round(255 + (e - 255) * t) for e in end]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def heatmap_svg(corr: dict[str, Any]) -> str:
    names: list[str] = corr["features"]
    matrix: list[list[float | None]] = corr["matrix"]
    cell, left, top = 16, 170, 150
    size = cell * len(names)
    parts = [
        f'<svg width="{left + size + 70}" height="{top + size + 10}" '
        f'font-family="sans-serif" font-size="11" role="img" aria-label="correlation heat map">'
    ]
    for i, name in enumerate(names):
        label = html.escape(name)
        y = top + i * cell + cell * 0.7
        parts.append(f'<text x="{left - 4}" y="{y:.1f}" text-anchor="end">{label}</text>')
        x = left + i * cell + cell * 0.7
        parts.append(
            f'<text x="{x:.1f}" y="{top - 4}" transform="rotate(-60 {x:.1f} {top - 4})">{label}</text>'
        )
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            r = matrix[i][j]
            tip = f"{html.escape(a)} × {html.escape(b)}: {'–' if r is None else f'{r:.3f}'}"
            parts.append(
                f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" '
                f'fill="{_colour(r)}" stroke="#ffffff" stroke-width="0.5"><title>{tip}</title></rect>'
            )
    # legend: -1 .. +1
    for k in range(21):
        r = -1 + k * 0.1
        parts.append(
            f'<rect x="{left + size + 20}" y="{top + (20 - k) * 8}" width="14" height="8" '
            f'fill="{_colour(r)}"/>'
        )
    parts.append(f'<text x="{left + size + 38}" y="{top + 8}">+1</text>')
    parts.append(f'<text x="{left + size + 38}" y="{top + 84}">0</text>')
    parts.append(f'<text x="{left + size + 38}" y="{top + 168}">-1</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _table(header: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    """An HTML table; each row is (css class or "", already-escaped cells); the first column is a name."""

    def cls(name: str) -> str:
        return f' class="{name}"' if name else ""

    head = "".join(f"<th{cls('name' if i == 0 else '')}>{h}</th>" for i, h in enumerate(header))
    body = []
    for row_cls, cells in rows:
        tds = "".join(f"<td{cls('name' if i == 0 else '')}>{c}</td>" for i, c in enumerate(cells))
        body.append(f"<tr{cls(row_cls)}>{tds}</tr>")
    return f"<table><tr>{head}</tr>\n" + "\n".join(body) + "\n</table>"


def source_section(joint: dict[str, Any]) -> list[str]:
    """The joint check of the label's source: what was checked, the R^2, the features it names."""
    out = ["<h2>Joint leak: the label's source from the numeric features</h2>"]
    if joint["verdict"] == "skipped":
        out.append(f"<p>Skipped: {html.escape(joint['skipped_because'])}.</p>")
        return out
    source = f"<code>{html.escape(joint['source'])}</code>"
    out.append(
        f"<p>How much of {source} ({html.escape(SOURCE_ORIGIN)}) the numeric features rebuild together: "
        f"{html.escape(joint['method'])}; {_fmt(joint['rows_used'])} of the {_fmt(joint['rows'])} rows "
        f"where it is present, {len(joint['features'])} features. Out-of-fold R&sup2; "
        f"<b>{_pct(joint['r2'])}</b>; at or above {joint['threshold']} (analyze.max_source_r2) they "
        "leak the label jointly even when each alone passes. Categorical features are not part of this check"
        + (
            f"; accepted ones (analyze.accept) are left out: {html.escape(', '.join(joint['accepted']))}"
            if joint["accepted"]
            else ""
        )
        + (
            f"; constant ones are left out: {html.escape(', '.join(joint['dropped']))}"
            if joint["dropped"]
            else ""
        )
        + ".</p>"
    )
    if joint["selected"]:
        out.append(
            "<p>The features flagged, by a greedy forward selection: each step adds the feature that "
            "raises the out-of-fold R&sup2; most, until the threshold or "
            f"{SELECTED_SHARE:.0%} of the R&sup2; of all the features left (at most {MAX_SELECTED}); a "
            "new round starts on the features left while they still reach the threshold. Leaving "
            "them all out passes the check"
            + (f" (the other features: {_pct(joint['rest_r2'])})" if joint["rest_r2"] is not None else "")
            + ".</p>"
        )
        out.append(
            _table(
                ["round", "step", "feature", "cumulative R&sup2;", ""],
                [
                    (
                        "flagged",
                        [
                            str(step["round"]),
                            str(i),
                            html.escape(step["feature"]),
                            _pct(step["r2"]),
                            f'<span class="bar" style="width:{round(max(step["r2"], 0.0) * 400)}px"></span>',
                        ],
                    )
                    for i, step in enumerate(joint["selected"], 1)
                ],
            )
        )
    return out


def render_html(analysis: dict[str, Any], sources: Sequence[str]) -> str:
    """A self-contained page (no scripts, no external resources) of an analysis."""
    features = analysis["features"]
    verdict = analysis["audit"]
    flagged, accepted = verdict["flagged"], verdict["accepted"]
    settings = analysis["settings"]

    def row_class(name: str) -> str:
        return "flagged" if name in flagged else "accepted" if name in accepted else ""

    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Feature analysis</title>',
        f"<style>{CSS}</style></head><body>",
        "<h1>Feature analysis and leakage audit</h1>",
        f"<p>The <b>{analysis['part']}</b> part only: {_fmt(analysis['rows'])} rows, "
        f"{analysis['n_features']} features, label <code>{html.escape(analysis['target'])}</code> "
        f"positive in {_pct(analysis['label_rate'])} of rows. Read from "
        + ", ".join(f"<code>{html.escape(s)}</code>" for s in sources)
        + ".</p>",
    ]
    if verdict["passed"]:
        out.append('<p class="verdict pass">Leakage audit passed: no feature flagged.</p>')
    else:
        lines, joint = reasons(verdict)
        out.append(f'<p class="verdict fail">Leakage audit FAILED: {len(flagged)} feature(s) flagged.</p>')
        if lines:
            out.append(f"<p>For each: {html.escape(FIX)}.</p><ul>")
            out += [f"<li>{html.escape(line)}</li>" for line in lines]
            out.append("</ul>")
        if joint:
            out.append(f"<p>Jointly: {html.escape(joint)}.</p>")
    out.append(
        f"<p>Checks: univariate ROC AUC &ge; {settings['max_auc']}; a missing or present group of "
        f"&ge; {settings['min_group_rows']:,} rows with a label rate &ge; {settings['max_group_purity']} "
        f"or &le; {1 - settings['max_group_purity']:.4g} (unless a random group of that size would be "
        "that pure with a probability of 1e-6 or more); the numeric features together explaining the "
        f"label's source with an out-of-fold R&sup2; &ge; {settings['max_source_r2']} (below).</p>"
    )
    if accepted:
        out.append("<h2>Accepted (analyze.accept)</h2>")
        out.append(
            _table(
                ["feature", "reason", "checks it meets"],
                [
                    ("accepted", [html.escape(n), html.escape(a["reason"]), ", ".join(a["checks"]) or "none"])
                    for n, a in accepted.items()
                ],
            )
        )

    out += source_section(analysis["label_source"])

    out.append("<h2>Features by univariate ROC AUC</h2>")
    methods = analysis["roc_auc_method"]
    out.append(
        f"<p>Numeric: {html.escape(methods['numeric'])}. Categorical: {html.escape(methods['categorical'])}."
        " Red: flagged; amber: accepted.</p>"
    )
    rows = []
    for rank, name in enumerate(analysis["ranking"], 1):
        f = features[name]
        m = f["missing"]
        rows.append(
            (
                row_class(name),
                [
                    f"{rank}. {html.escape(name)}",
                    f["kind"],
                    _fmt(f["roc_auc"]),
                    _fmt(f["direction"]),
                    _pct(m["share"]),
                    _fmt(m["rows"]),
                    _pct(m["label_rate"]),
                    _pct(m["present_label_rate"]),
                ],
            )
        )
    out.append(
        _table(
            [
                "feature",
                "kind",
                "ROC AUC",
                "direction",
                "missing",
                "missing rows",
                "label rate (missing)",
                "label rate (present)",
            ],
            rows,
        )
    )

    out.append("<h2>Numeric features</h2>")
    keys = ["count", "mean", "std", "min", *QUANTILES, "max"]
    out.append(
        _table(
            ["feature", *keys],
            [
                (row_class(n), [html.escape(n), *(_fmt(features[n]["stats"][k]) for k in keys)])
                for n in analysis["ranking"]
                if features[n]["kind"] == "numeric"
            ],
        )
    )
    out.append("<h2>Categorical features</h2>")
    cat_rows = []
    for n in analysis["ranking"]:
        if features[n]["kind"] != "categorical":
            continue
        st = features[n]["stats"]
        top = "; ".join(f"{html.escape(str(t['value']))} ({t['share']:.1%})" for t in st["top"])
        cat_rows.append((row_class(n), [html.escape(n), _fmt(st["n_unique"]), top]))
    out.append(_table(["feature", "distinct values", f"top {TOP_VALUES} (share of rows)"], cat_rows))

    corr = analysis["correlation"]
    out.append("<h2>Correlations of the numeric features</h2>")
    out.append(f"<p>{html.escape(corr['method'].capitalize())}; grey: undefined (a constant).</p>")
    out.append(heatmap_svg(corr))
    out.append(
        _table(
            ["pair", "r", "rows"],
            [
                ("", [f"{html.escape(p['a'])} × {html.escape(p['b'])}", _fmt(p["r"]), _fmt(p["rows"])])
                for p in corr["top_pairs"]
            ],
        )
    )

    p = analysis["pca"]
    out.append("<h2>PCA of the numeric block</h2>")
    out.append(
        f"<p>Median imputation, standardisation, SVD over {len(p['features'])} features"
        + (f" (left out, constant or empty: {html.escape(', '.join(p['dropped']))})" if p["dropped"] else "")
        + f". {p['components_for_90']} components explain 90% of the variance.</p>"
    )
    out.append(
        _table(
            ["component", "explained variance", "cumulative", ""],
            [
                (
                    "",
                    [
                        f"PC{i + 1}",
                        _pct(v),
                        _pct(c),
                        f'<span class="bar" style="width:{round(v * 400)}px"></span>',
                    ],
                )
                for i, (v, c) in enumerate(zip(p["explained_variance_ratio"], p["cumulative"], strict=True))
            ],
        )
    )
    for comp, loads in p["top_loadings"].items():
        out.append(f"<h3>{comp}: top loadings</h3>")
        out.append(
            _table(
                ["feature", "loading"], [("", [html.escape(x["feature"]), _fmt(x["loading"])]) for x in loads]
            )
        )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------- main ---
def main(params_path: str, split_dir: str, spec_path: str, out_dir: str, metrics_path: str) -> None:
    """Analyse the train part; write the report folder and the metrics, then fail if a leak is flagged.

    The outputs are written whole (atomically) even when the audit fails, so the report can be read;
    the DataError that follows makes the stage fail, so DVC records none of them and no later stage
    (train, baseline, tune depend on ``audit.json``) runs.
    """
    params = load_params(params_path)
    cfg = section(params, "analyze", AnalyzeConfig, source=params_path)
    seed = read_seed(params)
    spec = FeatureSpec.load(spec_path)
    check_accept(cfg, spec, source=params_path, spec_path=spec_path)
    where = str(Path(split_dir) / f"{PART}.parquet")
    df = read_part(split_dir, PART, spec)
    analysis = analyze(df, spec, cfg, seed, where=where)
    metrics = summary(analysis)
    page = render_html(rounded(analysis), [where, spec_path])
    with atomic_outputs(out_dir, metrics_path) as (tmp_dir, tmp_metrics):
        tmp_dir.mkdir()
        write_json(tmp_dir / "analysis.json", rounded(analysis))
        write_json(tmp_dir / "audit.json", rounded(analysis["audit"]))
        (tmp_dir / "index.html").write_text(page)
        write_json(tmp_metrics, rounded(metrics))
    log.info(
        "analyze: %d features on %d rows; top %s (ROC AUC %.4f); %d flagged",
        metrics["n_features"],
        metrics["n_rows"],
        metrics["top_feature"],
        metrics["top_feature_roc_auc"] or float("nan"),
        metrics["n_flagged"],
    )
    if not analysis["audit"]["passed"]:
        raise DataError(failure_message(analysis, where, str(Path(out_dir) / "index.html")))


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Feature statistics, PCA and the leakage audit (train part)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime analyze``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "Analyse the features on the train part (params `analyze`): statistics, missingness, univariate ROC "
        "AUC, correlations, PCA; write an HTML + JSON report and a leakage audit, and fail (after writing "
        "them) when a feature alone or its missingness identifies the label."
    )
    command.add_params(parser)
    parser.add_argument("--split", required=True, help="folder of split parts (reads train.parquet)")
    parser.add_argument("--spec", required=True, help=command.SPEC)
    parser.add_argument("--out", required=True, help="report folder: analysis.json, audit.json, index.html")
    parser.add_argument("--metrics", required=True, help="JSON summary (top feature, flagged count, PCA)")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(
        params_path=args.params,
        split_dir=args.split,
        spec_path=args.spec,
        out_dir=args.out,
        metrics_path=args.metrics,
    )
