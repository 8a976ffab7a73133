"""Build the shared smoke pipeline once per test run, for every worker (tests/conftest.py).

The test session's controller starts this module as a background process when the pipeline lane is
selected (``python -m tests.smoke_build ROOT``), so that the whole smoke graph runs while the
workers take the unit and component tests; a worker's ``smoke_repo`` fixture waits for ``ROOT/ready``
(or ``ROOT/failed``, which holds the error). After the first build it makes a second one from nothing
in a fresh clone with its own BentoML store, for the byte-identity test (``ROOT/rebuild-ready``).

Layout under ROOT: ``origin/`` (the repo, results committed), ``remote/`` (a local DVC remote,
verify on, run cache pushed), ``bentoml/`` (the store package wrote to), ``rebuild/`` +
``bentoml-rebuild/`` (the second build), ``smoke.json`` (what the fixture needs), ``build.log``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import yaml

from tests.conftest import SMOKE_GRAPH, copy_repo, env

READY, FAILED, REBUILT = "ready", "failed", "rebuild-ready"


def _sh(args: list[str], cwd: Path, environ: dict[str, str]) -> str:
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=environ, capture_output=True, text=True)
    print(f"{time.perf_counter() - t0:7.1f} s  {' '.join(args)}", flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def build(root: Path) -> dict[str, str]:
    """The whole smoke graph in a fresh git+DVC copy of this repository; results committed and
    pushed (run cache included) to a local remote with verify on."""
    origin = copy_repo(root / "origin")
    environ = {**env(), "BENTOML_HOME": str(root / "bentoml")}
    _sh(["dvc", "remote", "add", "-d", "storage", str(root / "remote")], origin, environ)
    _sh(["dvc", "remote", "modify", "storage", "verify", "true"], origin, environ)
    _sh(["ontime", "params", *SMOKE_GRAPH], origin, environ)
    _sh(["git", "commit", "-qam", "smoke params, local remote"], origin, environ)
    first = _sh(["git", "rev-parse", "HEAD"], origin, environ).strip()
    out = _sh(["dvc", "repro"], origin, environ)
    params = yaml.safe_load((origin / "params.yaml").read_text())
    stages = [
        name
        for key, stage in yaml.safe_load((origin / "dvc.yaml").read_text())["stages"].items()
        for name in ([f"{key}@{k}" for k in params["select"]["folds"]] if "foreach" in stage else [key])
    ]  # a foreach stage (fold) runs as fold@1, fold@2, ...
    missing = [stage for stage in stages if f"Running stage '{stage}'" not in out]
    if missing:
        raise RuntimeError(f"`dvc repro` did not run {missing}:\n{out}")
    if "studies/dvc.yaml" in out:
        raise RuntimeError(f"a plain `dvc repro` must not run the studies:\n{out}")
    _sh(["git", "add", "-A"], origin, environ)
    _sh(["git", "commit", "-qm", "results"], origin, environ)
    _sh(["dvc", "push", "--run-cache"], origin, environ)
    return {"origin": str(origin), "remote": str(root / "remote"), "first_commit": first,
            "bentoml_home": environ["BENTOML_HOME"]}  # fmt: skip


def rebuild(root: Path, info: dict[str, str]) -> str:
    """A second run of the whole graph from nothing: a fresh clone of the params commit, its own
    BentoML store and process; returns `dvc repro`'s output (the test checks which stages ran)."""
    clone = root / "rebuild"
    environ = {**env(), "BENTOML_HOME": str(root / "bentoml-rebuild")}
    _sh(["git", "clone", "-q", info["origin"], str(clone)], root, environ)
    _sh(["git", "checkout", "-q", info["first_commit"]], clone, environ)
    return _sh(["dvc", "repro"], clone, environ)


def main(root: Path, *, rebuild_too: bool = True) -> int:
    root.mkdir(parents=True, exist_ok=True)
    try:
        info = build(root)
        (root / "smoke.json").write_text(json.dumps(info, indent=1))
        (root / READY).touch()
        if not rebuild_too:
            return 0
        out = rebuild(root, info)
        (root / "rebuild.log").write_text(out)
        (root / REBUILT).touch()
    except BaseException:
        (root / FAILED).write_text(traceback.format_exc())
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    raise SystemExit(main(Path(sys.argv[1])))
