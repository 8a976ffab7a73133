"""Honest lineage at HEAD: every committed stage of dvc.yaml and studies/dvc.yaml ran with the code and
params committed beside it.

``dvc status`` in this checkout lists what changed since each stage's lock entry. Outputs and data
deps (the pipeline's products, which a clean clone lacks or holds only in part: ``dvc pull`` or
``dvc repro`` brings them) say nothing about the lock. A tracked file (code, ``conf/``,
``bentofile.yaml``) or a param that differs from what the lock recorded means the committed lock was
written by other code: the README's figures and the model card's lineage would describe a run that
this commit cannot reproduce. The fix is to run the stage and commit its lock with the code.
"""

from __future__ import annotations

import json
import subprocess

from tests.conftest import REPO, run


def tracked() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    return set(out.stdout.splitlines())


def stale(status: dict[str, list], files: set[str]) -> dict[str, list[str]]:
    """Per stage, the committed deps (tracked files, params) that differ from its lock entry."""
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


def test_every_committed_stage_ran_with_the_committed_code_and_params() -> None:
    proc = run(["dvc", "status", "--json"], REPO)
    changed = stale(json.loads(proc.stdout or "{}"), tracked())
    assert not changed, (
        "these stages' locks were written by other code or params than this commit holds; run them "
        "(dvc repro, dvc repro studies/dvc.yaml) and commit dvc.lock and studies/dvc.lock with the code:\n"
        + "\n".join(f"  {stage}: {', '.join(deps)}" for stage, deps in sorted(changed.items()))
    )


def test_the_check_sees_a_changed_code_dep_and_a_param() -> None:
    status = {
        "train": [{"changed deps": {"src/ontime/cli.py": "modified", "data/split": "deleted"}}],
        "select": [{"changed deps": {"params.yaml": {"select.folds": "modified"}}}],
        "fold@3": ["changed command"],
        "report": [{"changed deps": {"data/predictions/test.parquet": "deleted", "data/folds": "modified"}},
                   {"changed outs": {"reports/evidently": "not in cache"}}],
    }  # fmt: skip
    assert stale(status, {"src/ontime/cli.py"}) == {
        "train": ["src/ontime/cli.py modified"],
        "select": ["params.yaml:select.folds modified"],
        "fold@3": ["changed command"],
    }
