"""``ontime gate``: a challenger against the serving champion on the same labelled rows.

The champion is the model a registry stage serves (``ontime registry``: the version the stage's
newest assignment names); the challenger is this workspace's packaged model (``models/package.json``,
written by ``dvc repro``). Both score the same labelled flights of the local days ``--from`` ..
``--to`` (the feature table of this data version: offline features are the service's online ones),
which neither trained on: each model's card names the parts it trained on and their windows, and a
window that starts on or before the later of their last training days is refused. The difference of
params ``gate.metric`` (challenger - champion) gets a paired bootstrap interval (the same resampled
rows for both); the challenger passes when the difference is at least ``gate.margin`` and the
interval's lower end is above 0. ``--promote`` then registers HEAD (which must hold the challenger's
``models/package.json``) and assigns it to the stage, the gate's figures kept in the assignment's
tag (``ontime registry history``); a challenger that does not pass changes nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from ontime import command
from ontime.candidates import CANDIDATE_FILE
from ontime.config import load_params, section
from ontime.config import seed as read_seed
from ontime.config.clean import LABEL
from ontime.config.featurize import FeaturizeConfig
from ontime.config.gate import GateConfig
from ontime.errors import DataError
from ontime.io import atomic_outputs, read_json, write_json
from ontime.serving.online import Scorer

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------- the metric ---
def score(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    """``metric`` of probabilities ``p`` for labels ``y``, higher is better (losses negated)."""
    if metric == "roc_auc":
        return float(roc_auc_score(y, p))
    if metric == "pr_auc":
        return float(average_precision_score(y, p))
    if metric == "neg_log_loss":
        return -float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))
    if metric == "neg_brier":
        return -float(np.mean((p - y) ** 2))
    raise ValueError(f"unknown metric {metric!r}")


@dataclass(frozen=True)
class Comparison:
    """The challenger against the champion on the same rows."""

    metric: str
    rows: int
    positive_rate: float
    champion: float
    challenger: float
    difference: float  # challenger - champion
    low: float  # the paired bootstrap interval of the difference
    high: float
    confidence: float
    margin: float
    resamples: int
    passed: bool
    reason: str


def compare(
    y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, cfg: GateConfig, seed: int
) -> Comparison:
    """Both models' ``cfg.metric`` on the same rows, and a paired bootstrap interval of the
    difference: each resample draws rows with replacement and scores both models on those rows
    (resamples holding one class only are drawn again). Passes when the difference is at least
    ``cfg.margin`` and the interval's lower end is above 0."""
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    if n < cfg.min_rows:
        raise DataError(
            f"{n} labelled rows in the window, fewer than gate.min_rows={cfg.min_rows}: too few to "
            "decide; widen the window (more days of labels) or lower gate.min_rows"
        )
    if len(np.unique(y)) < 2:
        raise DataError(f"the window's {n} rows have one label only ({int(y[0])}); widen the window")
    a, b = score(cfg.metric, y, champion), score(cfg.metric, y, challenger)
    rng = np.random.default_rng(seed)
    diffs: list[float] = []
    while len(diffs) < cfg.bootstrap:
        idx = rng.integers(0, n, n)
        yy = y[idx]
        if yy.min() == yy.max():
            continue
        diffs.append(score(cfg.metric, yy, challenger[idx]) - score(cfg.metric, yy, champion[idx]))
    tail = (1 - cfg.confidence) / 2
    low, high = (float(q) for q in np.quantile(np.asarray(diffs), [tail, 1 - tail]))
    diff = b - a
    if diff < cfg.margin:
        reason = f"the challenger is not better by the margin: {diff:+.4f} < {cfg.margin} (gate.margin)"
    elif low <= 0:
        reason = (
            f"the challenger is better by {diff:+.4f}, but the {cfg.confidence:.0%} interval "
            f"[{low:+.4f}, {high:+.4f}] reaches 0: not surely better on {n} rows"
        )
    else:
        reason = (
            f"the challenger is better by {diff:+.4f} (>= {cfg.margin}), {cfg.confidence:.0%} interval "
            f"[{low:+.4f}, {high:+.4f}] above 0"
        )
    return Comparison(
        cfg.metric, n, round(float(y.mean()), 6), round(a, 6), round(b, 6), round(diff, 6),
        round(low, 6), round(high, 6), cfg.confidence, cfg.margin, cfg.bootstrap,
        diff >= cfg.margin and low > 0, reason,
    )  # fmt: skip


# -------------------------------------------------------------------------------- the models ---
@dataclass(frozen=True)
class Model:
    """A packaged model: its tag, scorer, and the last local day any of its training rows fall on."""

    tag: str
    scorer: Scorer
    trained_until: dt.date
    trained_on: list[str]


def bundle(tag: str) -> Path:
    """The folder of a packaged model: a bundle folder, or a pinned tag in the BentoML store."""
    if Path(tag).is_dir():
        return Path(tag)
    import bentoml
    from bentoml.exceptions import BentoMLException

    try:
        return Path(bentoml.models.get(tag).path)
    except BentoMLException as exc:
        raise DataError(
            f"model {tag!r} is not in the BentoML store ($BENTOML_HOME: {exc}); re-create it by checking "
            "out its commit and running `dvc pull && dvc repro package` (tags are content hashes)"
        ) from None


def trained_until(folder: Path) -> tuple[dt.date, list[str]]:
    """The last local day a packaged model's training rows fall on, and the parts it trained on:
    those its candidate.json names (``trained_on``; without it, every part but test, the most it
    may have seen), their windows from its model card."""
    card = read_json(folder / "model_card.json")
    info = read_json(folder / CANDIDATE_FILE)
    windows: dict[str, Any] = card.get("windows") or {}
    if not windows:
        raise DataError(f"{folder}: its model card has no split windows; package it again with this version")
    parts = list(info.get("trained_on") or [p for p in windows if p != "test"])
    known = [p for p in parts if p in windows]
    if not known:
        raise DataError(f"{folder}: trained on {parts}, none of which its model card has a window for")
    return max(dt.datetime.fromisoformat(windows[p]["last"]).date() for p in known), parts


def load_model(tag: str) -> Model:
    folder = bundle(tag)
    last, parts = trained_until(folder)
    return Model(tag, Scorer(folder), last, parts)


def check_window(first: dt.date, models: dict[str, Model]) -> None:
    """Refuse a window that starts on or before a day any of ``models`` (who -> model) trained on."""
    latest = max(m.trained_until for m in models.values())
    for who, m in models.items():
        if first <= m.trained_until:
            raise DataError(
                f"the {who} {m.tag} trained on rows up to {m.trained_until} ({', '.join(m.trained_on)}): "
                f"a gate window from {first} would score it on rows it learned; start the window after "
                f"{latest}"
            )


def window_rows(features: Path, feat: FeaturizeConfig, first: dt.date, last: dt.date) -> pl.DataFrame:
    if not features.is_file():
        raise DataError(f"{features}: not found; run `dvc repro featurize` (or `dvc pull`)")
    df = pl.read_parquet(features)
    time_col = feat.time_column
    if time_col is None or time_col not in df.columns or LABEL not in df.columns:
        raise DataError(
            f"{features}: needs the time column {time_col!r} and {LABEL!r}; is it a feature table?"
        )
    when = pl.col(time_col)
    if df.schema[time_col].time_zone is None:  # type: ignore[attr-defined]
        when = when.dt.replace_time_zone("UTC")
    rows = df.filter(when.dt.convert_time_zone(feat.timezone or "UTC").dt.date().is_between(first, last))
    return rows.filter(pl.col(LABEL).is_not_null())


def predictions(model: Model, rows: pl.DataFrame, where: str) -> np.ndarray:
    missing = [c for c in model.scorer.spec.columns if c not in rows.columns]
    if missing:
        raise DataError(
            f"{model.tag} needs features {missing}, which {where} lacks: it was trained on another "
            "feature set; compare models of the same features"
        )
    return np.asarray(model.scorer.candidate.predict_proba(rows.select(model.scorer.spec.columns)))


def main(
    params_path: str,
    start: str,
    end: str,
    *,
    stage: str,
    challenger: str,
    features: str,
    out: str,
    promote: bool,
    reason: str,
) -> int:
    """Compare, write ``out``, print the decision; promote with ``promote`` when it passes.
    0: passes, 1: does not (nothing changes)."""
    from ontime import registry
    from ontime.live.outcomes import local_days

    first, last = local_days(start, end)
    params = load_params(params_path)
    cfg = section(params, "gate", GateConfig, source=params_path)
    feat = section(params, "featurize", FeaturizeConfig, source=params_path)
    serving = registry.current(stage)
    if not Path(challenger).is_file():
        raise DataError(f"{challenger}: not found; run `dvc repro` to train and package the challenger")
    package = read_json(challenger)
    champ_tag, chal_tag = str(serving.package["model_tag"]), str(package["model_tag"])
    if champ_tag == chal_tag:
        raise DataError(
            f"the challenger ({chal_tag}) is the model {stage} serves ({registry.ARTIFACT}@"
            f"{serving.version}); train a new one first (change the data or params, then `dvc repro`)"
        )
    if promote:  # before any work: a promotion registers HEAD, which must be the challenger
        head = registry.package_at(registry.git("rev-parse", "HEAD"))
        if head.get("model_tag") != chal_tag:
            raise DataError(
                f"HEAD's {registry.PACKAGE_FILE} names {head.get('model_tag')}, not the challenger "
                f"{chal_tag}: commit the challenger (git add dvc.lock {registry.PACKAGE_FILE} ...; git "
                "commit) before promoting it"
            )
    champ, chal = load_model(champ_tag), load_model(chal_tag)
    check_window(first, {"champion": champ, "challenger": chal})
    rows = window_rows(Path(features), feat, first, last)
    y = rows.get_column(LABEL).to_numpy()
    result = compare(
        y, predictions(champ, rows, features), predictions(chal, rows, features), cfg, read_seed(params)
    )
    decision = {
        "window": {"from": first.isoformat(), "to": last.isoformat(), "timezone": feat.timezone or "UTC"},
        "stage": stage,
        "champion": {
            "version": serving.version,
            "model_tag": champ_tag,
            "trained_until": str(champ.trained_until),
        },
        "challenger": {"model_tag": chal_tag, "trained_until": str(chal.trained_until)},
        **asdict(result),
        "promoted": None,
    }
    if result.passed and promote:
        why = (
            f"gate {first}..{last}: {cfg.metric} {result.challenger:.4f} vs {result.champion:.4f} "
            f"({registry.ARTIFACT}@{serving.version}) on {result.rows} rows, {result.reason}"
        )
        version = registry.promote("HEAD", stage=stage, reason="\n".join(filter(None, [reason.strip(), why])))
        decision["promoted"] = version.version
    with atomic_outputs(out) as (tmp,):
        write_json(tmp, decision)
    print(json.dumps(decision, indent=2))
    verdict = "PASSES" if result.passed else "does NOT pass"
    log.log(
        logging.INFO if result.passed else logging.WARNING,
        "gate: challenger %s %s against %s (%s@%s) on %d rows of %s..%s: %s %.4f vs %.4f; %s%s",
        chal_tag, verdict, champ_tag, registry.ARTIFACT, serving.version, result.rows, first, last,
        cfg.metric, result.challenger, result.champion, result.reason,
        f"; promoted as {registry.ARTIFACT}@{decision['promoted']} to {stage}" if decision["promoted"] else
        ("" if result.passed else "; nothing promoted"),
    )  # fmt: skip
    return 0 if result.passed else 1


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Challenger vs serving champion on labelled flights."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime gate``: its description and options."""
    parser.description = (
        "Compare the challenger (this workspace's packaged model, models/package.json) with the "
        "model a registry stage serves, on the labelled flights of local days FROM..TO that "
        "neither trained on: the same rows, a paired bootstrap interval of the difference (params "
        "`gate`). With --promote, a challenger that passes is registered and assigned to the "
        "stage. Exit 0: the challenger passes (promoted with --promote); 1: it does not (nothing "
        "changes); 2: error."
    )
    command.add_params(parser)
    parser.add_argument("--from", dest="start", required=True, help="first local day, YYYY-MM-DD")
    parser.add_argument("--to", dest="end", required=True, help="last local day, YYYY-MM-DD (inclusive)")
    parser.add_argument("--stage", default="prod", help="the serving champion's stage (default: %(default)s)")
    parser.add_argument(
        "--challenger",
        default="models/package.json",
        help="package.json naming the challenger's model (default: %(default)s)",
    )
    parser.add_argument(
        "--features",
        default="data/features/features.parquet",
        help="feature table with labels (default: %(default)s)",
    )
    parser.add_argument(
        "--out", default="reports/gate.json", help="the decision, as JSON (default: %(default)s)"
    )
    parser.add_argument("--promote", action="store_true", help="promote the challenger (HEAD) when it passes")
    parser.add_argument("--reason", default="", help="why, kept with the promotion (`registry history`)")


def run(args: argparse.Namespace) -> int:
    """``main`` with the options of :func:`add_arguments`, each by its name; its result is the exit code."""
    return main(
        params_path=args.params,
        start=args.start,
        end=args.end,
        stage=args.stage,
        challenger=args.challenger,
        features=args.features,
        out=args.out,
        promote=args.promote,
        reason=args.reason,
    )
