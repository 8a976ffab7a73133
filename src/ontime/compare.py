"""``ontime compare``: which experiment is best, in a terminal.

``dvc exp show`` lists every param and metric of every stage (hundreds of columns). This reads the
same data (``dvc exp show --json``) and prints one row per experiment: its champion, the champion's
validation and test figure, and each candidate's test figure, sorted by the champion's validation
figure (the one selection uses; test is shown, never used to rank unless asked). It fits 120
columns for the default seven candidates.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import textwrap
from dataclasses import dataclass
from typing import Any

from ontime.errors import OntimeError

EVALUATE = "metrics/evaluate.json"
SELECT = "metrics/select.json"
METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "f1", "accuracy")
LOWER_IS_BETTER = {"log_loss", "brier"}


@dataclass(frozen=True)
class Row:
    name: str
    champion: str | None
    valid: float | None  # the champion's validation figure
    test: float | None  # the champion's test figure
    candidates: dict[str, float]  # candidate -> test figure


def _metrics(data: dict[str, Any] | None, path: str) -> dict[str, Any]:
    return (((data or {}).get("metrics") or {}).get(path) or {}).get("data") or {}


def _row(name: str, data: dict[str, Any] | None, metric: str) -> Row | None:
    evaluation = _metrics(data, EVALUATE)
    if not evaluation:
        return None  # a revision before any evaluation, or a failed/queued experiment
    chosen = _metrics(data, SELECT).get("champion")
    candidates = {
        c: float(block["test"][metric])
        for c, block in sorted(evaluation.items())
        if isinstance(block, dict) and metric in (block.get("test") or {})
    }
    block = (evaluation.get(str(chosen)) if chosen is not None else None) or {}
    valid = (block.get("valid") or {}).get(metric)
    test = (block.get("test") or {}).get(metric)
    return Row(
        name=name,
        champion=chosen,
        valid=None if valid is None else float(valid),
        test=None if test is None else float(test),
        candidates=candidates,
    )


def rows_from(shown: list[dict[str, Any]], metric: str) -> list[Row]:
    """Rows of ``dvc exp show --json``: the workspace, each commit (by branch name or short sha) and
    each experiment (by name). Revisions without evaluation metrics are left out."""
    rows: list[Row] = []
    for commit in shown:
        rev = str(commit.get("rev") or "")
        name = commit.get("name") or ("workspace" if rev == "workspace" else rev[:7])
        row = _row(str(name), commit.get("data"), metric)
        if row is not None:
            rows.append(row)
        for group in commit.get("experiments") or []:
            for exp in group.get("revs") or []:
                label = exp.get("name") or str(exp.get("rev") or "")[:7]
                row = _row(f"  {label}", exp.get("data"), metric)
                if row is not None:
                    rows.append(row)
    return rows


def short(name: str, limit: int = 9) -> str:
    """``lgbm_train`` -> ``lgbm_t``: a long ``prefix_rest`` name keeps the prefix and one letter."""
    if len(name) <= limit or "_" not in name:
        return name[: max(limit, 1)] if len(name) > limit else name
    head, _, rest = name.partition("_")
    return f"{head[: limit - 2]}_{rest[:1]}"


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def table(rows: list[Row], metric: str, *, sort: str = "valid") -> str:
    """The comparison as fixed-width text, best first (by the champion's ``sort`` figure)."""
    if not rows:
        return "no experiment has evaluation metrics yet: run `dvc repro` or `dvc exp run`"
    reverse = metric not in LOWER_IS_BETTER

    def key(r: Row) -> float:
        value = r.valid if sort == "valid" else r.test
        missing = -math.inf if reverse else math.inf
        return missing if value is None else value

    ordered = sorted(rows, key=key, reverse=reverse)
    candidates = sorted({c for r in rows for c in r.candidates})
    names = {c: short(c) for c in candidates}
    if len(set(names.values())) < len(names):  # an abbreviation collides: full names
        names = {c: c for c in candidates}
    name_w = max(10, *(len(r.name) for r in rows))
    champ_w = max(8, *(len(names.get(r.champion or "", r.champion or "-")) for r in rows))
    cols = [max(6, len(names[c])) for c in candidates]
    header = f"{'experiment':<{name_w}}  {'champion':<{champ_w}}  {'valid':>6} {'test':>6} | " + " ".join(
        f"{names[c]:>{w}}" for c, w in zip(candidates, cols, strict=True)
    )
    lines = [header, "-" * len(header)]
    for r in ordered:
        champ = names.get(r.champion or "", r.champion or "-")
        lines.append(
            f"{r.name:<{name_w}}  {champ:<{champ_w}}  {_fmt(r.valid):>6} {_fmt(r.test):>6} | "
            + " ".join(f"{_fmt(r.candidates.get(c)):>{w}}" for c, w in zip(candidates, cols, strict=True))
        )
    better = "higher" if reverse else "lower"
    notes = (
        f"{metric} ({better} is better): the champion's validation (selection) and test figure, then "
        f"each candidate's test figure; sorted by {sort}."
    )
    abbreviated = [f"{v}={c}" for c, v in names.items() if v != c]
    if abbreviated:
        notes += " " + "; ".join(abbreviated) + "."
    lines.extend(textwrap.wrap(notes, width=min(len(header), 100)))
    return "\n".join(lines)


def exp_show(all_commits: bool) -> list[dict[str, Any]]:
    args = ["dvc", "exp", "show", "--json", *(["-A"] if all_commits else [])]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise OntimeError("dvc is not installed in this environment; run `make install`") from exc
    if proc.returncode != 0:
        raise OntimeError(f"`{' '.join(args)}` failed: {proc.stderr.strip().splitlines()[-1:]}")
    try:
        shown = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise OntimeError(f"`{' '.join(args)}` did not print JSON ({exc})") from exc
    if not isinstance(shown, list):
        raise OntimeError(f"`{' '.join(args)}`: unexpected output; upgrade dvc (pyproject pins it)")
    return shown


def main(metric: str = "roc_auc", sort: str = "valid", all_commits: bool = False) -> None:
    print(table(rows_from(exp_show(all_commits), metric), metric, sort=sort))


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Which experiment is best (from `dvc exp show --json`)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime compare``: its description and options."""
    parser.description = (
        "Which experiment is best: one row per experiment (champion, its validation and test "
        "figure, each candidate's test figure), sorted; reads `dvc exp show --json`"
    )
    parser.add_argument(
        "--metric",
        choices=("roc_auc", "pr_auc", "log_loss", "brier", "f1", "accuracy"),
        default="roc_auc",
        help="the figure shown (default: %(default)s)",
    )
    parser.add_argument(
        "--sort",
        choices=("valid", "test"),
        default="valid",
        help="rank by the champion's (default: %(default)s)",
    )
    parser.add_argument(
        "-A", "--all-commits", action="store_true", help="every commit, not only HEAD and its experiments"
    )


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(metric=args.metric, sort=args.sort, all_commits=args.all_commits)
