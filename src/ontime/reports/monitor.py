"""monitor: drift of served traffic (the service's request log) against the training reference.

Reads the request log the service writes (JSON Lines, one scored flight a line: ``ts``,
``request_id``, ``model_version``, ``features`` (the model's feature columns after online
featurization), ``probability``, ``decision``), compares its features with the training part
(``data/split/train.parquet``) in an Evidently drift report, writes the report as HTML, adds the
snapshot to the monitor's Evidently workspace (the report stage's project, tagged ``served`` and
stamped with the last request's time) and returns the exit code: 0 when the share of drifted features
is at most ``monitor.drift_share_threshold``, 1 above it.

The monitor's workspace (default ``reports/monitoring``, git-ignored, no pipeline output) is its own:
the report stage's workspace (``reports/workspace``) is a DVC output, rewritten by every run of that
stage and byte-identical across runs, so nothing else may write into it. Each run copies the report
stage's current snapshots and dashboard into the monitor's workspace (replacing the copies of an
earlier pipeline run), so ``evidently ui --workspace reports/monitoring`` shows the pipeline's and
the served traffic's snapshots together.

Lines that are not JSON objects with a ``features`` object carrying every feature (a line cut by a
crash, a stray write) are skipped and counted; everything else wrong stops with a clear error before
anything is written. The monitor's workspace is only ever added to, never recreated; of its
snapshots, only the copies of the report stage's are ever replaced or removed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from evidently.ui.workspace import Project, Workspace
from pydantic import Field

from ontime.config import StrictModel, load_params, section
from ontime.config import seed as read_seed
from ontime.errors import DataError
from ontime.io import atomic_outputs
from ontime.reports.reports import (
    DRIFT,
    SERVED,
    Drift,
    ReportConfig,
    check_workspace,
    drift,
    open_workspace,
    project,
    save_html,
    snapshot_id,
)
from ontime.spec import FeatureSpec

log = logging.getLogger(__name__)

EXAMPLES = 3  # malformed lines quoted in the warning


class MonitorConfig(StrictModel):
    """The ``monitor`` section of params.yaml."""

    drift_share_threshold: float = Field(gt=0, le=1, description="exit code 1 above this drifted share")
    min_rows: int = Field(ge=1, description="fewer valid requests than this: too few to judge drift")
    sample_rows: int = Field(ge=100, description="rows sampled (seeded) from the log and the reference")


@dataclass(frozen=True)
class RequestLog:
    """The valid requests of a log, as a frame of the spec's features, and what was skipped."""

    features: pl.DataFrame
    lines: int
    skipped: int
    first: dt.datetime | None  # naive UTC, like every snapshot timestamp of the workspace
    last: dt.datetime | None
    model_versions: list[str]


def _timestamp(value: Any) -> dt.datetime | None:
    """An ISO time as naive UTC (a naive one is taken as UTC); None when it is not one."""
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def _valid(entry: Any, spec: FeatureSpec) -> bool:
    """A request line: a JSON object whose ``features`` object has every feature, numeric ones as
    numbers (or null) and categorical ones as scalars (or null)."""
    features = entry.get("features") if isinstance(entry, dict) else None
    if not isinstance(features, dict) or any(c not in features for c in spec.columns):
        return False
    numbers = all(v is None or isinstance(v, int | float) for v in (features[c] for c in spec.numeric))
    return numbers and all(not isinstance(features[c], dict | list) for c in spec.categorical)


def read_request_log(path: str | Path, spec: FeatureSpec) -> RequestLog:
    """Parse the log; malformed lines are counted and skipped, missing feature columns are an error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: request log not found; serve the model (it logs every request) or pass --log"
        )
    # (line number in the file, parsed JSON or None); blank lines are not requests, nor malformed
    lines: list[tuple[int, Any]] = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if line.strip():
            try:
                lines.append((number, json.loads(line)))
            except ValueError:
                lines.append((number, None))
    if not lines:
        raise DataError(f"{path}: the request log is empty; serve some requests before monitoring")
    seen = {
        c
        for _, e in lines
        if isinstance(e, dict) and isinstance(e.get("features"), dict)
        for c in e["features"]
    }
    missing = [c for c in spec.columns if c not in seen]
    if seen and missing:
        raise DataError(
            f"{path}: feature column(s) {missing} of the spec are in no request; the service and the spec "
            "come from different models: monitor with the spec of the served model"
        )
    checked = [(number, e, _valid(e, spec)) for number, e in lines]
    valid = [e for _, e, ok in checked if ok]
    bad = [number for number, _, ok in checked if not ok]
    if bad:
        log.warning(
            "monitor: %s: skipped %d malformed line(s) of %d (not JSON, no `features` object, a feature "
            "missing or of the wrong type), e.g. line(s) %s",
            path,
            len(bad),
            len(lines),
            bad[:EXAMPLES],
        )
    if not valid:
        raise DataError(
            f"{path}: none of its {len(lines)} line(s) is a request (JSON with a `features` object)"
        )
    kinds = [(c, pl.Float64) for c in spec.numeric] + [(c, pl.String) for c in spec.categorical]
    features = pl.DataFrame(
        [pl.Series(c, [e["features"][c] for e in valid], dtype=dtype, strict=False) for c, dtype in kinds]
    )
    times = [t for e in valid if (t := _timestamp(e.get("ts"))) is not None]
    return RequestLog(
        features=features.select(spec.columns),
        lines=len(lines),
        skipped=len(bad),
        first=min(times, default=None),
        last=max(times, default=None),
        model_versions=sorted({str(e.get("model_version")) for e in valid}),
    )


def monitor(
    requests: RequestLog,
    reference: pl.DataFrame,
    spec: FeatureSpec,
    cfg: MonitorConfig,
    report: ReportConfig,
    *,
    seed: int,
    log_name: str,
) -> tuple[Drift, dict[str, Any]]:
    """The drift report of the served features against ``reference``, and its summary."""
    if requests.features.height < cfg.min_rows:
        raise DataError(
            f"{log_name}: {requests.features.height} valid request(s), fewer than monitor.min_rows="
            f"{cfg.min_rows}: too few to judge drift; wait for more traffic or lower monitor.min_rows"
        )
    stamp = requests.last or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    result = drift(
        reference,
        requests.features,
        spec,
        drift_share_threshold=cfg.drift_share_threshold,
        stattest_threshold=report.stattest_threshold,
        sample_rows=cfg.sample_rows,
        seed=seed,
        name=f"served_{stamp:%Y-%m-%dT%H:%M}",
        timestamp=stamp,
        tags=[DRIFT, SERVED],
        metadata={
            "log": log_name,
            "from": requests.first.isoformat() if requests.first else "",
            "to": requests.last.isoformat() if requests.last else "",
            "requests": str(requests.features.height),
            "skipped_lines": str(requests.skipped),
            "model_version": ",".join(requests.model_versions),
        },
    )
    summary = {
        "requests": requests.features.height,
        "skipped_lines": requests.skipped,
        "from": requests.first.isoformat() if requests.first else None,
        "to": requests.last.isoformat() if requests.last else None,
        "model_versions": requests.model_versions,
        "drift_share": round(result.share, 6),
        "drifted_features": result.drifted,
        "features": len(spec.columns),
        "drift_share_threshold": cfg.drift_share_threshold,
        "drift": result.share > cfg.drift_share_threshold,
        "top_drifted": result.top(report.top_drifted),
    }
    return result, summary


def refresh_pipeline_snapshots(source_dir: Path, workspace: Workspace, proj: Project) -> int:
    """Copy the report stage's snapshots and dashboard from its workspace at ``source_dir`` (only
    read: it is a DVC output) into ``proj``; returns how many snapshots were copied.

    The stage's snapshots keep their ids (``snapshot_id``, from their names: version 5 UUIDs), so a
    copy replaces the copy of the same report from an earlier pipeline run; copies of reports the
    stage no longer writes (version 5 ids not in ``source_dir``) are deleted. The monitor's own
    snapshots (time-based ids from Evidently) are kept; so are snapshots tagged ``served`` in
    ``source_dir`` (a workspace from before the monitor had its own), copied under their ids.
    """
    if not source_dir.exists():
        log.warning(
            "monitor: %s not found (dvc pull, or dvc repro report): the workspace gets no pipeline "
            "snapshots this time",
            source_dir,
        )
        return 0
    source = open_workspace(source_dir)
    found = sorted(source.search_project(proj.name), key=lambda p: str(p.id))
    if not found:
        log.warning("monitor: %s has no project %r: no pipeline snapshots copied", source_dir, proj.name)
        return 0
    origin = found[0]
    workspace.save_dashboard(proj.id, source.get_dashboard(origin.id))
    copied: set[str] = set()
    for sid in sorted(source.list_runs(origin.id), key=str):
        model = source.get_run(origin.id, sid)
        if model is None:
            continue
        target = sid if SERVED in model.tags else snapshot_id(proj.name, model.name or str(sid))
        workspace.state.write_snapshot(proj.id, target, model)
        copied.add(str(target))
    for sid in workspace.list_runs(proj.id):
        if uuid.UUID(str(sid)).version == 5 and str(sid) not in copied:
            workspace.delete_run(proj.id, sid)
    return len(copied)


def main(
    params_path: str,
    log_path: str,
    reference_path: str,
    spec_path: str,
    workspace_dir: str,
    out_html: str,
    pipeline_workspace_dir: str | None = None,
) -> int:
    """Run the monitor; 0: no drift, 1: drift above ``monitor.drift_share_threshold``.

    ``pipeline_workspace_dir``: the report stage's workspace, whose snapshots are copied into
    ``workspace_dir`` (``refresh_pipeline_snapshots``); None: copy nothing.
    """
    params = load_params(params_path)
    cfg = section(params, "monitor", MonitorConfig, source=params_path)
    # the project, per-column threshold and summary length of the report stage
    report = section(params, "report", ReportConfig, source=params_path)
    spec = FeatureSpec.load(spec_path)
    check_workspace(workspace_dir)
    if pipeline_workspace_dir is not None:
        if Path(pipeline_workspace_dir).resolve() == Path(workspace_dir).resolve():
            raise DataError(
                f"{workspace_dir}: is the report stage's workspace (a pipeline output, rewritten by "
                "every run); the monitor writes its own: pass another --workspace (default "
                "reports/monitoring)"
            )
        check_workspace(pipeline_workspace_dir)
    if not Path(reference_path).is_file():
        raise DataError(f"{reference_path}: training reference not found; run dvc repro split")
    reference = pl.read_parquet(reference_path)
    spec.check(reference, where=reference_path, target=False)
    requests = read_request_log(log_path, spec)
    result, summary = monitor(
        requests, reference, spec, cfg, report, seed=read_seed(params), log_name=log_path
    )
    with atomic_outputs(out_html) as (tmp_html,):
        save_html(result.snapshot, tmp_html)
        workspace = open_workspace(workspace_dir)
        proj = project(workspace, report.workspace_project)
        copied = (
            0
            if pipeline_workspace_dir is None
            else refresh_pipeline_snapshots(Path(pipeline_workspace_dir), workspace, proj)
        )
        ref = workspace.add_run(proj.id, result.snapshot)
    summary |= {
        "html": str(out_html),
        "workspace": str(workspace_dir),
        "snapshot": str(ref.id),
        "pipeline_snapshots": copied,
    }
    print(json.dumps(summary, indent=2))
    level = logging.WARNING if summary["drift"] else logging.INFO
    log.log(
        level,
        "monitor: %d requests (%d lines skipped): %d of %d features drifted (share %.3f, threshold %.3f)",
        summary["requests"],
        summary["skipped_lines"],
        result.drifted,
        len(spec.columns),
        result.share,
        cfg.drift_share_threshold,
    )
    return 1 if summary["drift"] else 0
