"""Honest lineage at HEAD: did every committed stage of dvc.yaml and studies/dvc.yaml run with the
code and params committed beside it?

``dvc status --json`` lists what changed since each stage's lock entry. Outputs and data deps are
the pipeline's products (a clean clone lacks them or holds them in part; ``dvc pull`` or
``dvc repro`` brings them) and say nothing about the lock. A tracked file (code, ``conf/``,
``bentofile.yaml``), a param or a command that differs from what the lock recorded means the
committed lock was written by other code: the README's figures and the model card's lineage would
describe a run this commit cannot reproduce. The fix: run the stage, commit its lock with the code.

    python dev/lineage.py            # exit 1 and list the stale stages

tests/pipeline/test_lineage.py runs the same check in `make check`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tracked(repo: Path = REPO) -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True)
    return set(out.stdout.splitlines())


def stale(status: dict[str, list], files: set[str]) -> dict[str, list[str]]:
    """Per stage, the committed deps (tracked files, params) and commands that differ from its lock."""
    out: dict[str, list[str]] = {}
    for stage, entries in status.items():
        found = []
        for entry in entries:
            if isinstance(entry, str):  # "always changed", "changed command"
                found.append(entry)
                continue
            for path, state in entry.get("changed deps", {}).items():
                if isinstance(state, dict):  # params: {key: "modified" | "new" | "deleted"}
                    found += [f"{path}:{key} {how}" for key, how in state.items()]
                elif path in files:  # tracked: code, conf/, bentofile.yaml (data deps are products)
                    found.append(f"{path} {state}")
        if found:
            out[stage] = found
    return out


def main(repo: Path = REPO) -> int:
    proc = subprocess.run(["dvc", "status", "--json"], cwd=repo, capture_output=True, text=True, check=True)
    changed = stale(json.loads(proc.stdout or "{}"), tracked(repo))
    for stage, found in sorted(changed.items()):
        print(f"{stage}: {', '.join(found)}", file=sys.stderr)
    if changed:
        print(
            "these stages' locks were written by other code or params than this commit holds; run them "
            "(dvc repro, dvc repro studies/dvc.yaml) and commit dvc.lock and studies/dvc.lock with the code",
            file=sys.stderr,
        )
    return 1 if changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
