"""The served model's quality once late labels arrive: the request log joined with outcomes by key.

``ontime outcomes`` (or the airline's feed) writes JSON Lines ``{"key", "scheduled", "label"}``; the
service logs every scored flight with the same ``key`` (params ``serve.key``). ``ontime monitor
--outcomes PATH`` (a ``.jsonl`` file, or a folder: every ``*.jsonl`` directly in it) joins them here:

- entries without a key (``serve.key`` empty when they were served) are counted and ignored;
- the same key scored twice (a client's retry, a second replay) counts once: its newest entry by
  ``ts`` (then by position in the log) is kept, the others are counted as ``duplicates``;
- outcomes for keys never served are counted (``unmatched_outcomes``), not an error; the same key
  with two labels (in one file or across files) is a DataError naming the key and the lines.

Each kept prediction belongs to a day: the local day (params ``featurize.timezone``, UTC when unset)
of the key's time part, the field of ``serve.key`` that is ``featurize.time_column`` (the scheduled
hour: a replay of 2013 served in 2026 counts for 2013). When the time column is not in ``serve.key``
(or a key's part is not a time), the local day of the entry's ``ts``, when it was served, is used.

Per day: predictions, labelled ones, the share still without a label, and on the labelled ones ROC
AUC, PR AUC (average precision), log loss, Brier score, the mean predicted probability against the
observed positive rate (calibration); the decision's positive rate is over all the day's predictions
(it needs no label). ROC AUC and PR AUC are null on a day with one class. Over the window (the newest
``monitor.quality.window_days`` days with labels) the same figures are pooled and judged against the
served champion's validation ROC AUC (its model card): fewer than ``min_labelled`` labelled rows gives
no verdict, a ROC AUC below ``reference - max_roc_auc_drop`` an alert (``ontime monitor`` exits 1).

Every (day, model version) with both classes also becomes an Evidently classification snapshot,
tagged ``classification``, ``served`` and ``quality``, stamped at the day's start, under an id from its
name (``workspace.snapshot_id``), so a second run replaces it instead of adding another.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from evidently.core.report import Snapshot
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from ontime.config.monitor import QualityConfig
from ontime.errors import DataError
from ontime.io import read_json
from ontime.reports.builders import classification
from ontime.reports.workspace import CLASSIFICATION, QUALITY, SERVED
from ontime.serving.requestlog import KEY_SEPARATOR

log = logging.getLogger(__name__)

KEY_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # requestlog.key_part's date-times
EXAMPLES = 3  # conflicting keys quoted in an error
PROBABILITY_CLIP = 1e-15  # log loss of a probability of exactly 0 or 1 stays finite (as evaluate)
Status = Literal["no labels", "too few labels", "one class", "ok", "alert"]


# ------------------------------------------------------------------------------------- inputs ---
@dataclass(frozen=True)
class Outcomes:
    """The labels of one or more outcome files: one row per key (``key``, ``label``)."""

    labels: pl.DataFrame
    files: list[str]
    lines: int  # outcome lines read (a key repeated with the same label counts each time)


def outcome_files(path: str | Path) -> list[Path]:
    """``path`` itself (a file) or the ``*.jsonl`` files directly in it (a folder), sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.glob("*.jsonl") if p.is_file())
        if not files:
            raise DataError(
                f"{path}: no *.jsonl outcome files in this folder; write some with `ontime outcomes`"
            )
        return files
    raise DataError(f"{path}: outcomes not found; write them with `ontime outcomes --from DAY --to DAY`")


def _outcome(where: str, line: bytes) -> tuple[str, int]:
    """``(key, label)`` of one outcome line; a DataError naming ``where`` (file:line) otherwise."""
    try:
        entry = json.loads(line)
    except ValueError:
        raise DataError(f'{where}: not JSON; an outcome line is {{"key": ..., "label": 0 or 1}}') from None
    key = entry.get("key") if isinstance(entry, dict) else None
    label = entry.get("label") if isinstance(entry, dict) else None
    if not isinstance(key, str) or not key:
        raise DataError(f"{where}: no `key` (a non-empty string, as the request log's); got {key!r}")
    if isinstance(label, bool) or label not in (0, 1):
        raise DataError(f"{where}: `label` must be 0 or 1, got {label!r} (key {key})")
    return key, int(label)


def read_outcomes(path: str | Path) -> Outcomes:
    """Every outcome of ``path`` (a file or a folder of ``*.jsonl``); the same key with two labels is
    a DataError naming the key and where each label is."""
    files = outcome_files(path)
    keys: list[str] = []
    labels: list[int] = []
    wheres: list[str] = []
    for file in files:
        with file.open("rb") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    key, label = _outcome(f"{file}:{number}", line)
                    keys.append(key)
                    labels.append(label)
                    wheres.append(f"{file}:{number}")
    if not keys:
        raise DataError(f"{path}: the outcome file(s) {[str(f) for f in files]} hold no outcome")
    table = pl.DataFrame(
        {"key": keys, "label": labels, "where": wheres},
        schema={"key": pl.String, "label": pl.Int8, "where": pl.String},
    )
    conflicts = (
        table.group_by("key", maintain_order=True)
        .agg(pl.col("label").n_unique().alias("labels"), pl.col("where"), pl.col("label").alias("values"))
        .filter(pl.col("labels") > 1)
    )
    if conflicts.height:
        shown = "; ".join(
            f"{k}: " + ", ".join(f"label {v} in {w}" for v, w in zip(values, where, strict=True))
            for k, where, values in conflicts.select("key", "where", "values").head(EXAMPLES).iter_rows()
        )
        raise DataError(
            f"{conflicts.height} key(s) have two different labels across the outcomes, e.g. {shown}; "
            "a flight has one outcome: remove the wrong file or line"
        )
    return Outcomes(
        labels=table.unique("key", keep="first", maintain_order=True).select("key", "label"),
        files=[str(f) for f in files],
        lines=table.height,
    )


@dataclass(frozen=True)
class Reference:
    """What the served champion scored on its validation rows (its model card)."""

    card: str
    champion: str
    roc_auc: float
    threshold: float
    part: str | None


def read_reference(card_path: str | Path) -> Reference:
    """The champion's validation ROC AUC and threshold from its ``model_card.json`` (select writes
    ``valid_metrics`` and ``threshold`` there)."""
    path = Path(card_path)
    if not path.is_file():
        raise DataError(
            f"{path}: model card not found; it holds the served champion's validation ROC AUC, the "
            "reference of the quality alert: `dvc pull` (or `dvc repro select`), or pass --card"
        )
    try:
        card = read_json(path)
        roc_auc, threshold = float(card["valid_metrics"]["roc_auc"]), float(card["threshold"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: no valid_metrics.roc_auc and threshold in this model card ({exc!r}); pass the "
            "champion's model_card.json (models/champion/model_card.json)"
        ) from exc
    if not (math.isfinite(roc_auc) and math.isfinite(threshold)):
        raise DataError(f"{path}: valid_metrics.roc_auc={roc_auc}, threshold={threshold}: not numbers")
    return Reference(
        card=str(path),
        champion=str(card.get("champion", "")),
        roc_auc=roc_auc,
        threshold=threshold,
        part=card.get("valid_part"),
    )


# --------------------------------------------------------------------------------------- join ---
@dataclass(frozen=True)
class Joined:
    """The served predictions with a key, one per key, with their day and label (null: none yet)."""

    rows: pl.DataFrame  # key, ts, model_version, probability, decision, day, label
    day_of: str  # where each row's day comes from: "key:<time column>" or "ts"
    timezone: str
    served: int  # entries read (with or without a key)
    unusable: int  # no time, or no probability in [0, 1] or decision 0/1: not a scored prediction
    without_key: int
    duplicates: int
    unmatched_outcomes: int
    outcome_keys: int


def day_expr(key_fields: list[str], time_column: str | None, timezone: str) -> tuple[pl.Expr, str]:
    """The local day of each entry: of the key's time part when ``time_column`` is one of
    ``key_fields`` (else, or when the part is not a time, of ``ts``); and which it is."""
    served_day = pl.col("ts").dt.convert_time_zone(timezone).dt.date()
    if time_column is None or time_column not in key_fields:
        return served_day, "ts"
    parts = pl.col("key").str.split(KEY_SEPARATOR)
    scheduled = (
        pl.when(parts.list.len() == len(key_fields))
        .then(parts.list.get(key_fields.index(time_column), null_on_oob=True))
        .str.strptime(pl.Datetime("us", "UTC"), KEY_TIME_FORMAT, strict=False)
    )
    return pl.coalesce(scheduled.dt.convert_time_zone(timezone).dt.date(), served_day), f"key:{time_column}"


def join(
    scored: pl.DataFrame,
    outcomes: Outcomes,
    *,
    key_fields: list[str],
    time_column: str | None,
    timezone: str | None,
) -> Joined:
    """Join the log's entries (``scored``: line, ts (UTC), key, model_version, probability, decision;
    in log order) with ``outcomes`` by key: one row per key, the newest by ``ts`` then line."""
    tz = timezone or "UTC"
    usable = scored.filter(
        pl.col("ts").is_not_null() & pl.col("probability").is_between(0, 1) & pl.col("decision").is_in([0, 1])
    )
    keyed = usable.filter(pl.col("key").is_not_null() & (pl.col("key") != ""))
    newest = keyed.sort(["ts", "line"]).unique("key", keep="last", maintain_order=True)
    day, day_of = day_expr(key_fields, time_column, tz)
    rows = (
        newest.with_columns(day.alias("day"))
        .join(outcomes.labels, on="key", how="left")
        .sort(["day", "ts", "line"])
        .drop("line")
    )
    served_keys = newest.select("key")
    unmatched = outcomes.labels.join(served_keys, on="key", how="anti").height
    return Joined(
        rows=rows,
        day_of=day_of,
        timezone=tz,
        served=scored.height,
        unusable=scored.height - usable.height,
        without_key=usable.height - keyed.height,
        duplicates=keyed.height - newest.height,
        unmatched_outcomes=unmatched,
        outcome_keys=outcomes.labels.height,
    )


# ------------------------------------------------------------------------------------ figures ---
def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """Figures of labelled predictions (unrounded): ROC AUC and PR AUC (null with one class), log
    loss, Brier, mean predicted probability, observed positive rate and their gap; all null for none."""
    names = ("roc_auc", "pr_auc", "log_loss", "brier", "mean_probability", "positive_rate", "calibration_gap")
    if len(y) == 0:
        return dict.fromkeys(names)
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    both = 0 < int(y.sum()) < len(y)
    mean, rate = float(p.mean()), float(y.mean())
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "log_loss": float(log_loss(y, np.clip(p, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP), labels=[0, 1])),
        "brier": float(brier_score_loss(y, p, pos_label=1)),
        "mean_probability": mean,
        "positive_rate": rate,
        "calibration_gap": mean - rate,
    }


def _figures(rows: pl.DataFrame) -> dict[str, Any]:
    """Counts and figures of a set of joined rows (the labelled ones score)."""
    labelled = rows.filter(pl.col("label").is_not_null())
    return {
        "predictions": rows.height,
        "labelled": labelled.height,
        "unlabelled_share": (rows.height - labelled.height) / rows.height if rows.height else None,
        "decision_rate": float(rows.get_column("decision").mean()) if rows.height else None,  # type: ignore[arg-type]
        **metrics(labelled.get_column("label").to_numpy(), labelled.get_column("probability").to_numpy()),
    }


@dataclass(frozen=True)
class Verdict:
    """The window's judgement: its status, whether it alerts, and why, in a sentence."""

    status: Status
    alert: bool
    reason: str


def judge(window: dict[str, Any], cfg: QualityConfig, reference: Reference, labelled_total: int) -> Verdict:
    """The window's figures against the floor ``reference.roc_auc - cfg.max_roc_auc_drop``."""
    floor = reference.roc_auc - cfg.max_roc_auc_drop
    if labelled_total == 0:
        return Verdict("no labels", False, "no served prediction has an outcome yet: nothing to judge")
    days = f"{window['from']}..{window['to']} ({len(window['days'])} day(s))"
    if window["labelled"] < cfg.min_labelled:
        return Verdict(
            "too few labels",
            False,
            f"{window['labelled']} labelled prediction(s) in the window {days}, fewer than "
            f"monitor.quality.min_labelled={cfg.min_labelled}: no verdict yet",
        )
    if window["roc_auc"] is None:
        return Verdict(
            "one class",
            False,
            f"every labelled prediction in the window {days} has label {int(window['positive_rate'])}: "
            "ROC AUC is undefined, no verdict",
        )
    against = (
        f"{floor:.4f} (the champion's validation ROC AUC {reference.roc_auc:.4f} - "
        f"monitor.quality.max_roc_auc_drop {cfg.max_roc_auc_drop}) over {window['labelled']} labelled "
        f"prediction(s) in {days}"
    )
    if window["roc_auc"] < floor:
        return Verdict("alert", True, f"ROC AUC {window['roc_auc']:.4f} is below {against}")
    return Verdict("ok", False, f"ROC AUC {window['roc_auc']:.4f} is at or above {against}")


@dataclass(frozen=True)
class Quality:
    """The served model's quality: per day, over the window, the verdict, as the summary's object."""

    joined: Joined
    summary: dict[str, Any]
    verdict: Verdict
    floor: float


def assess(joined: Joined, cfg: QualityConfig, reference: Reference, outcomes: Outcomes) -> Quality:
    """Per-day figures, the window's pooled figures and the verdict (see the module docstring)."""
    rows = joined.rows
    days = []
    for (day,), group in rows.group_by(["day"], maintain_order=True):
        days.append(
            {"day": day.isoformat(), "model_versions": sorted(group.get_column("model_version").unique()),
             **_figures(group)}
        )  # fmt: skip
    labelled_days = [d["day"] for d in days if d["labelled"]]
    chosen = labelled_days[-cfg.window_days :]
    in_window = rows.filter(pl.col("day").cast(pl.String).is_in(chosen))
    window = {
        "days": chosen,
        "from": chosen[0] if chosen else None,
        "to": chosen[-1] if chosen else None,
        "window_days": cfg.window_days,
        **_figures(in_window),
    }
    labelled = int(rows.get_column("label").is_not_null().sum())
    verdict = judge(window, cfg, reference, labelled)
    floor = reference.roc_auc - cfg.max_roc_auc_drop
    summary = {
        "status": verdict.status,
        "alert": verdict.alert,
        "reason": verdict.reason,
        "outcomes": outcomes.files,
        "outcome_lines": outcomes.lines,
        "outcome_keys": joined.outcome_keys,
        "unmatched_outcomes": joined.unmatched_outcomes,
        "entries": joined.served,
        "unusable": joined.unusable,
        "without_key": joined.without_key,
        "duplicates": joined.duplicates,
        "predictions": rows.height,
        "labelled": labelled,
        "unlabelled_share": (rows.height - labelled) / rows.height if rows.height else None,
        "day_of": joined.day_of,
        "timezone": joined.timezone,
        "reference": {
            "card": reference.card,
            "champion": reference.champion,
            "part": reference.part,
            "roc_auc": reference.roc_auc,
        },
        "max_roc_auc_drop": cfg.max_roc_auc_drop,
        "min_labelled": cfg.min_labelled,
        "floor": floor,
        "window": window,
        "days": days,
    }
    return Quality(joined=joined, summary=summary, verdict=verdict, floor=floor)


# ---------------------------------------------------------------------------------- evidently ---
def snapshot_name(day: dt.date, model_version: str) -> str:
    """The snapshot of one day and model version: its name is its id (``workspace.snapshot_id``)."""
    return f"quality_served_{day.isoformat()}_{model_version}"


def snapshots(quality: Quality, reference: Reference) -> tuple[list[Snapshot], list[str]]:
    """One Evidently classification snapshot per (day, model version) with labels of both classes,
    and the names of those left out (one class: Evidently 0.7's classification metrics fail)."""
    labelled = quality.joined.rows.filter(pl.col("label").is_not_null())
    made: list[Snapshot] = []
    skipped: list[str] = []
    for (day, version), group in labelled.group_by(["day", "model_version"], maintain_order=True):
        name = snapshot_name(day, version)
        if group.get_column("label").n_unique() < 2:
            skipped.append(name)
            continue
        served = quality.joined.rows.filter((pl.col("day") == day) & (pl.col("model_version") == version))
        try:
            snapshot = _snapshot(quality, reference, name, day, version, group, served.height)
        except (ValueError, KeyError) as exc:  # Evidently's refusals: never let them read as an alert
            raise DataError(
                f"Evidently could not compute the served quality of {version} on {day} "
                f"({group.height} labelled prediction(s)): {exc!r}"
            ) from exc
        made.append(snapshot)
    return made, skipped


def _snapshot(
    quality: Quality,
    reference: Reference,
    name: str,
    day: dt.date,
    version: str,
    group: pl.DataFrame,
    predictions: int,
) -> Snapshot:
    """One day's classification snapshot of one model version (``group``: its labelled rows)."""
    tz = quality.joined.timezone
    snapshot, _ = classification(
        group.select("label", "probability"),
        target="label",
        champion="probability",
        threshold=reference.threshold,
        min_roc_auc=quality.floor,
        name=name,
        timestamp=dt.datetime.combine(day, dt.time()),
        tags=[CLASSIFICATION, SERVED, QUALITY],
        metadata={
            "title": f"Served quality: {version} on {day} ({tz}), {group.height:,} labelled of "
            f"{predictions:,} prediction(s); floor {quality.floor:.4f} = champion "
            f"{reference.champion} validation ROC AUC {reference.roc_auc:.4f} - max drop",
            "day": day.isoformat(),
            "model_version": str(version),
            "labelled": str(group.height),
            "predictions": str(predictions),
        },
    )
    return snapshot
