"""Report builders: each function runs one Evidently report (feature drift, data quality,
classification quality, label drift, prediction drift) or computes a view Evidently 0.7 lacks
(calibration), and returns the snapshot with the figures the summary needs. Titles name what is
compared: the windows with their days, rows and the sample Evidently saw.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
from evidently import Report
from evidently.core.report import Snapshot
from evidently.legacy.model.widget import BaseWidgetInfo
from evidently.legacy.renderers.html_widgets import table_data
from evidently.metrics import CategoryCount, DriftedColumnsCount, MeanValue, MissingValueCount, ValueDrift
from evidently.presets import ClassificationPreset, DataDriftPreset, DataSummaryPreset
from evidently.presets.dataset_stats import ValueStatsTests
from evidently.tests import eq, gt, gte, lte

from ontime.reports.adapters import (
    dataset,
    failed_tests,
    finite,
    guide_metrics,
    metric_values,
    run,
    sample,
)
from ontime.spec import FeatureSpec

log = logging.getLogger(__name__)


# Drift tests per column (numeric, categorical). p-values account for the sample size, which a small
# sample (a month of a small airport, an hour of served traffic) needs; on large samples every
# negligible difference is significant, so distances judge those. Evidently makes the same switch,
# but looks at the reference alone: a 60-row batch against a 20,000-row reference then gets
# distances, and sampling noise alone flags most columns.
SMALL_SAMPLE = 1000
# Guides (``adapters.guide_metrics``): each test's threshold, carried by its snapshots for the dashboard.
DRIFT_GUIDE, ROC_AUC_GUIDE = "drift_share_threshold", "min_roc_auc"
STATISTICAL_TESTS = ("ks", "chisquare")  # p-value: drift when below the threshold (default 0.05)
DISTANCES = ("wasserstein", "jensenshannon")  # distance: drift when at or above it (default 0.1)


# ---------------------------------------------------------------------------------- reports ---
@dataclass(frozen=True)
class Window:
    """One side of a comparison as a title names it: its name, first and last day, rows, and the
    rows Evidently saw when it got a sample."""

    name: str
    rows: int
    first: dt.date | None = None
    last: dt.date | None = None
    sampled: int | None = None

    def describe(self) -> str:
        """E.g. ``train+train_valid 2013-01-01..2013-09-30 (250,397 rows, sample of 20,000)``."""
        days = f" {self.first}..{self.last}" if self.first is not None else ""
        seen = f", sample of {self.sampled:,}" if self.sampled is not None else ""
        return f"{self.name}{days} ({self.rows:,} rows{seen})"


def describe_window(
    df: pl.DataFrame, name: str, time_column: str | None, sample_rows: int | None = None
) -> Window:
    """``df`` as a :class:`Window` (days: wall clock of ``time_column``); ``sample_rows``: the size of
    the sample Evidently gets (``sample``), noted when smaller than ``df``."""
    first = last = None
    if time_column and time_column in df.columns and df.height:
        days = df.select(pl.col(time_column).min().alias("a"), pl.col(time_column).max().alias("b")).row(0)
        first, last = (d.date() if isinstance(d, dt.datetime) else d for d in days)
    sampled = sample_rows if sample_rows is not None and df.height > sample_rows else None
    return Window(name=name, rows=df.height, first=first, last=last, sampled=sampled)


def drift_methods(rows: int) -> tuple[str, str]:
    """(numeric, categorical) drift tests for a comparison whose smaller sample has ``rows`` rows."""
    return STATISTICAL_TESTS if rows <= SMALL_SAMPLE else DISTANCES


@dataclass(frozen=True)
class Drift:
    """One drift report: Evidently's snapshot, the share of drifted features, each feature's score."""

    snapshot: Snapshot
    share: float
    drifted: int
    scores: dict[str, float]
    p_values: bool  # scores are p-values (lower: more drift), else distances (higher: more drift)
    failed: list[str]

    def top(self, n: int) -> list[dict[str, Any]]:
        """The ``n`` most drifted features as ``{"feature", "score"}``, most drifted first."""
        order = sorted(self.scores, key=lambda f: (self.scores[f] if self.p_values else -self.scores[f], f))
        return [{"feature": f, "score": round(self.scores[f], 6)} for f in order[:n]]


def drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    spec: FeatureSpec,
    *,
    drift_share_threshold: float,
    stattest_threshold: float | None,
    sample_rows: int,
    seed: int,
    name: str,
    timestamp: dt.datetime | None = None,
    tags: Sequence[str] = (),
    metadata: dict[str, str] | None = None,
    names: tuple[str, str] | None = None,
    time_column: str | None = None,
) -> Drift:
    """Drift of ``current`` against ``reference`` over the spec's features, with one test: the share
    of drifted features is at most ``drift_share_threshold``. ``names``: (reference, current) as the
    title names them (with their days in ``time_column``, rows and samples); None: no title."""
    windows = None
    if names is not None:
        windows = (
            describe_window(reference, names[0], time_column, sample_rows),
            describe_window(current, names[1], time_column, sample_rows),
        )
    reference, current = sample(reference, sample_rows, seed), sample(current, sample_rows, seed + 1)
    num_method, cat_method = drift_methods(min(reference.height, current.height))
    title = {}
    if windows is not None:
        title["title"] = (
            f"Feature drift: {windows[0].describe()} vs {windows[1].describe()}; "
            f"{num_method} (numeric) and {cat_method} (categorical) per feature, "
            f"test: drifted share <= {drift_share_threshold}"
        )
    options: dict[str, Any] = {
        "columns": spec.columns,
        "drift_share": drift_share_threshold,
        "num_method": num_method,
        "cat_method": cat_method,
        "threshold": stattest_threshold,
    }
    # The preset draws the per-column table; its own tests (one per column, and share < drift_share)
    # are left out for a single explicit test whose threshold comes from params.
    guides = {DRIFT_GUIDE: drift_share_threshold}  # the dashboard draws the test's threshold
    report = Report(
        [
            DataDriftPreset(**options),
            DriftedColumnsCount(**options, share_tests=[lte(drift_share_threshold)]),
            *guide_metrics(guides),
        ],
        include_tests=False,
    )
    kinds: dict[str, Any] = {"numeric": spec.numeric, "categorical": spec.categorical, "guides": guides}
    snapshot = run(
        report,
        dataset(current, **kinds),
        dataset(reference, **kinds),
        hide=guide_metrics(guides),
        name=name,
        timestamp=timestamp,
        tags=tags,
        metadata={
            **(metadata or {}),
            **title,
            "reference_rows": str(reference.height),
            "current_rows": str(current.height),
            "methods": f"numeric: {num_method}, categorical: {cat_method}",
        },
    )
    counts = [v for cfg, v in metric_values(snapshot, "DriftedColumnsCount") if cfg.get("share_tests")]
    scores = {
        cfg["column"]: score
        for cfg, v in metric_values(snapshot, "ValueDrift")
        if (score := finite(v)) is not None
    }
    return Drift(
        snapshot=snapshot,
        share=float(counts[0]["share"]),
        drifted=int(counts[0]["count"]),
        scores=scores,
        p_values=num_method == STATISTICAL_TESTS[0],
        failed=failed_tests(snapshot),
    )


def table_kinds(df: pl.DataFrame, spec: FeatureSpec) -> tuple[list[str], list[str], list[str]]:
    """(numeric, categorical, datetime) columns of a table: the spec's kind for the columns it knows
    (``flight`` is an integer in the table but categorical to the model), else by dtype."""
    numeric, categorical, datetimes = [], [], []
    for name, dtype in df.schema.items():
        if name in spec.categorical or name == spec.target:
            categorical.append(name)
        elif name in spec.numeric:
            numeric.append(name)
        elif dtype.is_temporal():
            datetimes.append(name)
        elif dtype.is_numeric():
            numeric.append(name)
        else:
            categorical.append(name)
    return numeric, categorical, datetimes


def quality(
    table: pl.DataFrame,
    spec: FeatureSpec,
    *,
    max_missing_share: float,
    name: str,
    timestamp: dt.datetime | None = None,
    tags: Sequence[str] = (),
    metadata: dict[str, str] | None = None,
) -> tuple[Snapshot, float]:
    """Data quality of one table; returns the snapshot and the largest missing share of a column."""
    numeric, categorical, datetimes = table_kinds(table, spec)
    # Evidently 0.7's column summary fails on datetimes (min/max are not numbers): they get only the
    # missing-share test.
    summarized = [*numeric, *categorical]
    columns = [*summarized, *datetimes]
    none: list[Any] = []
    # Evidently 0.7's summary breaks without its default tests (include_tests=False): keep them on and
    # replace each default (`== 0` on every count, too strict for real data) with the tests wanted.
    summary = DataSummaryPreset(
        columns=summarized,
        row_count_tests=[gt(0)],
        column_count_tests=none,
        duplicated_row_count_tests=[eq(0)],
        duplicated_column_count_tests=none,
        almost_duplicated_column_count_tests=none,
        almost_constant_column_count_tests=none,
        empty_row_count_tests=[eq(0)],
        empty_column_count_tests=[eq(0)],
        constant_columns_count_tests=none,
        dataset_missing_value_count_tests=none,
        column_tests={c: ValueStatsTests(missing_values_count_tests=none) for c in summarized},
    )
    missing = [MissingValueCount(column=c, share_tests=[lte(max_missing_share)]) for c in columns]
    snapshot = run(
        Report([summary, *missing], include_tests=True),
        dataset(table, numeric=numeric, categorical=categorical, datetimes=datetimes),
        name=name,
        timestamp=timestamp,
        tags=tags,
        metadata=metadata or {},
    )
    shares = [float(v["share"]) for cfg, v in metric_values(snapshot, "MissingValueCount")]
    return snapshot, max(shares, default=0.0)


def classification(
    predictions: pl.DataFrame,
    *,
    target: str,
    champion: str,
    threshold: float,
    min_roc_auc: float,
    name: str,
    timestamp: dt.datetime | None = None,
    tags: Sequence[str] = (),
    metadata: dict[str, str] | None = None,
) -> tuple[Snapshot, float | None]:
    """Classification quality of the champion's probabilities; returns the snapshot and ROC AUC."""
    none: list[Any] = []
    by_label: dict[Any, Any] = {}
    # Evidently's default tests compare with a constant model (its log-loss one expects < 0 and always
    # fails): only the ROC AUC test, from params, remains.
    preset = ClassificationPreset(
        probas_threshold=threshold,
        rocauc_tests=[gte(min_roc_auc)],
        accuracy_tests=none,
        precision_tests=none,
        recall_tests=none,
        f1score_tests=none,
        logloss_tests=none,
        tpr_tests=none,
        tnr_tests=none,
        fpr_tests=none,
        fnr_tests=none,
        f1score_by_label_tests=by_label,
        precision_by_label_tests=by_label,
        recall_by_label_tests=by_label,
        rocauc_by_label_tests=by_label,
    )
    guides = {ROC_AUC_GUIDE: min_roc_auc}  # the dashboard draws the test's floor
    snapshot = run(
        Report([preset, *guide_metrics(guides)], include_tests=True),
        dataset(predictions, classification=(target, champion), guides=guides),
        hide=guide_metrics(guides),
        name=name,
        timestamp=timestamp,
        tags=tags,
        metadata=metadata or {},
    )
    values = [finite(v) for cfg, v in metric_values(snapshot, "RocAuc")]
    return snapshot, next((v for v in values if v is not None), None)


def positive_rate(df: pl.DataFrame, target: str) -> float:
    """Share of ``target`` == 1 in ``df``."""
    return column_mean(df, target)


def column_mean(df: pl.DataFrame, column: str) -> float:
    """Mean of ``column`` as a float (0.0 for an empty frame)."""
    return float(df.select(pl.col(column).cast(pl.Float64).mean()).item() or 0.0)


def label_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    *,
    target: str,
    names: tuple[str, str],
    time_column: str | None,
    name: str,
    timestamp: dt.datetime | None = None,
    tags: Sequence[str] = (),
) -> tuple[Snapshot, dict[str, Any]]:
    """The target's positive rate and drift, on every row of both frames (a rate is cheap; a sample
    would move it); returns the snapshot and its figures for the summary."""
    windows = (
        describe_window(reference, names[0], time_column),
        describe_window(current, names[1], time_column),
    )
    rates = positive_rate(reference, target), positive_rate(current, target)
    method = drift_methods(min(reference.height, current.height))[1]
    title = (
        f"Label drift (share of {target} = 1): {windows[0].describe()}: {rates[0]:.1%} vs "
        f"{windows[1].describe()}: {rates[1]:.1%}; every row, {method}"
    )
    snapshot = run(
        Report([CategoryCount(column=target, category="1"), ValueDrift(column=target, method=method)]),
        dataset(current.select(target), categorical=[target]),
        dataset(reference.select(target), categorical=[target]),
        name=name, timestamp=timestamp, tags=tags, metadata={"title": title},
    )  # fmt: skip
    (score,) = [finite(v) for _, v in metric_values(snapshot, "ValueDrift")]
    return snapshot, {
        "reference": windows[0].describe(),
        "current": windows[1].describe(),
        "reference_positive_rate": round(rates[0], 6),
        "current_positive_rate": round(rates[1], 6),
        "method": method,
        "drift_score": None if score is None else round(score, 6),
    }


def prediction_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    *,
    target: str,
    champion: str,
    names: tuple[str, str],
    time_column: str | None,
    name: str,
    timestamp: dt.datetime | None = None,
    tags: Sequence[str] = (),
) -> tuple[Snapshot, dict[str, Any]]:
    """The champion's probability (mean and drift) and the positive rate, on every row of two frames
    of predictions; returns the snapshot and its figures for the summary."""
    windows = (
        describe_window(reference, names[0], time_column),
        describe_window(current, names[1], time_column),
    )
    means = column_mean(reference, champion), column_mean(current, champion)
    rates = positive_rate(reference, target), positive_rate(current, target)
    method = drift_methods(min(reference.height, current.height))[0]
    title = (
        f"Prediction drift (champion {champion}, mean probability): {windows[0].describe()}: "
        f"{means[0]:.3f} vs {windows[1].describe()}: {means[1]:.3f}; positive rate {rates[0]:.1%} vs "
        f"{rates[1]:.1%}; every row, {method}"
    )
    metrics = [
        MeanValue(column=champion),
        ValueDrift(column=champion, method=method),
        CategoryCount(column=target, category="1"),
    ]
    cols: dict[str, Any] = {"numeric": [champion], "categorical": [target]}
    snapshot = run(
        Report(metrics),
        dataset(current.select(champion, target), **cols),
        dataset(reference.select(champion, target), **cols),
        name=name, timestamp=timestamp, tags=tags, metadata={"title": title, "champion": champion},
    )  # fmt: skip
    (score,) = [finite(v) for _, v in metric_values(snapshot, "ValueDrift")]
    return snapshot, {
        "reference": windows[0].describe(),
        "current": windows[1].describe(),
        "champion": champion,
        "reference_mean_prediction": round(means[0], 6),
        "current_mean_prediction": round(means[1], 6),
        "reference_positive_rate": round(rates[0], 6),
        "current_positive_rate": round(rates[1], 6),
        "method": method,
        "drift_score": None if score is None else round(score, 6),
    }


CALIBRATION_BINS = 10


def calibration(predictions: pl.DataFrame, *, target: str, champion: str) -> list[dict[str, Any]]:
    """The champion's calibration: per equal-width bin of its probability (bins without rows left
    out), the rows, the mean probability and the observed positive rate."""
    bins = CALIBRATION_BINS
    table = (
        predictions.lazy()
        .select(
            (pl.col(champion) * bins).floor().clip(0, bins - 1).cast(pl.Int32).alias("bin"),
            pl.col(champion).cast(pl.Float64).alias("p"),
            pl.col(target).cast(pl.Float64).alias("y"),
        )
        .group_by("bin")
        .agg(pl.len().alias("rows"), pl.col("p").mean().alias("mean"), pl.col("y").mean().alias("rate"))
        .sort("bin")
        .collect()
    )
    return [
        {
            "bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}",
            "rows": int(n),
            "mean_prediction": round(float(m), 6),
            "positive_rate": round(float(r), 6),
        }
        for b, n, m, r in table.iter_rows()
    ]


def calibration_widget(bins: list[dict[str, Any]], title: str) -> BaseWidgetInfo:
    """``calibration``'s table as an Evidently table widget (a page part, not in the snapshot)."""
    return table_data(
        column_names=["predicted probability", "rows", "mean predicted", "observed positive rate"],
        data=[[b["bin"], f"{b['rows']:,}", f"{b['mean_prediction']:.3f}", f"{b['positive_rate']:.3f}"]
              for b in bins],
        title=title,
    )  # fmt: skip
