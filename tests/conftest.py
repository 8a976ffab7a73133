"""Shared helpers: the real config, shrunk; a real git+DVC copy of the repository in a temp folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ontime.params import compose

REPO = Path(__file__).resolve().parents[1]
# Two workers, the smoke build and the processes they start share 2 cores. OpenMP's default is to
# spin while it waits (torch and LightGBM both use it), so oversubscribed processes burn each other's
# cores: three copies of one tiny-model test took 58 s side by side, 17 s with passive waiting. The
# thread counts (and so the numbers) stay as the params set them. Set before any worker or
# subprocess loads an OpenMP runtime; they inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
BIN = Path(sys.executable).parent

# The real config, shrunk by the `smoke` profile (conf/experiment/smoke.yaml): two months of data.
SHRUNK = ["experiment=smoke"]
TINY = ["model.d_block=32", "model.n_blocks=1", "model.n_frequencies=4", "model.d_num_embedding=4"]
# The whole graph on the smoke profile with tiny models. The champion is one of the candidates
# holding the PyTorch model, so that serving tests can make it overflow (a LightGBM model never does).
TORCH_CANDIDATES = "select.candidates=[base,finetuned,ens_weighted,ens_stacking]"
SMOKE_GRAPH = [*SHRUNK, *TINY, TORCH_CANDIDATES]
# The lanes are the folders under tests/ (tests/README.md): what a test may use decides where it lives.
LANES = ("unit", "component", "pipeline")
# Fixtures that stand for whole pipelines through DVC or served Bentos: pipeline lane only.
PIPELINE_FIXTURES = {"smoke_repo", "studied", "repo"}
# Tests that write into the smoke pipeline's shared BentoML store or run DVC inside its origin (a
# repository lock): one worker runs them one after another (pytest-xdist group), the other smoke
# tests spread over the workers.
SMOKE_WRITERS = "smoke_writers"
SMOKE_DIR = "ONTIME_TEST_SMOKE_DIR"  # where the background build of the smoke pipeline writes


def lane(item: pytest.Item) -> str:
    parts = Path(str(item.path)).relative_to(REPO / "tests").parts
    if len(parts) < 2 or parts[0] not in LANES:
        raise pytest.UsageError(f"{item.nodeid}: a test lives in one of tests/{{{','.join(LANES)}}}/")
    return parts[0]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the marks into node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks each test with its lane (its folder) and refuses a whole-pipeline fixture outside
    tests/pipeline/. Groups for ``pytest -n N --dist loadgroup`` (make test): a worker runs a whole
    group, so a module fixture is built once; a group is a file, except the tests marked
    ``xdist_group(SMOKE_WRITERS)``, which share a group across files."""
    for item in items:
        where = lane(item)
        item.add_marker(getattr(pytest.mark, where))
        fixtures = set(getattr(item, "fixturenames", ()))
        if where != "pipeline" and (used := sorted(PIPELINE_FIXTURES & fixtures)):
            raise pytest.UsageError(
                f"{item.nodeid} uses {used}, a whole pipeline or served Bento: move it to tests/pipeline/"
            )
        if not any(m.name == "xdist_group" for m in item.iter_markers()):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Under ``--dist loadgroup`` pytest-xdist appends ``@group`` to each node id on the worker; if
    it did not (a pytest it does not support), every worker would build every module fixture:
    stop instead of running a suite twice as slow."""
    if getattr(session.config.option, "loadgroup", False) and not all("@" in i.nodeid for i in session.items):
        raise pytest.UsageError(
            "pytest-xdist did not group the tests (--dist loadgroup): install the dev extra's "
            f"pytest (pytest {pytest.__version__} is not supported): pip install -e '.[dev]'"
        )


_BUILD = pytest.StashKey[subprocess.Popen]()  # the background smoke build (controller only)


def _selects_pipeline(config: pytest.Config) -> bool:
    """Whether the command line's paths take in tests/pipeline/ (no paths: testpaths, all of tests/)."""
    paths = [a.split("::")[0] for a in config.args if not a.startswith("-")]
    if not paths:
        return True
    pipeline = REPO / "tests" / "pipeline"
    for arg in paths:
        path = (Path(config.invocation_params.dir) / arg).resolve()
        if path == pipeline or pipeline in path.parents or path in pipeline.parents:
            return True
    return False


@pytest.hookimpl(trylast=True)  # after the tmpdir plugin has made config._tmp_path_factory
def pytest_configure(config: pytest.Config) -> None:
    """In the controller (not a pytest-xdist worker): when the pipeline lane is selected, start the
    smoke pipeline's build in the background (tests/smoke_build.py) so it runs while the workers
    take other tests; the workers inherit ``ONTIME_TEST_SMOKE_DIR`` and wait for it there."""
    if hasattr(config, "workerinput") or os.environ.get(SMOKE_DIR) or config.option.collectonly:
        return
    if not _selects_pipeline(config):
        return
    root = config._tmp_path_factory.getbasetemp() / "smoke_repo"  # type: ignore[attr-defined]
    root.mkdir()
    os.environ[SMOKE_DIR] = str(root)
    with (root / "build.log").open("w") as log:  # the child holds its own copy of the handle
        config.stash[_BUILD] = subprocess.Popen(
            [sys.executable, "-m", "tests.smoke_build", str(root)],
            cwd=REPO, env=env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def pytest_unconfigure(config: pytest.Config) -> None:
    proc = config.stash.get(_BUILD, None)
    if proc is None:
        return
    if proc.poll() is None:  # the run ended first (a failure, -x, Ctrl-C)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    os.environ.pop(SMOKE_DIR, None)


def wait_for(root: Path, marker: str, timeout: float = 1800) -> None:
    """Until the background build writes ``marker`` under ``root``; fails with its error or log."""
    from tests.smoke_build import FAILED

    deadline = time.monotonic() + timeout
    while not (root / marker).exists():
        if (root / FAILED).exists():
            pytest.fail(f"the smoke pipeline's build failed:\n{(root / FAILED).read_text()}", pytrace=False)
        if time.monotonic() > deadline:
            log = (root / "build.log").read_text()[-5000:]
            pytest.fail(f"the smoke pipeline's build wrote no {marker} in {timeout} s:\n{log}", pytrace=False)
        time.sleep(1)


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

    def rebuilt(self) -> tuple[Path, str]:
        """A second build of the whole graph from nothing (tests/smoke_build.py ``rebuild``): its
        clone and `dvc repro`'s output. Made in the background after the first build when the
        session started one, else here."""
        from tests.smoke_build import REBUILT, rebuild

        if os.environ.get(SMOKE_DIR):
            wait_for(self.root, REBUILT)
            return self.root / "rebuild", (self.root / "rebuild.log").read_text()
        info = {"origin": str(self.origin), "first_commit": self.first_commit}
        return self.root / "rebuild", rebuild(self.root, info)

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
    """The whole smoke graph, run once per test run for every worker (tests/smoke_build.py): in
    the background from the session's start, or here when nothing started it."""
    from tests.smoke_build import READY, main

    if os.environ.get(SMOKE_DIR):
        root = Path(os.environ[SMOKE_DIR])
        wait_for(root, READY)
    else:  # e.g. a pytest started with ONTIME_TEST_SMOKE_DIR unset by hand: build it here
        root = tmp_path_factory.mktemp("smoke_repo")
        assert main(root, rebuild_too=False) == 0, (root / "failed").read_text()
    info = json.loads((root / "smoke.json").read_text())
    environ = {**env(), "BENTOML_HOME": info["bentoml_home"]}
    return SmokeRepo(root, Path(info["origin"]), Path(info["remote"]), environ, info["first_commit"])


@pytest.fixture(scope="session")
def data_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data stages run once on the shrunk default config; read-only for the tests using it."""
    work = tmp_path_factory.mktemp("data_run")
    params = write_params(work / "params.yaml", SHRUNK)
    run_stages(work, params)
    return work


def dev_tool(name: str) -> Any:
    """``dev/<name>.py`` (a script, not a package) loaded as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"dev_{name}", REPO / "dev" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
