"""monitor: drift of served traffic (the service's request log) against the training reference.

Reads the request log the service writes, its rotated files included (``log.N`` ... ``log.1``, then
``log``: oldest first; JSON Lines, one scored flight a line: ``ts``,
``request_id``, ``model_version``, ``features`` (the model's feature columns after online
featurization), ``probability``, ``decision``), compares its features with the training part
(``data/split/train.parquet``) in an Evidently drift report, writes the report as HTML, adds the
snapshot to the monitor's Evidently workspace (the report stage's project, tagged ``served`` and
stamped with the last request's time) and returns the exit code: 0 when the share of drifted features
is at most ``monitor.drift_share_threshold``, 1 above it (errors: 2, from the ``ontime`` command).

With late labels (``--outcomes``: ``ontime outcomes`` files), the log's entries are joined with them
by key and the served model's quality is judged per day and over a window (``ontime.reports.quality``:
the summary's ``quality`` object, one Evidently snapshot per day and model version); exit 1 too on a
quality alert. The summary's ``alerts`` names what fired (``drift``, ``quality``). A log with fewer
than ``monitor.min_rows`` requests is then judged on quality alone (``drift``: null, and
``drift_not_judged`` says why); without ``--outcomes`` it stays an error, as there is nothing to judge.

Not every feature is drift-tested (``select_columns``); the summary and the log say which are and why
the others are not:

- identifiers (``monitor.identifiers``, e.g. flight number and tail number): thousands of values, most
  of them rare, so any sample of served traffic differs from the reference and a drift test always
  fires. They are reported instead: missing share, distinct values, share of values the reference
  never had. A listed column that is not a feature of the served model is ignored (lists are data
  specific; other data sets have other ids).
- all-null columns: null in every sampled request (a client that never sends an optional field, e.g.
  the schedule counts or the weather), or in every sampled reference row. Nothing to compare (and
  Evidently refuses an empty column); listed under ``all_null``, as a data problem, not as drift.
- constant columns: one and the same value in the served sample and the reference sample, so a drift
  test has nothing to judge (Evidently gives no score). A column constant in the served traffic but
  not in the reference (a stuck input) stays in the test, where it drifts; both kinds are listed under
  ``constant``.

The share of drifted features is over the tested ones; every feature's missing share in the served
traffic (its sample of ``monitor.sample_rows`` requests) is in the summary.

The monitor's workspace (default ``reports/monitoring``, git-ignored, no pipeline output) is its own:
the report stage's workspace (``reports/workspace``) is a DVC output, rewritten by every run of that
stage and byte-identical across runs, so nothing else may write into it. Each run copies the report
stage's current snapshots into the monitor's workspace (replacing the copies of an earlier pipeline
run) and writes the dashboard (the one the report stage writes, from the same code), so ``evidently
ui --workspace reports/monitoring`` shows the pipeline's and the served traffic's snapshots together.

Lines that are not JSON objects with a ``features`` object carrying every feature (a line cut by a
crash, a stray write) are skipped and counted; everything else wrong stops with a clear error before
anything is written. The monitor's workspace is only ever added to, never recreated; of its
snapshots, only the copies of the report stage's are ever replaced or removed, and the served quality
ones of a day and model version are replaced by a later run's.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from evidently.ui.storage.local.base import PROJECT_FILE_NAME, SNAPSHOTS_DIR_NAME, UUID_REGEX
from evidently.ui.workspace import Project, Workspace

from ontime import command
from ontime.config import load_params, section
from ontime.config import seed as read_seed
from ontime.config.featurize import FeaturizeConfig
from ontime.config.monitor import MonitorConfig
from ontime.config.report import ReportConfig
from ontime.config.serve import ServeConfig
from ontime.errors import DataError
from ontime.io import atomic_outputs
from ontime.reports.adapters import sample, save_html
from ontime.reports.builders import Drift, drift
from ontime.reports.quality import Outcomes, Quality, Reference, assess, join, read_outcomes, read_reference
from ontime.reports.quality import snapshots as quality_snapshots
from ontime.reports.workspace import (
    DRIFT,
    QUALITY,
    SERVED,
    add_snapshot,
    check_workspace,
    dashboard,
    open_workspace,
    project,
    snapshot_id,
)
from ontime.serving.requestlog import default_path, log_files, read_lines
from ontime.spec import FeatureSpec

log = logging.getLogger(__name__)

EXAMPLES = 3  # malformed lines quoted in the warning
DEFAULT_CARD = "models/champion/model_card.json"  # the served champion's validation figures


# why a feature is not drift-tested: summary key -> what the log says
IDENTIFIER, ALL_NULL, ALL_NULL_REFERENCE, CONSTANT = (
    "identifier",
    "all_null",
    "all_null_in_reference",
    "constant",
)
SKIP_REASONS = {
    IDENTIFIER: "an identifier (monitor.identifiers)",
    ALL_NULL: "null in every request",
    ALL_NULL_REFERENCE: "null in every reference row",
    CONSTANT: "one and the same value in the requests and the reference",
}


@dataclass(frozen=True)
class RequestLog:
    """The valid requests of a log, as a frame of the spec's features, and what was skipped."""

    features: pl.DataFrame
    # the same requests in log order: line (0, 1, ...), ts (UTC), key, model_version, probability,
    # decision; null where an entry lacks one (the quality join counts those)
    scored: pl.DataFrame
    lines: int
    skipped: int
    files: list[str]  # the files that held lines, oldest first (rotated ones, then the log)
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
    """Parse the log and its rotated files (``path.N`` ... ``path.1``, then ``path``: oldest first);
    malformed lines are counted and skipped, missing feature columns are an error."""
    path = Path(path)
    files = log_files(path)
    if not files:
        raise DataError(
            f"{path}: request log not found (nor rotated ones, {path.name}.1 ...); serve the model (it "
            "logs every request) or pass --log"
        )
    # (where: file:line, parsed JSON or None); blank lines are not requests, nor malformed
    lines: list[tuple[str, Any]] = []
    read: list[str] = []
    for file, number, line in read_lines(path):
        if not read or read[-1] != str(file):
            read.append(str(file))
        if line.strip():
            try:
                lines.append((f"{file.name}:{number}", json.loads(line.decode("utf-8", errors="replace"))))
            except ValueError:
                lines.append((f"{file.name}:{number}", None))
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
    checked = [(where, e, _valid(e, spec)) for where, e in lines]
    valid = [e for _, e, ok in checked if ok]
    bad = [where for where, _, ok in checked if not ok]
    if bad:
        log.warning(
            "monitor: %s: skipped %d malformed line(s) of %d (not JSON, no `features` object, a feature "
            "missing or of the wrong type), e.g. (file:line) %s",
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
        scored=scored_entries(valid),
        lines=len(lines),
        skipped=len(bad),
        files=read,
        first=min(times, default=None),
        last=max(times, default=None),
        model_versions=sorted({str(e.get("model_version")) for e in valid}),
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def scored_entries(entries: list[dict[str, Any]]) -> pl.DataFrame:
    """What the quality join needs of each entry, in log order (see ``RequestLog.scored``)."""
    return pl.DataFrame(
        {
            "line": range(len(entries)),
            "ts": [_timestamp(e.get("ts")) for e in entries],
            "key": [k if isinstance(k := e.get("key"), str) else None for e in entries],
            "model_version": [str(e.get("model_version")) for e in entries],
            "probability": [_number(e.get("probability")) for e in entries],
            "decision": [d if (d := e.get("decision")) in (0, 1) and not isinstance(d, bool) else None
                         for e in entries],
        },
        schema={"line": pl.Int64, "ts": pl.Datetime("us"), "key": pl.String, "model_version": pl.String,
                "probability": pl.Float64, "decision": pl.Int8},
    ).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))  # fmt: skip


def _present(df: pl.DataFrame, column: str, spec: FeatureSpec) -> pl.Series:
    """The non-missing values of ``column`` as Evidently gets them (numbers as float, categories as
    strings); null and NaN are missing."""
    values = df.get_column(column)
    typed = values.cast(pl.Float64).fill_nan(None) if column in spec.numeric else values.cast(pl.String)
    return typed.drop_nulls()


@dataclass(frozen=True)
class Columns:
    """Which features the drift test judges, and what the others are (see the module docstring)."""

    tested: list[str]
    skipped: dict[str, str]  # feature -> reason, a key of SKIP_REASONS
    all_null: list[str]  # null in every served request
    constant: list[str]  # a single value in every served request (tested or not)
    missing_share: dict[str, float]  # every feature's null share in the served sample (sample_rows)
    identifiers: dict[str, dict[str, Any]]  # missing_share, distinct, unseen_share

    def summary(self) -> dict[str, Any]:
        return {
            "drift_tested": self.tested,
            "skipped": self.skipped,
            "all_null": self.all_null,
            "constant": self.constant,
            "identifiers": self.identifiers,
            "missing_share": self.missing_share,
        }


def identifier_stats(current: pl.DataFrame, reference: pl.DataFrame, column: str) -> dict[str, Any]:
    """An id column of the served traffic: its missing share, how many distinct values it has, and
    the share of its (non-null) values that the whole reference never had."""
    served = current.get_column(column).cast(pl.String)
    known = reference.get_column(column).cast(pl.String).drop_nulls().unique()
    present = served.drop_nulls()
    unseen = int((~present.is_in(known.implode())).sum())
    return {
        "missing_share": round(served.null_count() / max(served.len(), 1), 6),
        "distinct": present.n_unique(),
        "unseen_share": round(unseen / present.len(), 6) if present.len() else None,
    }


def select_columns(
    current: pl.DataFrame,
    reference_sample: pl.DataFrame,
    reference: pl.DataFrame,
    spec: FeatureSpec,
    identifiers: list[str],
) -> Columns:
    """Split the spec's features into the drift-tested ones and the skipped ones, by what the samples
    Evidently gets (``current``, ``reference_sample``) hold; identifiers are described against the
    whole ``reference``. ``identifiers`` that are not features of ``spec`` are ignored."""
    tested: list[str] = []
    skipped: dict[str, str] = {}
    all_null: list[str] = []
    constant: list[str] = []
    ids: dict[str, dict[str, Any]] = {}
    missing: dict[str, float] = {}
    for column in spec.columns:
        served = _present(current, column, spec)
        ref = _present(reference_sample, column, spec)
        missing[column] = round(1 - served.len() / max(current.height, 1), 6)
        if served.len() == 0:
            all_null.append(column)
        served_values = served.unique()
        if served_values.len() == 1:
            constant.append(column)
        if column in identifiers:
            skipped[column] = IDENTIFIER
            ids[column] = identifier_stats(current, reference, column)
        elif served.len() == 0:
            skipped[column] = ALL_NULL
        elif ref.len() == 0:
            skipped[column] = ALL_NULL_REFERENCE
        elif served_values.len() == 1 and ref.unique().equals(served_values):
            skipped[column] = CONSTANT
        else:
            tested.append(column)
    return Columns(
        tested=tested,
        skipped=skipped,
        all_null=all_null,
        constant=constant,
        missing_share=missing,
        identifiers=ids,
    )


def tested_spec(spec: FeatureSpec, columns: list[str]) -> FeatureSpec:
    """``spec`` restricted to ``columns`` (the ones Evidently gets)."""
    keep = set(columns)
    return dataclasses.replace(
        spec,
        numeric=[c for c in spec.numeric if c in keep],
        categorical=[c for c in spec.categorical if c in keep],
        features=[f for f in spec.features if f["name"] in keep],
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
    # the samples `drift` would draw (same seeds), drawn here so that the columns are chosen by what
    # Evidently gets; `drift` samples them again, a no-op at this size
    reference_sample = sample(reference, cfg.sample_rows, seed)
    current = sample(requests.features, cfg.sample_rows, seed + 1)
    columns = select_columns(
        current, reference_sample, reference, spec, [c for c in cfg.identifiers if c in spec.columns]
    )
    if not columns.tested:
        raise DataError(
            f"{log_name}: no feature is left to drift-test ("
            + ", ".join(f"{c}: {SKIP_REASONS[r]}" for c, r in columns.skipped.items())
            + "); check that the service and the clients send the features, and monitor.identifiers"
        )
    stamp = requests.last or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    try:
        result = drift(
            reference_sample,
            current,
            tested_spec(spec, columns.tested),
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
                "not_drift_tested": ", ".join(f"{c} ({r})" for c, r in columns.skipped.items()),
            },
        )
    except ValueError as exc:  # Evidently's refusals; never let them read as drift (exit 1)
        raise DataError(
            f"{log_name}: Evidently could not compute the drift report over {columns.tested}: {exc}"
        ) from exc
    summary = {
        **request_summary(requests),
        "drift_share": round(result.share, 6),
        "drifted_features": result.drifted,
        "features": len(spec.columns),
        "tested_features": len(columns.tested),
        "drift_share_threshold": cfg.drift_share_threshold,
        "drift": result.share > cfg.drift_share_threshold,
        "top_drifted": result.top(report.top_drifted),
        **columns.summary(),
    }
    return result, summary


def _project_dir(workspace_dir: Path, name: str) -> Path | None:
    """The folder of the oldest (by id) project called ``name`` in the workspace at
    ``workspace_dir``, read from its ``metadata.json`` files; None when there is none."""
    found = []
    for meta in workspace_dir.glob(f"*/{PROJECT_FILE_NAME}"):
        try:
            project_name = json.loads(meta.read_bytes()).get("name")
        except (OSError, ValueError) as exc:
            raise DataError(f"{meta}: an unreadable project of the Evidently workspace ({exc})") from exc
        if project_name == name:
            found.append(meta.parent)
    return min(found, key=lambda p: p.name) if found else None


def _snapshot_head(path: Path) -> tuple[bytes, str | None, list[str]]:
    """A snapshot file's bytes, name and tags (json, not Evidently's pydantic models: 10x faster)."""
    raw = path.read_bytes()
    try:
        head = json.loads(raw)
        return raw, head.get("name"), list(head.get("tags") or [])
    except (ValueError, AttributeError) as exc:
        raise DataError(f"{path}: not an Evidently snapshot ({exc}); re-run `dvc repro report`") from exc


def refresh_pipeline_snapshots(source_dir: Path, workspace: Workspace, proj: Project) -> int:
    """Copy the report stage's snapshots from its workspace at ``source_dir`` (only read: it is a DVC
    output) into ``proj``; returns how many snapshots were copied.

    The stage's snapshots keep their ids (``snapshot_id``, from their names: version 5 UUIDs), so a
    copy replaces the copy of the same report from an earlier pipeline run; copies of reports the
    stage no longer writes (version 5 ids not in ``source_dir``) are deleted. The monitor's own
    snapshots are kept: drift ones (time-based ids from Evidently) and served quality ones (version 5
    ids, tagged ``quality``); so are snapshots tagged ``served`` in ``source_dir`` (a workspace from
    before the monitor had its own), copied under their ids. The dashboard is not copied: ``main``
    writes the current one (``workspace.dashboard``), the same the report stage writes.

    A local Evidently workspace keeps one JSON file per snapshot (``<project>/snapshots/<id>.json``),
    so the copies are the files' bytes: opening the source as a ``Workspace`` and reading each
    snapshot through Evidently's models, then writing it back, took 14 s a run on the smoke data
    (``Workspace()`` alone parses every snapshot once).
    """
    if not source_dir.exists():
        log.warning(
            "monitor: %s not found (dvc pull, or dvc repro report): the workspace gets no pipeline "
            "snapshots this time",
            source_dir,
        )
        return 0
    check_workspace(source_dir)
    origin = _project_dir(source_dir, proj.name)
    if origin is None:
        log.warning("monitor: %s has no project %r: no pipeline snapshots copied", source_dir, proj.name)
        return 0
    target_dir = Path(workspace.path) / str(proj.id) / SNAPSHOTS_DIR_NAME
    target_dir.mkdir(parents=True, exist_ok=True)
    copied: set[str] = set()
    for path in sorted((origin / SNAPSHOTS_DIR_NAME).glob("*.json"), key=lambda p: p.name):
        sid = path.name.removesuffix(".json")
        if not UUID_REGEX.match(sid):  # as the workspace's own listing (LocalState.list_snapshots)
            continue
        raw, name, tags = _snapshot_head(path)
        target = sid if SERVED in tags else str(snapshot_id(proj.name, name or sid))
        (target_dir / f"{target}.json").write_bytes(raw)
        copied.add(target)
    for sid in workspace.list_runs(proj.id):
        if uuid.UUID(str(sid)).version == 5 and str(sid) not in copied:
            _, _, tags = _snapshot_head(target_dir / f"{sid}.json")
            if QUALITY not in tags:
                workspace.delete_run(proj.id, sid)
    return len(copied)


@dataclass(frozen=True)
class QualityInputs:
    """What ``--outcomes`` adds, read and checked before anything is written."""

    outcomes: Outcomes
    reference: Reference
    key_fields: list[str]
    time_column: str | None
    timezone: str | None


def served_card(requests: RequestLog) -> str:
    """The model card of the model that served the newest entry of the log: the bundle's
    ``model_card.json`` in the BentoML store (its ``model_version`` is a pinned model tag), so the
    quality alert compares the served model with its own validation figure, whatever the workspace
    holds now (a challenger just trained, say). ``DEFAULT_CARD`` when that model is not in the store."""
    versions = requests.scored.get_column("model_version").drop_nulls()
    if versions.len() == 0:
        return DEFAULT_CARD
    tag = str(versions[-1])
    try:
        import bentoml
        from bentoml.exceptions import BentoMLException

        card = Path(bentoml.models.get(tag).path) / "model_card.json"
    except (BentoMLException, ValueError) as exc:
        log.warning(
            "monitor: the newest entry's model %s is not in the BentoML store (%s): the quality "
            "reference is %s; pass --card to choose",
            tag,
            exc,
            DEFAULT_CARD,
        )
        return DEFAULT_CARD
    return str(card) if card.is_file() else DEFAULT_CARD


def read_quality_inputs(
    params: dict[str, Any], params_path: str, outcomes_path: str, card_path: str
) -> QualityInputs:
    """The outcomes, the champion's reference figures and the key's layout (params ``serve.key``,
    ``featurize.time_column`` and ``featurize.timezone``)."""
    serve = section(params, "serve", ServeConfig, source=params_path)
    feat = section(params, "featurize", FeaturizeConfig, source=params_path)
    if not serve.key:
        log.warning(
            "monitor: params serve.key is empty: the service logs no key, so no prediction can be "
            "joined with its outcome (set serve.key in conf/ and package again)"
        )
    return QualityInputs(
        outcomes=read_outcomes(outcomes_path),
        reference=read_reference(card_path),
        key_fields=list(serve.key),
        time_column=feat.time_column,
        timezone=feat.timezone,
    )


def request_summary(requests: RequestLog) -> dict[str, Any]:
    """What the summary says about the log itself, drift or not."""
    return {
        "requests": requests.features.height,
        "skipped_lines": requests.skipped,
        "log_files": requests.files,
        "from": requests.first.isoformat() if requests.first else None,
        "to": requests.last.isoformat() if requests.last else None,
        "model_versions": requests.model_versions,
    }


def main(
    params_path: str,
    log_path: str | None,
    reference_path: str,
    spec_path: str,
    workspace_dir: str,
    out_html: str,
    pipeline_workspace_dir: str | None = None,
    outcomes_path: str | None = None,
    card_path: str | None = None,
) -> int:
    """Run the monitor; 0: no alert, 1: drift above ``monitor.drift_share_threshold`` or, with
    ``outcomes_path``, a quality alert (a DataError, exit 2 from the ``ontime`` command, for anything
    that stops it).

    ``log_path``: the request log (its rotated files are read too); None: where the service writes
    it (``ontime.serving.requestlog.default_path``). ``pipeline_workspace_dir``: the report stage's
    workspace, whose snapshots are copied into ``workspace_dir`` (``refresh_pipeline_snapshots``);
    None: copy nothing. ``outcomes_path``: late labels (a ``.jsonl`` file or a folder of them), joined
    with the log by key (``ontime.reports.quality``), judged against the champion's validation ROC AUC
    in ``card_path`` (None: the card of the model that served the newest entry, ``served_card``);
    no outcomes: drift only. With outcomes, a log of fewer than ``monitor.min_rows``
    requests is judged on quality alone (drift is reported as not judged); without, it is an error.
    """
    log_path = str(default_path()) if log_path is None else log_path
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
    inputs = (
        None
        if outcomes_path is None
        else read_quality_inputs(params, params_path, outcomes_path, card_path or served_card(requests))
    )
    summary = request_summary(requests)
    result: Drift | None = None
    if inputs is not None and requests.features.height < cfg.min_rows:
        summary |= {
            "drift": None,
            "drift_not_judged": f"{requests.features.height} valid request(s), fewer than "
            f"monitor.min_rows={cfg.min_rows}",
        }
        log.warning("monitor: %s: %s: drift not judged (quality only)", log_path, summary["drift_not_judged"])
    else:
        result, summary = monitor(
            requests, reference, spec, cfg, report, seed=read_seed(params), log_name=log_path
        )
    assessed = made = None
    if inputs is not None:
        joined = join(
            requests.scored,
            inputs.outcomes,
            key_fields=inputs.key_fields,
            time_column=inputs.time_column,
            timezone=inputs.timezone,
        )
        assessed = assess(joined, cfg.quality, inputs.reference, inputs.outcomes)
        made = quality_snapshots(assessed, inputs.reference)  # before writing anything
    with atomic_outputs(*([out_html] if result is not None else [])) as temps:
        if result is not None:
            save_html(result.snapshot, temps[0])
        workspace = open_workspace(workspace_dir)
        proj = project(workspace, report.workspace_project)
        copied = (
            0
            if pipeline_workspace_dir is None
            else refresh_pipeline_snapshots(Path(pipeline_workspace_dir), workspace, proj)
        )
        workspace.save_dashboard(proj.id, dashboard())
        ref = None if result is None else workspace.add_run(proj.id, result.snapshot)
        written = [] if made is None else [str(add_snapshot(workspace, proj, snap)) for snap in made[0]]
    summary |= {
        "html": str(out_html) if result is not None else None,
        "workspace": str(workspace_dir),
        "snapshot": None if ref is None else str(ref.id),
        "pipeline_snapshots": copied,
    }
    if assessed is not None and made is not None:
        summary["quality"] = assessed.summary | {"snapshots": written, "snapshots_one_class": made[1]}
    else:
        summary["quality"] = None
    alerts = [] if not summary["drift"] else ["drift"]
    if assessed is not None and assessed.verdict.alert:
        alerts.append("quality")
    summary["alerts"] = alerts
    print(json.dumps(summary, indent=2))
    if result is not None:
        log_columns(summary, [c for c in cfg.identifiers if c not in spec.columns])
        level = logging.WARNING if summary["drift"] else logging.INFO
        log.log(
            level,
            "monitor: %d requests (%d lines skipped): %d of %d drift-tested features drifted (share "
            "%.3f, threshold %.3f; %d of %d features not tested)",
            summary["requests"],
            summary["skipped_lines"],
            result.drifted,
            summary["tested_features"],
            result.share,
            cfg.drift_share_threshold,
            len(summary["skipped"]),
            len(spec.columns),
        )
    if assessed is not None:
        log_quality(assessed)
    if alerts:
        why = {
            "drift": f"drift share {summary.get('drift_share')} > {cfg.drift_share_threshold}",
            "quality": assessed.verdict.reason if assessed is not None else "",
        }
        log.warning("monitor: alert(s): %s", "; ".join(f"{a}: {why[a]}" for a in alerts))
    return 1 if alerts else 0


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Drift and quality of served traffic (the request log)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime monitor``: its description and options."""
    parser.description = (
        "Drift of served traffic (the service's request log) against the training reference "
        "(params `monitor`): writes an HTML report, adds a snapshot to its own Evidently workspace "
        "(refreshing there the copies of the report stage's snapshots, so `evidently ui --workspace "
        "reports/monitoring` shows both), prints a JSON summary. With --outcomes (late labels), also "
        "the served model's quality per day and over the newest monitor.quality.window_days days, "
        "against the champion's validation ROC AUC. Exit 0: no alert; 1: drift share above "
        "monitor.drift_share_threshold or a quality alert (the summary's `alerts` says which); 2: error."
    )
    command.add_params(parser)
    parser.add_argument("--log", help="request log, rotated files included (default: where the service logs)")
    parser.add_argument(
        "--reference", default="data/split/train.parquet", help="reference rows (default: %(default)s)"
    )
    parser.add_argument(
        "--spec", default="models/champion/feature_spec.json", help="feature spec (default: %(default)s)"
    )
    parser.add_argument(
        "--workspace",
        default="reports/monitoring",
        help="the monitor's Evidently workspace, created when missing, then added to; not a pipeline "
        "output (default: %(default)s)",
    )
    parser.add_argument(
        "--pipeline-workspace",
        default="reports/workspace",
        help="the report stage's workspace, whose snapshots are copied in on every run; '' for none "
        "(default: %(default)s)",
    )
    parser.add_argument("--out", default="reports/monitor.html", help="HTML report (default: %(default)s)")
    parser.add_argument(
        "--outcomes",
        default=None,
        help="late labels: a .jsonl file of `ontime outcomes`, or a folder of them, joined with the "
        "log by key (default: none, drift only)",
    )
    parser.add_argument(
        "--card",
        default=None,
        help="the served champion's model card: its validation ROC AUC is the quality alert's "
        "reference; read with --outcomes only (default: the card of the model that served the "
        "log's newest entry, from the BentoML store; else models/champion/model_card.json)",
    )


def run(args: argparse.Namespace) -> int:
    """``main`` with the options of :func:`add_arguments`, each by its name; its result is the exit code."""
    return main(
        params_path=args.params,
        log_path=args.log,
        reference_path=args.reference,
        spec_path=args.spec,
        workspace_dir=args.workspace,
        out_html=args.out,
        pipeline_workspace_dir=args.pipeline_workspace or None,
        outcomes_path=args.outcomes,
        card_path=args.card,
    )


def log_quality(assessed: Quality) -> None:
    """One line for the verdict and one per day of the window."""
    q = assessed.summary
    log.log(
        logging.WARNING if assessed.verdict.alert else logging.INFO,
        "monitor: quality %s: %s (%d keyed prediction(s), %d labelled, %d without a key, %d duplicate(s), "
        "%d outcome(s) for keys never served)",
        q["status"],
        q["reason"],
        q["predictions"],
        q["labelled"],
        q["without_key"],
        q["duplicates"],
        q["unmatched_outcomes"],
    )
    for day in q["days"]:
        if day["day"] in q["window"]["days"]:
            log.info(
                "monitor: quality %s: %d labelled of %d, ROC AUC %s",
                day["day"],
                day["labelled"],
                day["predictions"],
                "n/a" if day["roc_auc"] is None else f"{day['roc_auc']:.4f}",
            )


def log_columns(summary: dict[str, Any], ignored: list[str]) -> None:
    """Say which features were drift-tested, which were not and why, and what the ids look like."""
    log.info("monitor: drift-tested %d feature(s): %s", len(summary["drift_tested"]), summary["drift_tested"])
    for column, reason in summary["skipped"].items():
        log.info("monitor: not drift-tested: %s (%s)", column, SKIP_REASONS[reason])
    if summary["all_null"]:
        log.warning(
            "monitor: %d feature(s) are null in every request (clients never send them?): %s",
            len(summary["all_null"]),
            summary["all_null"],
        )
    stuck = [c for c in summary["constant"] if c not in summary["skipped"]]
    if stuck:
        log.warning(
            "monitor: feature(s) %s have one value in every request but not in the reference (a stuck "
            "input?); they are drift-tested",
            stuck,
        )
    for column, stats in summary["identifiers"].items():
        log.info(
            "monitor: identifier %s: %d distinct, %s unseen in the reference, %.1f%% missing",
            column,
            stats["distinct"],
            "n/a" if stats["unseen_share"] is None else f"{100 * stats['unseen_share']:.1f}%",
            100 * stats["missing_share"],
        )
    if ignored:
        log.info("monitor: monitor.identifiers %s are not features of this model: ignored", ignored)
