"""Lineage through the real tools: a temp git+DVC repo with a local-folder remote (verify on), the
smoke pipeline with tiny models, fresh clones, a real `bentoml serve` on a free loopback port.

- two fresh clones of one commit, each running `dvc repro` from nothing (each process with its own
  hash seed, its own BentoML store), produce byte-identical outputs: the same dvc.lock;
- push, then a fresh clone + `dvc pull`: `dvc status` is clean and `dvc repro` runs nothing;
- an edit of inference code makes evaluate and package stale; an edit of the training loop after a
  finished run retrains instead of resuming;
- a corrupted object on the remote is refused on pull;
- an experiment never takes over the served model; promote and rollback serve the expected tag;
- at this commit, every stage of dvc.yaml and studies/dvc.yaml ran with the code and params committed
  beside its lock (dev/lineage.py), so the README's figures are this code's.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import yaml

from ontime.serving.local import serve_bento
from ontime.serving.online import Scorer
from tests.conftest import REPO, SMOKE_GRAPH, SMOKE_WRITERS, SmokeRepo, dev_tool

PARAMS = SMOKE_GRAPH
STAGES = ("collect", "clean", "featurize", "split", "analyze", "train", "finetune", "tune", "baseline",
          "linear", "svm", "ensemble", "fold@1", "fold@2", "evaluate", "select", "package",
          "report")  # fmt: skip


def sh(
    args: Sequence[str], cwd: Path, environ: dict[str, str], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), cwd=cwd, env=environ, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def ran(out: str) -> set[str]:
    return {s for s in STAGES if f"Running stage '{s}'" in out}


def lock_outs(repo: Path) -> dict[str, str]:
    """Every stage output's md5 as dvc.lock records it."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {o["path"]: o["md5"] for s in lock.values() for o in s.get("outs", [])}


@pytest.fixture(scope="module")
def built(smoke_repo: SmokeRepo) -> SmokeRepo:
    """The whole smoke graph, run once for the test session (tests/conftest.py), pushed."""
    return smoke_repo


# ------------------------------------------------------------------------- clone, pull, done ---
def test_the_committed_locks_match_the_code_and_params_at_this_commit() -> None:
    """Both dvc.yaml files' locks were written by the code and params in this checkout: no stage
    lists a changed tracked dep, param or command in `dvc status` (data deps are products)."""
    lineage = dev_tool("lineage")
    proc = subprocess.run(["dvc", "status", "--json"], cwd=REPO, capture_output=True, text=True, check=True)
    stale = lineage.stale(json.loads(proc.stdout or "{}"), lineage.tracked(REPO))
    assert stale == {}, f"run these stages and commit the locks with the code (dev/lineage.py): {stale}"


def test_two_fresh_clones_build_byte_identical_outputs(built: SmokeRepo) -> None:
    # A fresh clone of the params commit, its own BentoML store and processes, `dvc repro` from
    # nothing (tests/smoke_build.py runs it in the background right after the first build).
    clone, out = built.rebuilt()
    assert ran(out) == set(STAGES), out
    mine, theirs = lock_outs(clone), lock_outs(built.origin)
    assert set(mine) == set(theirs)
    differ = sorted(p for p in mine if mine[p] != theirs[p])
    assert not differ, f"outputs differ between two fresh runs: {differ}"
    # The packaged tags are content hashes: the same model and Bento in another store.
    assert json.loads((clone / "models/package.json").read_text()) == json.loads(
        (built.origin / "models/package.json").read_text()
    )


def test_clone_and_pull_is_complete_and_up_to_date(built: SmokeRepo) -> None:
    clone = built.clone("pulled", pull=False)
    sh(["dvc", "pull"], clone, built.environ)
    status = sh(["dvc", "status", "dvc.yaml"], clone, built.environ).stdout
    assert "Data and pipelines are up to date" in status, status
    # Over every pipeline file: only the studies differ (their committed results are the default
    # data's, these params are the smoke profile's: stale, as `dvc status` should say), none missing.
    every = json.loads(sh(["dvc", "status", "--json"], clone, built.environ).stdout)
    assert all(stage.startswith("studies/dvc.yaml:") for stage in every), every
    again = sh(["dvc", "repro"], clone, built.environ)
    assert ran(again.stdout) == set(), again.stdout
    card = json.loads((clone / "models/champion/model_card.json").read_text())
    # The card's lineage is what dvc.lock recorded: the source data and the split parts.
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    assert card["lineage"]["collect"]["outs"]["data/raw"] == lock["collect"]["outs"][0]["md5"]
    assert card["lineage"]["split"]["outs"]["data/split"] == lock["split"]["outs"][0]["md5"]
    assert card["lineage"]["train"]["params"]["train"] == lock["train"]["params"]["params.yaml"]["train"]
    assert card["git"]["commit"] == built.first_commit
    assert "dirty" not in card["git"]


def test_inference_code_edit_makes_evaluate_and_package_stale(built: SmokeRepo) -> None:
    clone = built.clone("edited")
    with (clone / "src/ontime/candidates/lightgbm_model.py").open("a") as f:
        f.write("\n# an edit of inference code\n")
    status = sh(["dvc", "status", "--json"], clone, built.environ).stdout
    stale = set(json.loads(status))
    assert {"evaluate", "package", "ensemble", "select"} <= stale, stale
    assert not stale & {"collect", "clean", "featurize", "split", "report"}, stale


def test_a_stage_help_edit_makes_only_that_stage_stale(built: SmokeRepo) -> None:
    # Each stage declares its command line in its own module (cli.py only names the modules): a
    # help text edited there re-runs that stage, not the graph (cli.py was every stage's dep).
    clone = built.clone("help-edit")
    # (modules no other stage imports: training/linear.py is the svm and fold stages' too)
    for module, stage in (("data/analyze.py", "analyze"), ("evaluation/select.py", "select")):
        path = clone / "src/ontime" / module
        text = path.read_text()
        assert "SUMMARY = " in text
        path.write_text(text.replace("SUMMARY = ", "SUMMARY = 'Edited. ' + ", 1))
        stale = set(json.loads(sh(["dvc", "status", "dvc.yaml", "--json"], clone, built.environ).stdout))
        assert stale == {stage}, (module, stale)
        path.write_text(text)
    assert json.loads(sh(["dvc", "status", "dvc.yaml", "--json"], clone, built.environ).stdout) == {}


def test_corrupted_remote_object_is_refused_on_pull(built: SmokeRepo, tmp_path: Path) -> None:
    # A copy of the remote (other workers pull from the shared one meanwhile), verify on as there.
    remote = Path(shutil.copytree(built.remote, tmp_path / "remote"))
    objects = sorted(p for p in (remote / "files").rglob("*") if p.is_file() and not p.name.endswith(".dir"))
    victim = max(objects, key=lambda p: p.stat().st_size)
    saved = victim.read_bytes()
    victim.chmod(0o644)
    victim.write_bytes(bytes([saved[0] ^ 0xFF]) + saved[1:])
    clone = built.clone("corrupted", pull=False)
    sh(["dvc", "remote", "modify", "--local", "storage", "url", str(remote)], clone, built.environ)
    proc = sh(["dvc", "pull"], clone, built.environ, check=False)
    assert proc.returncode != 0, proc.stdout
    assert "Checkout failed" in proc.stderr, proc.stderr
    # Nothing corrupted reached the workspace: every file DVC checked out has its recorded hash.
    assert "Data and pipelines are up to date" not in sh(["dvc", "status"], clone, built.environ).stdout


# ------------------------------------------------------------------------------------ serving ---
def one_flight(repo: Path, scorer: Scorer) -> dict[str, Any]:
    """A real test-window flight with its weather, as a request."""
    wx = [f.column for f in scorer.fields if f.table == "weather"]
    weather = pl.read_parquet(repo / "data/clean/weather.parquet").select("origin", "time_hour", *wx)
    row = (
        pl.read_parquet(repo / "data/clean/flights.parquet")
        .filter(pl.col("tailnum").is_not_null())
        .sort("time_hour", "carrier", "flight")
        .tail(1)
        .join(weather, on=["origin", "time_hour"], how="left")
    )
    names = [f.name for f in scorer.fields if f.name in row.columns]
    return {
        k: v.isoformat() if isinstance(v, dt.datetime) else v
        for k, v in row.select(names).to_dicts()[0].items()
    }


@contextmanager
def served(what: str, built: SmokeRepo, tag: str, cwd: Path) -> Iterator[httpx.Client]:
    log = built.root / f"serve-{len(list(built.root.glob('serve-*.log')))}.log"  # one per server
    environ = {**built.environ, "ONTIME_REQUEST_LOG": str(built.root / "lineage-requests.jsonl")}
    environ.pop("ONTIME_MODEL", None)
    with (
        serve_bento(what, env=environ, output=log, cwd=cwd) as url,
        httpx.Client(base_url=url, timeout=60) as c,
    ):
        yield c
    # The service said at start which model it serves, and where that choice came from.
    assert f"ontime: serving {tag} (from " in log.read_text(), log.read_text()[-3000:]


def model_version(client: httpx.Client, flight: dict[str, Any]) -> str:
    r = client.post("/predict_one", json={"flight": flight})
    assert r.status_code == 200, r.text
    return str(r.json()["model_version"])


@pytest.mark.xdist_group(SMOKE_WRITERS)  # packages into the shared store and prunes it
def test_registry_and_serving_follow_the_pinned_tag(built: SmokeRepo) -> None:
    repo, environ = built.clone("registry"), built.environ
    v1 = json.loads((repo / "models/package.json").read_text())
    home = Path(environ["BENTOML_HOME"])
    scorer = Scorer(home / "models" / v1["model_tag"].replace(":", "/"))
    flight = one_flight(repo, scorer)

    def store() -> set[str]:
        listed = sh(["bentoml", "models", "list", "-o", "json"], repo, environ).stdout
        return {m["tag"] for m in json.loads(listed)}

    # An experiment packages another model into the same store; it is newer, never served.
    before = store()
    assert v1["model_tag"] in before
    exp = sh(
        ["dvc", "exp", "run", "--temp", *(f"-S{o}" for o in PARAMS), "-Sserve.max_batch_size=33"],
        repo,
        environ,
    )
    assert ran(exp.stdout) == {"package"}, exp.stdout
    experiment = store() - before
    assert len(experiment) == 1, experiment
    with served("ontime.serving.service:OntimeDelay", built, v1["model_tag"], repo) as client:
        assert model_version(client, flight) == v1["model_tag"]

    # v1.0.0 to prod; then a second version (another serve setting: only package re-runs).
    assert "v1.0.0" in sh(["ontime", "registry", "promote"], repo, environ).stdout
    sh(["ontime", "params", *PARAMS, "serve.max_batch_size=64"], repo, environ)
    assert ran(sh(["dvc", "repro"], repo, environ).stdout) == {"package"}
    v2 = json.loads((repo / "models/package.json").read_text())
    assert v2["model_tag"] != v1["model_tag"]
    sh(["git", "commit", "-qam", "serve 64"], repo, environ)
    assert "v1.1.0" in sh(["ontime", "registry", "promote"], repo, environ).stdout
    assert sh(["ontime", "registry", "which"], repo, environ).stdout.strip() == v2["model_tag"]
    tags = sh(["git", "tag", "--list"], repo, environ).stdout.split()
    assert {
        "ontime-delay@v1.0.0",
        "ontime-delay@v1.1.0",
        "ontime-delay#prod#1",
        "ontime-delay#prod#2",
    } <= set(tags)
    with served(v2["bento_tag"], built, v2["model_tag"], repo) as client:
        assert model_version(client, flight) == v2["model_tag"]

    # Roll back: prod is v1.0.0 again, and its Bento serves v1's model.
    assert "v1.0.0" in sh(["ontime", "registry", "rollback"], repo, environ).stdout
    assert sh(["ontime", "registry", "which", "--bento"], repo, environ).stdout.strip() == v1["bento_tag"]
    listing = sh(["ontime", "registry", "list"], repo, environ).stdout
    assert any(line.startswith("v1.0.0") and "prod" in line for line in listing.splitlines()), listing
    # ... with the data version each came from (the md5 of the collected source data, from dvc.lock).
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert v1["source_data"] == {"data/raw": lock["collect"]["outs"][0]["md5"]}
    assert v1["source_data"]["data/raw"][:12] in listing
    with served(v1["bento_tag"], built, v1["model_tag"], repo) as client:
        assert model_version(client, flight) == v1["model_tag"]

    # DVC's own tools read the tags: the prod version's champion files, from the remote.
    got = built.root / "prod-champion"
    sh(["dvc", "artifacts", "get", ".", "ontime-delay", "--stage", "prod", "-o", str(got)], repo, environ)
    card = json.loads((got / "model_card.json").read_text())
    assert card == json.loads((repo / "models/champion/model_card.json").read_text())

    # Prune: the experiment's model goes, every version's model and Bento stay.
    pruned = sh(["ontime", "registry", "prune"], repo, environ).stdout.split()
    left = {
        m["tag"] for m in json.loads(sh(["bentoml", "models", "list", "-o", "json"], repo, environ).stdout)
    }
    assert left == {v1["model_tag"], v2["model_tag"]}, (left, pruned)


def test_training_loop_edit_retrains_instead_of_resuming(built: SmokeRepo) -> None:
    repo = built.clone("loop")
    # The clone's own code runs (not the installed copy), so an edit there is the code that runs.
    environ = {
        **built.environ,
        "BENTOML_HOME": str(built.root / "bentoml-loop"),
        "PYTHONPATH": str(repo / "src"),
    }
    sh(["dvc", "pull"], repo, environ)
    shutil.copytree(built.origin / "checkpoints", repo / "checkpoints")  # a finished run's checkpoints
    same = sh(["dvc", "repro", "--force", "--single-item", "train"], repo, environ)
    assert "resuming after epoch" in same.stderr + same.stdout
    loop = repo / "src/ontime/training/loop.py"
    loop.write_text(loop.read_text() + "\n# an edit of the training loop\n")
    out = sh(["dvc", "repro", "train"], repo, environ)
    assert "Running stage 'train'" in out.stdout
    text = out.stderr + out.stdout
    assert "starting afresh" in text, text[-3000:]
    assert "resuming after epoch" not in text, text[-3000:]
