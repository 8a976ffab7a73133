"""Shared helpers: the real config, shrunk; a real git+DVC copy of the repository in a temp folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from ontime.params import compose

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# The real config, shrunk by the `smoke` profile (conf/experiment/smoke.yaml): two months of data.
SHRUNK = ["experiment=smoke"]


@pytest.fixture(scope="session", autouse=True)
def bentoml_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test (and every process it starts) packages into a temp BentoML store, never ~/bentoml."""
    home = tmp_path_factory.mktemp("bentoml")
    old = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = str(home)
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    yield home
    if old is None:
        os.environ.pop("BENTOML_HOME", None)
    else:
        os.environ["BENTOML_HOME"] = old


def compose_params(overrides: Sequence[str] = ()) -> dict[str, Any]:
    return yaml.safe_load(compose(REPO / "conf", overrides))


def write_params(path: Path, overrides: Sequence[str] = ()) -> Path:
    path.write_text(compose(REPO / "conf", overrides))
    return path


def env() -> dict[str, str]:
    """The test's environment with this venv first on PATH (dvc.yaml calls `ontime`)."""
    out = dict(os.environ)
    out["PATH"] = f"{BIN}{os.pathsep}{out.get('PATH', '')}"
    out["DVC_NO_ANALYTICS"] = "1"
    out.setdefault("GIT_AUTHOR_NAME", "ontime-tests")
    out.setdefault("GIT_AUTHOR_EMAIL", "tests@ontime.invalid")
    out.setdefault("GIT_COMMITTER_NAME", "ontime-tests")
    out.setdefault("GIT_COMMITTER_EMAIL", "tests@ontime.invalid")
    return out


def run(args: Sequence[str], cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), cwd=cwd, env=env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def copy_repo(dest: Path) -> Path:
    """Copy the files git would see (tracked, and new but not ignored) into a fresh git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    dest.mkdir(parents=True, exist_ok=True)
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "copy"], dest)
    return dest


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A real git+DVC copy of this repository in a temp folder."""
    return copy_repo(tmp_path / "repo")


def run_stages(
    workdir: Path, params: Path, stages: Sequence[str] = ("collect", "clean", "featurize", "split")
) -> None:
    """Run data stages in-process with the same arguments as dvc.yaml, inside ``workdir``."""
    from ontime.cli import main

    argv = {
        "collect": ["--out", "data/raw"],
        "clean": ["--raw", "data/raw", "--out", "data/clean", "--metrics", "metrics/clean.json"],
        "featurize": ["--clean", "data/clean", "--out", "data/features"],
        "split": ["--features", "data/features", "--out", "data/split", "--metrics", "metrics/split.json"],
    }
    cwd = Path.cwd()
    os.chdir(workdir)
    try:
        for stage in stages:
            code = main([stage, "--params", str(params), *argv[stage]])
            assert code == 0, f"stage {stage} failed"
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="session")
def data_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data stages run once on the shrunk default config; read-only for the tests using it."""
    work = tmp_path_factory.mktemp("data_run")
    params = write_params(work / "params.yaml", SHRUNK)
    run_stages(work, params)
    return work
