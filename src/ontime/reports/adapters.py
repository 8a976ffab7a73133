"""Evidently adapters: the one polars -> pandas crossing (``dataset``), running a report, reading
its metric values and failed tests, stable ids, and HTML pages that share one copy of Evidently's
script.

Byte-identical outputs: Evidently names widgets, dashboard panels, projects and snapshots with random
(time-based) ids. The random ids inside a report (HTML and workspace snapshot) are replaced, in order
of appearance, by ids derived from the report's name (``stable_ids``); together with a fixed
``PYTHONHASHSEED`` (set by the ``ontime`` command) the same inputs give the same bytes.
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import evidently
import polars as pl
from evidently import BinaryClassification, DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.legacy.model.dashboard import DashboardInfo
from evidently.legacy.model.widget import AdditionalGraphInfo, BaseWidgetInfo
from evidently.legacy.renderers.html_widgets import group_widget
from evidently.legacy.utils import NumpyEncoder
from evidently.legacy.utils.dashboard import STATIC_PATH, TemplateParams, file_html_template
from evidently.metrics import MeanValue

log = logging.getLogger(__name__)


# The random ids Evidently 0.7 generates: uuid7s (widgets, tabs, panels, projects, snapshots) and the
# variable holding a standalone HTML report's data, ``metric_<uuid4 hex>``.
_RANDOM_ID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    r"|(?<=metric_)[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}"
)
_ID_NAMESPACE = uuid.UUID("5d3b8f0e-2c41-4b7a-9e61-0f6a3c9d2b17")


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
    guides: Mapping[str, float] | None = None,
) -> Dataset:
    """The only polars -> pandas crossing: an Evidently dataset whose columns are typed as given.

    Numeric columns go in as float64, categorical ones as strings (Evidently's labels must be str, int
    or bool, and served values must compare equal to the reference's whatever JSON made of them),
    datetimes as naive UTC. ``classification``: (binary target, positive-class probability).
    ``guides``: constant columns for ``guide_metrics`` (``guide_<name>``).
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
    for name, value in sorted((guides or {}).items()):
        exprs.append(pl.lit(float(value), dtype=pl.Float64).alias(guide_column(name)))
        num_columns.append(guide_column(name))
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
    hide: Sequence[MeanValue] = (),
) -> Snapshot:
    """Run ``report`` and log how long it took; the widgets of the ``hide`` metrics (guides) are left
    out of the snapshot's pages, their values stay in its results."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        # chi-square divides by zero for categories the reference never saw: that is drift, as meant
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            current, reference, timestamp=timestamp, tags=list(tags), metadata=dict(metadata), name=name
        )
    log.info("report: %s generated in %.1f s", name, time.perf_counter() - start)
    hidden = {metric.get_fingerprint() for metric in hide}
    if hidden:  # Evidently 0.7 has no public way to run a metric without drawing it
        snapshot._widgets = [w for w in snapshot._widgets if not hidden & set(w.linked_metrics or ())]
    return snapshot


GUIDE = "guide_"


def guide_column(name: str) -> str:
    """The constant column carrying the guide ``name``."""
    return f"{GUIDE}{name}"


def guide_metrics(guides: Mapping[str, float] | None) -> list[MeanValue]:
    """One ``MeanValue`` per guide: a constant (a test's threshold) that a snapshot carries so that a
    dashboard panel can draw it beside the metric it judges. Evidently 0.7's panels have no reference
    lines; a series of the threshold, one value per snapshot, is the line. The columns come from
    ``dataset(guides=...)``; pass the metrics to ``run(hide=...)`` to keep them off the pages."""
    return [MeanValue(column=guide_column(name)) for name in sorted(guides or {})]


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


def finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None
