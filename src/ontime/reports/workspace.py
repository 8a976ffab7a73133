"""The Evidently workspace: open or refuse a folder, the project with its dashboard, snapshots
written under ids derived from their names (the same workspace bytes every run)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from evidently.core.report import Snapshot
from evidently.core.serialization import SnapshotModel
from evidently.legacy.utils import NumpyEncoder
from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric, ProjectModel
from evidently.sdk.panels import bar_plot_panel, counter_panel
from evidently.ui.workspace import Project, Workspace

from ontime.errors import DataError
from ontime.reports.adapters import guide_column, stable_ids, stable_uuid
from ontime.reports.builders import DRIFT_GUIDE, ROC_AUC_GUIDE

# Snapshot tags: the dashboard's panels select their series with them.
DRIFT, CLASSIFICATION, MONTHLY, WINDOW, SERVED = "drift", "classification", "monthly", "window", "served"
VALIDATION = "validation"  # a report on the validation rows (they chose the champion)
QUALITY = "quality"  # a day of served traffic with late labels (ontime monitor --outcomes)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


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


EMPTY_QUALITY = (
    "Empty here until ontime monitor has joined served predictions with their late labels: `ontime "
    "outcomes --from DAY --to DAY`, then `ontime monitor --outcomes outcomes/` (README: Quality with "
    "late labels); one bar per day and served model version with labels of both classes."
)
EMPTY_SERVED = (
    "Empty here until ontime monitor has run: serve the model, send it traffic, run `ontime monitor`, "
    "then open its workspace: `evidently ui --workspace reports/monitoring` (README: Monitoring). The "
    "report stage's workspace (reports/workspace) never holds served traffic."
)


def dashboard() -> DashboardModel:
    """Two tabs. Drift: share of drifted features, training vs test window, by month, and in served
    traffic. Model quality: the champion's ROC AUC on the test window, on every month with labels
    the champion was not trained on (validation and test rows), and per day of served traffic once
    its late labels arrive (``ontime monitor --outcomes``, snapshots tagged ``quality``).

    Series over time are bars (Evidently 0.7's line plots start their y axis at the data's minimum, so
    0.45 -> 0.40 looks like a collapse; bars start at 0), each beside its test's threshold (a guide,
    ``adapters.guide_metrics``). Panels that only ``ontime monitor`` fills say so."""
    share = {"value_type": "share"}

    def drift_share(tag: str, guide: bool = False) -> list[PanelMetric]:
        series = [
            PanelMetric(
                legend="drifted share", metric="DriftedColumnsCount", tags=[DRIFT, tag], metric_labels=share
            )
        ]
        if guide:
            series.append(
                PanelMetric(
                    legend="threshold (test fails above)", metric="MeanValue", tags=[DRIFT, tag],
                    metric_labels={"column": guide_column(DRIFT_GUIDE)},
                )
            )  # fmt: skip
        return series

    def roc_auc(tag: str, guide: bool = False, floor: str = "floor (test fails below)") -> list[PanelMetric]:
        # QUALITY alone selects the served days: no other snapshot carries it
        tags = [tag] if tag == QUALITY else [CLASSIFICATION, tag]
        series = [PanelMetric(legend="ROC AUC", metric="RocAuc", tags=tags)]
        if guide:
            series.append(
                PanelMetric(
                    legend=floor, metric="MeanValue", tags=tags,
                    metric_labels={"column": guide_column(ROC_AUC_GUIDE)},
                )
            )  # fmt: skip
        return series

    tabs = {
        "Drift": [
            counter_panel(
                "Drifted share of features: training vs test window", drift_share(WINDOW), size="half"
            ),
            counter_panel(
                "Drifted share of features: latest served traffic",
                drift_share(SERVED),
                size="half",
                description=EMPTY_SERVED,
            ),
            bar_plot_panel(
                "Drifted share of features by month, against the training window",
                drift_share(MONTHLY, guide=True),
                description="Each month after the training window; the report's test fails for a month "
                "whose bar is above its threshold (params report.drift_share_threshold).",
            ),
            bar_plot_panel(
                "Drifted share of features in served traffic (ontime monitor)",
                drift_share(SERVED, guide=True),
                description=EMPTY_SERVED,
            ),
        ],
        "Model quality": [
            counter_panel("Champion ROC AUC on the test window", roc_auc(WINDOW), size="half"),
            bar_plot_panel(
                "Champion ROC AUC by month: validation and test rows",
                roc_auc(MONTHLY, guide=True),
                description="Every month with labels the champion did not train on: the validation "
                "months (they chose the champion and its threshold, so they flatter it) and the test "
                "months. The report's test fails below params report.min_roc_auc.",
            ),
            bar_plot_panel(
                "Champion ROC AUC per day of served traffic, with late labels (ontime monitor --outcomes)",
                roc_auc(QUALITY, guide=True, floor="alert floor (validation ROC AUC - max drop)"),
                description="Each local day of served predictions whose outcomes have arrived, on its "
                "labelled predictions. ontime monitor alerts (exit 1) when the ROC AUC pooled over the "
                "newest monitor.quality.window_days days falls below the floor: the champion's "
                "validation ROC AUC minus monitor.quality.max_roc_auc_drop. " + EMPTY_QUALITY,
            ),
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
