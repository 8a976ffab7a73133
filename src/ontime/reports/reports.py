"""report: Evidently data quality, drift and classification reports, each with pass/fail tests.

Reports, as HTML plus Evidently's JSON of metrics and tests, in ``out_dir``:

- ``data_quality``: the cleaned base table (``<clean_dir>/<featurize.base>.parquet``). Quality is a
  property of the data as collected and cleaned (missing values, duplicated or empty rows, empty
  columns), before joins add missing values by design (weather gaps, planes without a record) that
  the model's preprocessing handles; the features themselves are covered by the drift reports.
  Tests: every column's missing share <= ``report.max_missing_share``, no duplicated or empty rows,
  no empty columns.
- ``drift_train_vs_test``: the training window (``train`` + ``train_valid``) against the test window,
  over the spec's features. Test: share of drifted features <= ``report.drift_share_threshold``. Its
  page also shows ``label_drift_train_vs_test``: the target's positive rate and drift, on every row of
  both windows (not a sample).
- ``drift_<YYYY-MM>``: every calendar month of the rows outside the training window against the same
  reference, with the same test (skipped, with a note, when the data has no time column). A month whose
  rows are exactly the test window's is not reported twice: the window's report stands for it (tagged
  monthly too, so the dashboard's series has that month) and the summary's ``same_as_window`` says so.
- ``classification_test``: the champion on the test window (its probability column of
  ``<predictions_dir>/test.parquet``, the threshold from ``select``). Test: ROC AUC >=
  ``report.min_roc_auc``. One more snapshot per test month feeds the ROC AUC panel of the dashboard
  (the same rule for a month equal to the window). Its page also shows ``prediction_drift_valid_vs_test``
  (the champion's probability and the positive rate, validation rows of ``valid.parquet`` against the
  test rows) and a calibration table (also in the summary; Evidently 0.7 has no calibration metric).

Every page opens with a title naming what it compares: the windows with their first and last days,
their row counts and the sample Evidently saw (the same text is each snapshot's ``title`` metadata).
Frames are sampled to ``report.sample_rows`` rows (seeded with ``seed``). Which drift test judges a
column follows the size of the smaller sample (see ``drift_methods``).

Size: the pages of one run share one copy of Evidently's 3.5 MB script, written once as
``assets/evidently-<version>.js`` beside them and loaded by a relative ``<script src>`` (the folder
stays viewable offline; move it whole). Evidently also embeds every plot twice (in its widget and in
the page's graph table); the page keeps only the table, the one its script reads.

The summary (``metrics/report.json``) is what ``dvc exp show`` displays. The workspace is a local
Evidently workspace with one project (``report.workspace_project``) whose snapshots are stamped with
the start of the period they describe, so the monthly ones form a time series, and a dashboard built
here; ``evidently ui --workspace <workspace_dir>`` opens it. The stage writes it afresh, as a pipeline
output like any other; ``ontime monitor`` keeps its own workspace (``reports/monitoring``) that holds
a copy of these snapshots next to the served-traffic ones.

Byte-identical outputs: Evidently names widgets, dashboard panels, projects and snapshots with random
(time-based) ids. Here the project's, the panels' and the snapshots' ids derive from their names, and
the random ids inside a report (HTML and workspace snapshot) are replaced, in order of appearance, by
ids derived from the report's name (``stable_ids``). Together with a fixed ``PYTHONHASHSEED`` (set by
the ``ontime`` command) the same inputs give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import math
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import evidently
import polars as pl
from evidently import BinaryClassification, DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.core.serialization import SnapshotModel
from evidently.legacy.model.dashboard import DashboardInfo
from evidently.legacy.model.widget import AdditionalGraphInfo, BaseWidgetInfo
from evidently.legacy.renderers.html_widgets import group_widget, table_data
from evidently.legacy.utils import NumpyEncoder
from evidently.legacy.utils.dashboard import STATIC_PATH, TemplateParams, file_html_template
from evidently.metrics import CategoryCount, DriftedColumnsCount, MeanValue, MissingValueCount, ValueDrift
from evidently.presets import ClassificationPreset, DataDriftPreset, DataSummaryPreset
from evidently.presets.dataset_stats import ValueStatsTests
from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric, ProjectModel
from evidently.sdk.panels import counter_panel, line_plot_panel
from evidently.tests import eq, gt, gte, lte
from evidently.ui.workspace import Project, Workspace
from pydantic import Field

from ontime.config import FeaturizeConfig, StrictModel, load_params, section
from ontime.config import seed as read_seed
from ontime.errors import DataError
from ontime.io import atomic_outputs, read_json, write_json
from ontime.spec import FeatureSpec, read_part

log = logging.getLogger(__name__)

TRAINING_PARTS = ("train", "train_valid")
LATER_PARTS = ("finetune", "finetune_valid", "test")
# Drift tests per column (numeric, categorical). p-values account for the sample size, which a small
# sample (a month of a small airport, an hour of served traffic) needs; on large samples every
# negligible difference is significant, so distances judge those. Evidently makes the same switch,
# but looks at the reference alone: a 60-row batch against a 20,000-row reference then gets
# distances, and sampling noise alone flags most columns.
SMALL_SAMPLE = 1000
STATISTICAL_TESTS = ("ks", "chisquare")  # p-value: drift when below the threshold (default 0.05)
DISTANCES = ("wasserstein", "jensenshannon")  # distance: drift when at or above it (default 0.1)
# Snapshot tags: the dashboard's panels select their series with them.
DRIFT, CLASSIFICATION, MONTHLY, WINDOW, SERVED = "drift", "classification", "monthly", "window", "served"
# Groups of reports whose failed tests the summary counts.
TEST_GROUPS = (
    "data_quality",
    "drift_train_vs_test",
    "drift_monthly",
    "classification_test",
    "classification_monthly",
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# The random ids Evidently 0.7 generates: uuid7s (widgets, tabs, panels, projects, snapshots) and the
# variable holding a standalone HTML report's data, ``metric_<uuid4 hex>``.
_RANDOM_ID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    r"|(?<=metric_)[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}"
)
_ID_NAMESPACE = uuid.UUID("5d3b8f0e-2c41-4b7a-9e61-0f6a3c9d2b17")


class ReportConfig(StrictModel):
    """The ``report`` section of params.yaml."""

    sample_rows: int = Field(ge=100, description="rows sampled (seeded) from each larger frame")
    drift_share_threshold: float = Field(gt=0, le=1, description="test fails above this drifted share")
    stattest_threshold: float | None = Field(
        gt=0, description="per-column drift threshold; null: each test's default (p 0.05, distance 0.1)"
    )
    min_roc_auc: float = Field(ge=0, le=1, description="classification test: champion ROC AUC >= this")
    max_missing_share: float = Field(ge=0, le=1, description="quality test: each column's missing share")
    top_drifted: int = Field(ge=1, description="most-drifted features listed in the summary")
    workspace_project: str = Field(min_length=1, description="Evidently project in the workspace")


# -------------------------------------------------------------------------------------- ids ---
def stable_uuid(*parts: str) -> uuid.UUID:
    """A name-based (version 5) UUID of ``parts``: the same parts, the same id, in every run."""
    return uuid.uuid5(_ID_NAMESPACE, "/".join(parts))


def stable_ids(text: str, scope: str) -> str:
    """``text`` with every random id Evidently generated replaced by ``stable_uuid(scope, n)``, n
    counting distinct ids in order of first appearance: every reference to an id still matches, and
    the same report gives the same text. (A data value that is itself a uuid7 would be renamed too.)"""
    seen: dict[str, uuid.UUID] = {}

    def replace(match: re.Match[str]) -> str:
        found = match.group(0)
        new = seen.setdefault(found, stable_uuid(scope, str(len(seen))))
        return str(new) if "-" in found else new.hex

    return _RANDOM_ID.sub(replace, text)


def save_html(snapshot: Snapshot, path: Path) -> None:
    """The standalone HTML page of ``snapshot`` (Evidently's script inside), with stable ids."""
    title = title_of(snapshot) or snapshot.get_name() or path.stem
    path.write_text(page([snapshot], title=title, scope=snapshot.get_name() or path.stem), encoding="utf-8")


# ------------------------------------------------------------------------------------- html ---
ASSETS = "assets"  # beside the pages: Evidently's script, once per folder


def script_name() -> str:
    """The shared script's file name; the version in it: pages of another Evidently never load it."""
    return f"evidently-{evidently.__version__}.js"


def write_assets(folder: Path) -> Path:
    """Evidently's script into ``folder/assets`` (the pages refer to it relatively); returns it."""
    target = folder / ASSETS / script_name()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(STATIC_PATH) / "index.js", target)
    return target


def title_of(snapshot: Snapshot) -> str:
    """The ``title`` metadata of ``snapshot`` (what it compares), or ''."""
    return str(snapshot._metadata.get("title", ""))  # Evidently 0.7 has no public getter


def _without_graphs(obj: Any) -> Any:
    """A widget tree without its ``additionalGraphs``: the page's graph table holds them (the only
    place Evidently's script reads them from); Evidently drops them from top-level widgets only."""
    if isinstance(obj, dict):
        return {k: _without_graphs(v) for k, v in obj.items() if k != "additionalGraphs"}
    if isinstance(obj, list):
        return [_without_graphs(v) for v in obj]
    return obj


def page(
    snapshots: Sequence[Snapshot],
    *,
    title: str,
    scope: str,
    lines: Sequence[str] = (),
    extra: Sequence[BaseWidgetInfo] = (),
    script: str | None = None,
) -> str:
    """One HTML page showing ``snapshots`` (each a section titled by its ``title`` metadata, with its
    tests), then ``extra`` widgets, under a plain-HTML header (``title`` and ``lines``) that shows
    even before the script runs. ``script``: the relative path of Evidently's script; None embeds it.
    Random ids become stable ones (scope: ``scope``)."""
    widgets: list[BaseWidgetInfo] = []
    for snap in snapshots:
        # Evidently 0.7 builds its page from these two private lists too (Snapshot.get_html_str)
        section = title_of(snap) if len(snapshots) > 1 else ""
        widgets.append(group_widget(title=section, widgets=list(snap._widgets)))
        widgets.extend(snap._tests_widgets)
    widgets.extend(extra)
    graphs: dict[str, Any] = {}
    for widget in widgets:
        for graph in widget.get_additional_graphs():
            info = graph.params if isinstance(graph, AdditionalGraphInfo) else graph
            graphs[str(graph.id)] = _without_graphs(info.dict() if isinstance(info, BaseWidgetInfo) else info)
    board_id = f"board_{stable_uuid('page', scope).hex}"
    board = _without_graphs(DashboardInfo(name="Report", widgets=widgets).dict())
    compact = {"cls": NumpyEncoder, "separators": (",", ":")}
    data = (
        f"<script>\nvar {board_id} = {json.dumps(board, **compact)};\n"
        f"var additional_graphs_{board_id} = {json.dumps(graphs, **compact)};\n</script>"
    )
    params = TemplateParams(
        dashboard_id=board_id, dashboard_info=DashboardInfo(name="Report", widgets=[]), additional_graphs={},
        embed_lib=script is None, embed_data=False, include_js_files=[script] if script else [],
    )  # fmt: skip
    text = file_html_template(params).replace("<!-- no embedded data -->", data, 1)
    style = "font-family:Roboto,Helvetica,Arial,sans-serif;padding:16px 24px 0;color:#222"
    header = "".join(f'<p style="margin:2px 0;font-size:14px">{html.escape(line)}</p>' for line in lines)
    text = text.replace("<head>", f"<head>\n<title>{html.escape(title)}</title>", 1).replace(
        "<body>",
        f'<body>\n<header style="{style}"><h1 style="font-size:20px;margin:0 0 6px">'
        f"{html.escape(title)}</h1>{header}</header>",
        1,
    )
    return stable_ids(text, scope)


# ------------------------------------------------------------------------ evidently boundary ---
def sample(df: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """At most ``n`` rows, drawn with ``seed`` (Evidently is slow on hundreds of thousands)."""
    return df if df.height <= n else df.sample(n=n, seed=seed)


def dataset(
    df: pl.DataFrame,
    *,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    datetimes: Sequence[str] = (),
    classification: tuple[str, str] | None = None,
) -> Dataset:
    """The only polars -> pandas crossing: an Evidently dataset whose columns are typed as given.

    Numeric columns go in as float64, categorical ones as strings (Evidently's labels must be str, int
    or bool, and served values must compare equal to the reference's whatever JSON made of them),
    datetimes as naive UTC. ``classification``: (binary target, positive-class probability).
    """
    exprs = [pl.col(c).cast(pl.Float64) for c in numeric]
    exprs += [pl.col(c).cast(pl.String) for c in categorical]
    for c in datetimes:
        col = pl.col(c)
        dtype = df.schema[c]
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
            col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        exprs.append(col)
    tasks: list[BinaryClassification] = []
    cat_columns, num_columns = list(categorical), list(numeric)
    if classification is not None:
        target, proba = classification
        exprs += [pl.col(target).cast(pl.Int64), pl.col(proba).cast(pl.Float64)]
        tasks.append(BinaryClassification(target=target, prediction_probas=proba, pos_label=1))
        cat_columns.append(target)
        num_columns.append(proba)
    definition = DataDefinition(
        numerical_columns=num_columns,
        categorical_columns=cat_columns,
        datetime_columns=list(datetimes),
        classification=tasks or None,
    )
    return Dataset.from_pandas(df.select(exprs).to_pandas(), data_definition=definition)


def run(
    report: Report,
    current: Dataset,
    reference: Dataset | None = None,
    *,
    name: str,
    timestamp: dt.datetime | None,
    tags: Sequence[str],
    metadata: dict[str, str],
) -> Snapshot:
    """Run ``report`` and log how long it took."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        # chi-square divides by zero for categories the reference never saw: that is drift, as meant
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            current, reference, timestamp=timestamp, tags=list(tags), metadata=dict(metadata), name=name
        )
    log.info("report: %s generated in %.1f s", name, time.perf_counter() - start)
    return snapshot


def metric_values(snapshot: Snapshot, metric: str) -> list[tuple[dict[str, Any], Any]]:
    """(config, value) of every result of the Evidently metric type ``metric`` (e.g. ``RocAuc``)."""
    return [
        (m["config"], m["value"])
        for m in snapshot.dict()["metrics"]
        if m and m["config"]["type"].rsplit(":", 1)[-1] == metric
    ]


def failed_tests(snapshot: Snapshot) -> list[str]:
    """Descriptions of the tests that failed (critical ones; non-critical failures are warnings)."""
    return [t.description for t in snapshot.tests_results if getattr(t.status, "value", t.status) == "FAIL"]


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


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
    report = Report(
        [
            DataDriftPreset(**options),
            DriftedColumnsCount(**options, share_tests=[lte(drift_share_threshold)]),
        ],
        include_tests=False,
    )
    snapshot = run(
        report,
        dataset(current, numeric=spec.numeric, categorical=spec.categorical),
        dataset(reference, numeric=spec.numeric, categorical=spec.categorical),
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
        if (score := _finite(v)) is not None
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
    snapshot = run(
        Report([preset], include_tests=True),
        dataset(predictions, classification=(target, champion)),
        name=name,
        timestamp=timestamp,
        tags=tags,
        metadata=metadata or {},
    )
    values = [_finite(v) for cfg, v in metric_values(snapshot, "RocAuc")]
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
    (score,) = [_finite(v) for _, v in metric_values(snapshot, "ValueDrift")]
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
    (score,) = [_finite(v) for _, v in metric_values(snapshot, "ValueDrift")]
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


# -------------------------------------------------------------------------------- workspace ---
def is_workspace(path: Path) -> bool:
    """An empty folder, or one holding an Evidently project (``<project uuid>/metadata.json``)."""
    if not path.is_dir():
        return False
    entries = list(path.iterdir())
    return not entries or any(_UUID.match(p.name) and (p / "metadata.json").is_file() for p in entries)


def check_workspace(path: str | Path) -> None:
    """Fail clearly when ``path`` exists but is not an Evidently workspace (nothing is written)."""
    path = Path(path)
    if path.exists() and not is_workspace(path):
        raise DataError(
            f"{path}: exists but is not an Evidently workspace (no <project-id>/metadata.json in it); "
            "pass a workspace folder (the report stage writes reports/workspace, ontime monitor "
            "reports/monitoring) or a new path"
        )


def open_workspace(path: str | Path) -> Workspace:
    """The Evidently workspace at ``path`` (created when missing); refuses a folder holding anything
    else, before writing anything to it."""
    check_workspace(path)
    try:
        return Workspace(str(path))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot open the Evidently workspace ({exc})") from exc


def project(workspace: Workspace, name: str) -> Project:
    """The project called ``name`` (the oldest if several), created with its dashboard when missing;
    a created project's id derives from its name (``stable_uuid``)."""
    try:
        found = sorted(workspace.search_project(name), key=lambda p: str(p.id))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{workspace.path}: a project of the Evidently workspace is unreadable ({exc})"
        ) from exc
    if found:
        return found[0]
    created = workspace.add_project(
        ProjectModel(
            id=stable_uuid("project", name),
            name=name,
            description="ontime: data quality, drift and model quality",
        )
    )
    workspace.save_dashboard(created.id, dashboard())
    return created


def snapshot_id(project_name: str, snapshot_name: str) -> uuid.UUID:
    """The id of the report stage's snapshot ``snapshot_name`` in the project ``project_name``."""
    return stable_uuid("snapshot", project_name, snapshot_name)


def add_snapshot(workspace: Workspace, proj: Project, snapshot: Snapshot) -> uuid.UUID:
    """Write ``snapshot`` into ``proj`` under ``snapshot_id`` (replacing one of that name), with the
    random ids inside it made stable; returns the id. ``Workspace.add_run`` would pick random ids."""
    name = snapshot.get_name()
    if not name:
        raise ValueError("a snapshot of the report stage needs a name")
    text = json.dumps(snapshot.to_snapshot_model().dict(), cls=NumpyEncoder)
    model = SnapshotModel.parse_obj(json.loads(stable_ids(text, name)))
    sid = snapshot_id(proj.name, name)
    workspace.state.write_snapshot(proj.id, sid, model)
    return sid


def dashboard() -> DashboardModel:
    """Two tabs. Drift: share of drifted features, training vs test window, by month, and in served
    traffic. Model quality: the champion's ROC AUC on the test window and by month."""
    share = {"value_type": "share"}

    def drift_share(tag: str) -> list[PanelMetric]:
        return [
            PanelMetric(
                legend="drift share", metric="DriftedColumnsCount", tags=[DRIFT, tag], metric_labels=share
            )
        ]

    def roc_auc(tag: str) -> list[PanelMetric]:
        return [PanelMetric(legend="ROC AUC", metric="RocAuc", tags=[CLASSIFICATION, tag])]

    tabs = {
        "Drift": [
            counter_panel(
                "Drifted share of features: training vs test window", drift_share(WINDOW), size="half"
            ),
            counter_panel(
                "Drifted share of features: latest served traffic", drift_share(SERVED), size="half"
            ),
            line_plot_panel(
                "Drifted share of features by month, against the training window", drift_share(MONTHLY)
            ),
            line_plot_panel(
                "Drifted share of features in served traffic (ontime monitor)", drift_share(SERVED)
            ),
        ],
        "Model quality": [
            counter_panel("Champion ROC AUC on the test window", roc_auc(WINDOW), size="half"),
            line_plot_panel("Champion ROC AUC by month", roc_auc(MONTHLY)),
        ],
    }
    for tab, panels in tabs.items():  # ids from names, not random: the same dashboard.json every run
        for number, panel in enumerate(panels):
            panel.id = stable_uuid("panel", tab, str(number))
    # Built whole: Evidently 0.7's ProjectDashboard.add_panel lists a panel twice in an existing tab.
    return DashboardModel(
        tabs=[
            DashboardTabModel(id=stable_uuid("tab", tab), title=tab, panels=[p.id for p in panels])
            for tab, panels in tabs.items()
        ],
        panels=[p for panels in tabs.values() for p in panels],
    )


# ------------------------------------------------------------------------------------- time ---
def period_start(df: pl.DataFrame, time_column: str | None) -> dt.datetime | None:
    """Midnight (wall clock) of the first day in ``df``: the timestamp of a snapshot about ``df``."""
    if not time_column or time_column not in df.columns or df.height == 0:
        return None
    first = df.get_column(time_column).min()
    if isinstance(first, dt.datetime):
        first = first.date()
    return dt.datetime.combine(first, dt.time()) if isinstance(first, dt.date) else None


def local_time(df: pl.DataFrame, like: pl.DataFrame, time_column: str | None) -> pl.DataFrame:
    """``df``'s time column in the time zone of ``like``'s (the cleaned table holds UTC, the split
    parts wall clock), so that both name the same days."""
    if not time_column or time_column not in df.columns or time_column not in like.columns:
        return df
    zone = getattr(like.schema[time_column], "time_zone", None)
    if zone is None or getattr(df.schema[time_column], "time_zone", None) is None:
        return df
    return df.select(pl.col(time_column).dt.convert_time_zone(zone))


def by_month(df: pl.DataFrame, time_column: str) -> dict[str, pl.DataFrame]:
    """Rows per calendar month (``YYYY-MM``, wall clock of the time column), in month order."""
    months = df.with_columns(pl.col(time_column).dt.strftime("%Y-%m").alias("_month"))
    parts = months.partition_by("_month", as_dict=True, include_key=False)
    return {str(key[0]): parts[key] for key in sorted(parts, key=lambda k: str(k[0]))}


def month_start(month: str) -> dt.datetime:
    year, mon = month.split("-")
    return dt.datetime(int(year), int(mon), 1)


# -------------------------------------------------------------------------------------- edge ---
PREDICTION_PARTS = ("valid", "test")  # files of the evaluate stage: validation rows, test rows


def read_inputs(
    clean_dir: str, base: str, predictions_dir: str, select_metrics: str, spec: FeatureSpec
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame], Selection]:
    """The cleaned base table, the predictions (``valid``, ``test``), the champion and its threshold."""
    table_path = Path(clean_dir) / f"{base}.parquet"
    if not table_path.is_file():
        raise DataError(
            f"{table_path}: cleaned base table (featurize.base={base!r}) not found; run dvc repro clean"
        )
    selection = read_json(select_metrics) if Path(select_metrics).is_file() else None
    if not isinstance(selection, dict) or not {"champion", "threshold"} <= set(selection):
        raise DataError(
            f"{select_metrics}: needs `champion` and `threshold` (written by the select stage); "
            "run dvc repro select"
        )
    champion = str(selection["champion"])
    predictions: dict[str, pl.DataFrame] = {}
    for part in PREDICTION_PARTS:
        pred_path = Path(predictions_dir) / f"{part}.parquet"
        if not pred_path.is_file():
            raise DataError(f"{pred_path}: {part} predictions not found; run dvc repro evaluate")
        predictions[part] = pl.read_parquet(pred_path)
        missing = [c for c in (spec.target, champion) if c not in predictions[part].columns]
        if missing:
            raise DataError(
                f"{pred_path}: column(s) {missing} missing (has {predictions[part].columns}); the "
                f"champion of {select_metrics} must be one of the evaluated candidates: re-run dvc repro "
                "evaluate select"
            )
    return pl.read_parquet(table_path), predictions, Selection(champion, float(selection["threshold"]))


@dataclass(frozen=True)
class Selection:
    """The champion (a probability column of the predictions) and its decision threshold."""

    champion: str
    threshold: float


@dataclass
class Page:
    """One HTML page: snapshots (by name) shown in order, under the first one's title; ``notes`` are
    header lines after the other snapshots' titles; ``extra`` widgets close the page."""

    snapshots: list[str]
    notes: list[str]
    extra: list[BaseWidgetInfo]


def same_rows(parts: dict[str, pl.DataFrame], whole: pl.DataFrame) -> str | None:
    """The key of the first of ``parts`` holding exactly the rows of ``whole`` (in order), or None."""
    return next((key for key, rows in parts.items() if rows.equals(whole)), None)


def build(
    table: pl.DataFrame,
    reference: pl.DataFrame,
    later: dict[str, pl.DataFrame],
    predictions: dict[str, pl.DataFrame],
    spec: FeatureSpec,
    cfg: ReportConfig,
    *,
    table_name: str,
    selection: Selection,
    seed: int,
) -> tuple[dict[str, Snapshot], dict[str, Page], dict[str, Any]]:
    """Every report (name -> snapshot), the HTML pages showing them, and the summary. ``later``: the
    split parts after training; ``predictions``: the ``valid`` and ``test`` rows' predictions."""
    tc = spec.time_column
    snapshots: dict[str, Snapshot] = {}
    pages: dict[str, Page] = {}
    failed = dict.fromkeys(TEST_GROUPS, 0)

    def keep(group: str, snapshot: Snapshot, failures: list[str], page: str | None = None) -> None:
        name = snapshot.get_name() or group
        snapshots[name] = snapshot
        if page is None:
            pages[name] = Page([name], [], [])
        else:
            pages[page].snapshots.append(name)
        if failures:  # label and prediction drift carry no tests
            failed[group] += len(failures)
        for description in failures:
            log.warning("report: %s: test failed: %s", snapshot.get_name(), description)

    quality_table = sample(table, cfg.sample_rows, seed)
    seen = describe_window(local_time(table, reference, tc), f"table {table_name}", tc, cfg.sample_rows)
    quality_snapshot, max_missing = quality(
        quality_table, spec, max_missing_share=cfg.max_missing_share,
        name="data_quality", timestamp=period_start(table, tc), tags=["quality"],
        metadata={"table": table_name, "rows": str(table.height),
                  "title": f"Data quality: {seen.describe()}"},
    )  # fmt: skip
    keep("data_quality", quality_snapshot, failed_tests(quality_snapshot))

    options: dict[str, Any] = {
        "spec": spec, "drift_share_threshold": cfg.drift_share_threshold,
        "stattest_threshold": cfg.stattest_threshold, "sample_rows": cfg.sample_rows, "seed": seed,
        "time_column": tc,
    }  # fmt: skip
    parts = "+".join(TRAINING_PARTS)
    test = later["test"]
    later_months = {} if tc is None else by_month(pl.concat(list(later.values()), how="vertical_relaxed"), tc)
    # A month whose rows are the test window's would repeat its report byte for byte: the window's
    # report stands for it, tagged monthly too (the dashboard's series keeps that month).
    twin = same_rows(later_months, test)
    window = drift(
        reference, test, **options, name="drift_train_vs_test", names=(parts, "test"),
        timestamp=month_start(twin) if twin else period_start(test, tc),
        tags=[DRIFT, WINDOW, *([MONTHLY] if twin else [])],
        metadata={"reference": parts, "current": "test", **({"month": twin} if twin else {})},
    )  # fmt: skip
    keep("drift_train_vs_test", window.snapshot, window.failed)
    label_snapshot, label = label_drift(
        reference, test, target=spec.target, names=(parts, "test"), time_column=tc,
        name="label_drift_train_vs_test", timestamp=period_start(test, tc), tags=["label", WINDOW],
    )  # fmt: skip
    keep("label_drift", label_snapshot, [], page="drift_train_vs_test")
    same_as_window: dict[str, str] = {}
    monthly: dict[str, float] = {}
    if tc is None:
        log.info("report: no time column (featurize.time_column is null): no drift by month")
    for month, rows in later_months.items():
        if month == twin:
            monthly[month] = round(window.share, 6)
            same_as_window[f"drift_{month}"] = "drift_train_vs_test"
            pages["drift_train_vs_test"].notes.append(
                f"Also the report of month {month}: its rows are exactly the test window's."
            )
            log.info("report: drift_%s: the same rows as the test window, see drift_train_vs_test", month)
            continue
        result = drift(
            reference, rows, **options, name=f"drift_{month}", names=(parts, f"month {month}"),
            timestamp=month_start(month), tags=[DRIFT, MONTHLY],
            metadata={"reference": parts, "month": month},
        )  # fmt: skip
        monthly[month] = round(result.share, 6)
        keep("drift_monthly", result.snapshot, result.failed)

    scored: dict[str, Any] = {
        "target": spec.target, "champion": selection.champion, "threshold": selection.threshold,
        "min_roc_auc": cfg.min_roc_auc,
    }  # fmt: skip
    champion = {"champion": selection.champion}
    tested = predictions["test"]
    pred_months = by_month(tested, tc) if tc is not None and tc in tested.columns else {}
    pred_twin = same_rows(pred_months, tested)
    described = describe_window(tested, "test", tc)
    cls_snapshot, roc_auc = classification(
        tested, **scored, name="classification_test",
        timestamp=month_start(pred_twin) if pred_twin else period_start(tested, tc),
        tags=[CLASSIFICATION, WINDOW, *([MONTHLY] if pred_twin else [])],
        metadata={
            **champion, **({"month": pred_twin} if pred_twin else {}),
            "title": f"Classification quality: champion {selection.champion} on {described.describe()}, "
                     f"threshold {selection.threshold:.4f}, every row",
        },
    )  # fmt: skip
    keep("classification_test", cls_snapshot, failed_tests(cls_snapshot))
    pred_snapshot, predicted = prediction_drift(
        predictions["valid"], tested, target=spec.target, champion=selection.champion,
        names=("validation", "test"), time_column=tc, name="prediction_drift_valid_vs_test",
        timestamp=period_start(tested, tc), tags=["prediction", WINDOW],
    )  # fmt: skip
    keep("prediction_drift", pred_snapshot, [], page="classification_test")
    bins = calibration(tested, target=spec.target, champion=selection.champion)
    calibrated = (
        f"Calibration (table at the end): champion {selection.champion} on {described.describe()}, "
        f"{CALIBRATION_BINS} equal-width bins of its probability"
    )
    pages["classification_test"].extra.append(calibration_widget(bins, calibrated))
    pages["classification_test"].notes.append(calibrated)
    for month, rows in pred_months.items():
        if month == pred_twin:
            same_as_window[f"classification_{month}"] = "classification_test"
            pages["classification_test"].notes.append(
                f"Also the report of month {month}: its rows are exactly the test window's."
            )
            log.info("report: classification_%s: the test window's rows, see classification_test", month)
            continue
        if rows.get_column(spec.target).n_unique() < 2:
            log.info("report: %s: one class only in the test rows, no ROC AUC for this month", month)
            continue
        month_window = describe_window(rows, f"month {month}", tc)
        snapshot, _ = classification(
            rows, **scored, name=f"classification_{month}", timestamp=month_start(month),
            tags=[CLASSIFICATION, MONTHLY],
            metadata={**champion, "month": month,
                      "title": f"Classification quality: champion {selection.champion} on "
                               f"{month_window.describe()}, threshold {selection.threshold:.4f}"},
        )  # fmt: skip
        keep("classification_monthly", snapshot, failed_tests(snapshot))

    summary = {
        "drift_share": round(window.share, 6),
        "drifted_features": window.drifted,
        "features": len(spec.columns),
        "top_drifted": window.top(cfg.top_drifted),
        "monthly_drift_share": monthly,
        "label_drift": label,
        "prediction_drift": predicted,
        "champion": selection.champion,
        "champion_test_roc_auc": None if roc_auc is None else round(roc_auc, 6),
        "calibration": bins,
        "max_missing_share": round(max_missing, 6),
        "failed_tests": {**failed, "total": sum(failed.values())},
        "same_as_window": same_as_window,
        "reports": {name: title_of(snap) for name, snap in snapshots.items()},
    }
    return snapshots, pages, summary


def write_pages(
    folder: Path, snapshots: dict[str, Snapshot], pages: dict[str, Page], *, script: str | None
) -> None:
    """Every page as ``<name>.html`` in ``folder``."""
    for name, spec_ in pages.items():
        shown = [snapshots[n] for n in spec_.snapshots]
        lines = [title_of(s) for s in shown[1:]] + spec_.notes
        text = page(
            shown, title=title_of(shown[0]) or name, scope=name, lines=lines, extra=spec_.extra,
            script=script,
        )  # fmt: skip
        (folder / f"{name}.html").write_text(text, encoding="utf-8")


def main(
    params_path: str,
    clean_dir: str,
    split_dir: str,
    spec_path: str,
    predictions_dir: str,
    select_metrics: str,
    out_dir: str,
    workspace_dir: str,
    summary_path: str,
) -> None:
    params = load_params(params_path)
    cfg = section(params, "report", ReportConfig, source=params_path)
    base = section(params, "featurize", FeaturizeConfig, source=params_path).base
    spec = FeatureSpec.load(spec_path)
    table, predictions, selection = read_inputs(clean_dir, base, predictions_dir, select_metrics, spec)
    check_workspace(workspace_dir)  # before the work, not after it: never replace a folder of other files
    reference = pl.concat([read_part(split_dir, p, spec) for p in TRAINING_PARTS], how="vertical_relaxed")
    later = {p: read_part(split_dir, p, spec) for p in LATER_PARTS}
    snapshots, pages, summary = build(
        table, reference, later, predictions, spec, cfg, table_name=base, selection=selection,
        seed=read_seed(params),
    )  # fmt: skip
    with atomic_outputs(out_dir, workspace_dir, summary_path) as (tmp_out, tmp_ws, tmp_summary):
        tmp_out.mkdir()
        write_assets(tmp_out)
        write_pages(tmp_out, snapshots, pages, script=f"{ASSETS}/{script_name()}")
        for name, snapshot in snapshots.items():
            snapshot.save_json(str(tmp_out / f"{name}.json"))  # Evidently ignores a Path here
        workspace = open_workspace(tmp_ws)
        proj = project(workspace, cfg.workspace_project)
        for snapshot in snapshots.values():
            add_snapshot(workspace, proj, snapshot)
        write_json(tmp_summary, summary)
    log.info(
        "report: drift share %.3f (%d of %d features), positive rate %.3f -> %.3f, champion %s test ROC "
        "AUC %s, %d failed test(s); %d page(s) in %s, %d snapshot(s) in %s",
        summary["drift_share"], summary["drifted_features"], summary["features"],
        summary["label_drift"]["reference_positive_rate"], summary["label_drift"]["current_positive_rate"],
        selection.champion, summary["champion_test_roc_auc"], summary["failed_tests"]["total"], len(pages),
        out_dir, len(snapshots), workspace_dir,
    )  # fmt: skip
