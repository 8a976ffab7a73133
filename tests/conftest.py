"""Shared helpers: the real config, shrunk; a real git+DVC copy of the repository in a temp folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ontime.params import compose

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# The real config, shrunk by the `smoke` profile (conf/experiment/smoke.yaml): two months of data.
SHRUNK = ["experiment=smoke"]
TINY = ["model.d_block=32", "model.n_blocks=1", "model.n_frequencies=4", "model.d_num_embedding=4"]
# The whole graph on the smoke profile with tiny models. The champion is one of the candidates
# holding the PyTorch model, so that serving tests can make it overflow (a LightGBM model never does).
TORCH_CANDIDATES = "select.candidates=[base,finetuned,ens_weighted,ens_stacking]"
SMOKE_GRAPH = [*SHRUNK, *TINY, TORCH_CANDIDATES]
SLOW_FIXTURES = {"smoke_repo", "studied"}  # a whole pipeline through dvc: minutes to build


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the marks into node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for ``pytest -n N --dist loadgroup`` (make test): a worker runs a whole group, so a
    session or module fixture is built once per group, not once per test. Tests on the smoke
    pipeline (``smoke_repo``, minutes to build) form one group; every other file is its own.
    Tests on a whole pipeline run through DVC (``SLOW_FIXTURES``) are marked ``slow``: ``make
    test-fast`` leaves them out, ``make check`` (CI) runs them."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        group = "smoke_repo" if "smoke_repo" in fixtures else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
        if SLOW_FIXTURES.intersection(fixtures):
            item.add_marker(pytest.mark.slow)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Under ``--dist loadgroup`` pytest-xdist appends ``@group`` to each node id on the worker; if
    it did not (a pytest it does not support), every worker would build every minutes-long fixture:
    stop instead of running a suite twice as slow."""
    if getattr(session.config.option, "loadgroup", False) and not all("@" in i.nodeid for i in session.items):
        raise pytest.UsageError(
            "pytest-xdist did not group the tests (--dist loadgroup): install the dev extra's "
            f"pytest (pytest {pytest.__version__} is not supported): pip install -e '.[dev]'"
        )


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


@dataclass
class SmokeRepo:
    """A real git+DVC repo where the whole smoke graph ran (results committed, pushed to a local
    remote with verify on, run cache included). Read-only for tests: change a clone instead."""

    root: Path
    origin: Path
    remote: Path
    environ: dict[str, str]  # BENTOML_HOME: the store the pipeline packaged into
    first_commit: str  # the params commit the pipeline ran on (before results were committed)

    def clone(self, name: str, *, pull: bool = True) -> Path:
        dest = self.root / name
        run(["git", "clone", "-q", str(self.origin), str(dest)], self.root)
        if pull:
            proc = subprocess.run(
                ["dvc", "pull", "--run-cache"], cwd=dest, env=self.environ, capture_output=True, text=True
            )
            assert proc.returncode == 0, proc.stderr
        return dest


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory: pytest.TempPathFactory) -> SmokeRepo:
    root = tmp_path_factory.mktemp("smoke_repo")
    origin = copy_repo(root / "origin")
    environ = {**env(), "BENTOML_HOME": str(root / "bentoml")}

    def sh(*args: str) -> str:
        proc = subprocess.run(list(args), cwd=origin, env=environ, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    sh("dvc", "remote", "add", "-d", "storage", str(root / "remote"))
    sh("dvc", "remote", "modify", "storage", "verify", "true")
    sh("ontime", "params", *SMOKE_GRAPH)
    sh("git", "commit", "-qam", "smoke params, local remote")
    first = sh("git", "rev-parse", "HEAD").strip()
    out = sh("dvc", "repro")
    stages = yaml.safe_load((origin / "dvc.yaml").read_text())["stages"]
    assert all(f"Running stage '{stage}'" in out for stage in stages), out
    assert "studies/dvc.yaml" not in out, "a plain `dvc repro` must not run the studies"
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "results")
    sh("dvc", "push", "--run-cache")
    return SmokeRepo(root, origin, root / "remote", environ, first)


@pytest.fixture(scope="session")
def data_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data stages run once on the shrunk default config; read-only for the tests using it."""
    work = tmp_path_factory.mktemp("data_run")
    params = write_params(work / "params.yaml", SHRUNK)
    run_stages(work, params)
    return work
