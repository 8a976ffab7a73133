"""Lineage: what a model was made from, read from ``dvc.lock`` (what DVC recorded), never guessed.

The model card (select) and the packaged model (package) carry it: the md5 of the source data and
of every part of the split, the params each upstream stage ran with, the code each ran, the git
commit and the DVC experiment name.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml


def md5(path: Path) -> str:
    """The hash DVC records for a file (md5 of its bytes)."""
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(root: Path, files: Iterable[Path]) -> str:
    """sha256 over the relative paths and bytes of ``files`` (under ``root``), in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def git_commit() -> str | None:
    """HEAD of the repository in the working directory (the baseline under ``dvc exp run``)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def provenance() -> dict[str, Any]:
    """The git commit and, under ``dvc exp run``, the experiment's name and baseline."""
    return {
        "commit": os.environ.get("DVC_EXP_BASELINE_REV") or git_commit(),
        "experiment": os.environ.get("DVC_EXP_NAME"),
    }


def _entries(items: list[dict[str, Any]] | None) -> dict[str, str]:
    return {e["path"]: e.get("md5", "") for e in items or []}


def _ancestors(dvc_yaml: dict[str, Any], stage: str) -> list[str]:
    """Stages whose outputs ``stage`` depends on, transitively, in dvc.yaml order."""
    stages: dict[str, Any] = dvc_yaml.get("stages", {})

    def outs(name: str) -> list[str]:
        paths = []
        for key in ("outs", "metrics", "plots"):
            for out in stages[name].get(key) or []:
                paths.append(next(iter(out)) if isinstance(out, dict) else str(out))
        return paths

    def feeds(dep: str, out: str) -> bool:
        return dep == out or dep.startswith(out.rstrip("/") + "/") or out.startswith(dep.rstrip("/") + "/")

    found: set[str] = set()
    todo = [stage]
    while todo:
        deps = [str(d) for d in stages[todo.pop()].get("deps") or []]
        for name in stages:
            if name not in found and any(feeds(d, o) for d in deps for o in outs(name)):
                found.add(name)
                todo.append(name)
    return [name for name in stages if name in found]


def upstream(stage: str, *, check: dict[str, str], root: Path = Path(".")) -> dict[str, Any] | None:
    """What ``dvc.lock`` records for every stage upstream of ``stage``: params, deps and outs (md5).

    ``check`` maps input paths of ``stage`` to the md5 of the files it actually read; when the lock
    disagrees (the stage was run by hand, outside ``dvc repro``), the lock does not describe these
    inputs and the answer is None.
    """
    lock_path, yaml_path = root / "dvc.lock", root / "dvc.yaml"
    if not lock_path.is_file() or not yaml_path.is_file():
        return None
    lock = (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {})
    names = _ancestors(yaml.safe_load(yaml_path.read_text()) or {}, stage)
    if any(n not in lock for n in names):
        return None
    recorded = {p: h for n in names for p, h in _entries(lock[n].get("outs")).items()}
    if any(recorded.get(path) != digest for path, digest in check.items()):
        return None
    return {
        n: {
            "params": (lock[n].get("params") or {}).get("params.yaml", {}),
            "deps": _entries(lock[n].get("deps")),
            "outs": _entries(lock[n].get("outs")),
        }
        for n in names
    }


def stage_params(lineage: dict[str, Any]) -> dict[str, Any]:
    """The params every upstream stage ran with, merged into one params tree (as in params.yaml)."""
    merged: dict[str, Any] = {}

    def merge(into: dict[str, Any], key: str, value: Any) -> None:
        if "." in key:
            head, rest = key.split(".", 1)
            merge(into.setdefault(head, {}), rest, value)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            for k, v in value.items():
                merge(into[key], k, v)
        else:
            into[key] = value

    for entry in lineage.values():
        for key, value in entry["params"].items():
            merge(merged, key, value)
    return merged
