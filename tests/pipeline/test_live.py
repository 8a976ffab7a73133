"""The live loop through the real tools, on the smoke pipeline (tests/conftest.py ``smoke_repo``):

- a real ``bentoml serve`` of the packaged Bento gets real test-window flights from ``ontime replay``;
  ``ontime outcomes`` writes their late labels; ``ontime monitor --outcomes`` joins the request log
  to them by key, and its daily ROC AUC equals scikit-learn's on the same joined rows;
- the promotion gate in a clone of the repository: a worse challenger is not promoted (exit 1, the
  reason, no new tag), a better one is (exit 0, a new prod assignment whose message holds the gate's
  figures), and a rollback serves the previous tag again.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import roc_auc_score

from ontime.serving.local import serve_bento
from ontime.serving.requestlog import read as read_log
from tests.conftest import SMOKE_GRAPH, SMOKE_WRITERS, SmokeRepo

DAYS = ("2013-02-11", "2013-02-12")  # in the smoke profile's test window (Feb 10-28)
N_FLIGHTS = 400


def sh(
    args: Sequence[str], cwd: Path, environ: dict[str, str], *, ok: Sequence[int] = (0,)
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), cwd=cwd, env=environ, capture_output=True, text=True)
    if proc.returncode not in ok:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@dataclass
class Served:
    repo: Path
    environ: dict[str, str]
    url: str
    log: Path
    replayed: dict[str, Any]


@pytest.fixture(scope="module")
def served(smoke_repo: SmokeRepo) -> Iterator[Served]:
    """The smoke pipeline's Bento served, N_FLIGHTS of DAYS replayed to it (``ontime replay``)."""
    repo = smoke_repo.origin
    package = json.loads((repo / "models/package.json").read_text())
    log = smoke_repo.root / "live-requests.jsonl"
    environ = {**smoke_repo.environ, "ONTIME_REQUEST_LOG": str(log)}
    with serve_bento(package["bento_tag"], env=environ, output=smoke_repo.root / "live.log", cwd=repo) as url:
        out = sh(
            ["ontime", "replay", "--url", url, "--from", DAYS[0], "--to", DAYS[1], "--limit", str(N_FLIGHTS),
             "--speed", "0", "--batch", "32"],
            repo, environ,
        )  # fmt: skip
        yield Served(repo, environ, url, log, json.loads(out.stdout))


def test_replay_sends_real_flights_and_the_service_logs_each_with_its_key(served: Served) -> None:
    assert served.replayed["flights"] == served.replayed["answered"] == N_FLIGHTS
    assert served.replayed["refused"] == served.replayed["failed"] == 0
    entries = read_log(served.log)
    assert len(entries) == N_FLIGHTS
    keys = [e["key"] for e in entries]
    assert len(set(keys)) == N_FLIGHTS
    carrier, flight, origin, when = keys[0].split("|")
    assert len(carrier) == 2
    assert flight.isdigit()
    assert len(origin) == 3
    assert dt.datetime.fromisoformat(when.replace("Z", "+00:00")).tzinfo is not None


def test_monitor_joins_late_labels_and_its_daily_roc_auc_is_sklearns(served: Served, tmp_path: Path) -> None:
    repo, environ = served.repo, served.environ
    outcomes = tmp_path / "outcomes"
    outcomes.mkdir()
    sh(
        ["ontime", "outcomes", "--from", DAYS[0], "--to", DAYS[1], "--out", str(outcomes / "feb.jsonl")],
        repo,
        environ,
    )
    labels = {
        row["key"]: row["label"] for row in map(json.loads, (outcomes / "feb.jsonl").read_text().splitlines())
    }
    # a label for a flight the service never scored: counted, not fatal
    (outcomes / "stray.jsonl").write_text(
        json.dumps({"key": "ZZ|1|JFK|2013-02-11T12:00:00Z", "scheduled": "2013-02-11T12:00:00Z", "label": 1})
        + "\n"
    )
    summary_path = tmp_path / "summary.json"
    proc = sh(
        ["ontime", "monitor", "--log", str(served.log), "--outcomes", str(outcomes), "--workspace",
         str(tmp_path / "ws"), "--pipeline-workspace", "", "--out", str(tmp_path / "monitor.html")],
        repo, environ, ok=(0, 1),
    )  # fmt: skip
    summary = json.loads(proc.stdout)
    summary_path.write_text(proc.stdout)
    quality = summary["quality"]
    entries = read_log(served.log)
    by_day: dict[str, tuple[list[int], list[float]]] = {}
    for e in entries:
        day = (
            dt.datetime.fromisoformat(e["key"].split("|")[3].replace("Z", "+00:00"))
            .astimezone(dt.timezone(dt.timedelta(hours=-5)))  # EST: February has no daylight saving
            .date()
            .isoformat()
        )
        y, p = by_day.setdefault(day, ([], []))
        y.append(labels[e["key"]])
        p.append(e["probability"])
    days = {d["day"]: d for d in quality["days"]}
    assert set(days) == set(by_day)
    for day, (y, p) in by_day.items():
        assert days[day]["labelled"] == len(y)
        assert days[day]["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    # the days' other flights (not replayed: --limit) and the stray label: counted, not fatal
    served_keys = {e["key"] for e in entries}
    assert len(labels) > N_FLIGHTS
    assert quality["unmatched_outcomes"] == len(set(labels) - served_keys) + 1


def test_a_log_with_no_labels_yet_reports_no_labels_and_exits_0(served: Served, tmp_path: Path) -> None:
    """Outcomes so far only for flights this service never scored: nothing to judge, no alert."""
    stray = tmp_path / "stray.jsonl"
    stray.write_text(
        json.dumps({"key": "ZZ|1|JFK|2013-02-11T12:00:00Z", "scheduled": "2013-02-11T12:00:00Z", "label": 1})
        + "\n"
    )
    proc = sh(
        ["ontime", "monitor", "--log", str(served.log), "--outcomes", str(stray), "--workspace",
         str(tmp_path / "ws"), "--pipeline-workspace", "", "--out", str(tmp_path / "monitor.html")],
        served.repo, served.environ, ok=(0, 1),
    )  # fmt: skip
    quality = json.loads(proc.stdout)["quality"]
    assert quality["status"] == "no labels"
    assert quality["labelled"] == 0
    assert quality["unmatched_outcomes"] == 1
    assert "quality" not in json.loads(proc.stdout)["alerts"]
    assert proc.returncode == (1 if json.loads(proc.stdout)["drift"] else 0)  # only drift may fire


# ------------------------------------------------------------------------------------ the gate ---
GATE_DAYS = ("2013-02-11", "2013-02-28")  # after every training row of the smoke models (Feb 9)
# A stump: one LightGBM tree of two leaves, the only candidate: a challenger surely worse. With one
# candidate there is nothing to choose between, so no folds (each would refit every candidate).
STUMP = [*SMOKE_GRAPH, "select.candidates=[lgbm_train]", "baseline.n_estimators=1", "baseline.num_leaves=2",
         "select.folds=[]"]  # fmt: skip


def tags(repo: Path, environ: dict[str, str]) -> set[str]:
    return set(sh(["git", "tag", "--list"], repo, environ).stdout.split())


@pytest.mark.xdist_group(SMOKE_WRITERS)  # packages a stump into the shared store
def test_the_gate_promotes_only_a_better_challenger_and_rollback_restores_the_tag(
    smoke_repo: SmokeRepo,
) -> None:
    repo, environ = smoke_repo.clone("gate"), smoke_repo.environ
    good = json.loads((repo / "models/package.json").read_text())
    good_commit = sh(["git", "rev-parse", "HEAD"], repo, environ).stdout.strip()
    sh(["ontime", "registry", "promote", "--reason", "the first model"], repo, environ)

    # a worse challenger: the gate says no, and nothing changes
    sh(["ontime", "params", *STUMP], repo, environ)
    sh(["dvc", "repro", "package"], repo, environ)  # the packaged challenger; not its report
    stump = json.loads((repo / "models/package.json").read_text())
    assert stump["model_tag"] != good["model_tag"]
    sh(["git", "commit", "-qam", "a stump"], repo, environ)
    before = tags(repo, environ)
    proc = sh(
        ["ontime", "gate", "--from", GATE_DAYS[0], "--to", GATE_DAYS[1], "--promote", "--out", "gate.json"],
        repo, environ, ok=(1,),
    )  # fmt: skip
    decision = json.loads((repo / "gate.json").read_text())
    assert decision["passed"] is False
    assert decision["promoted"] is None
    assert decision["difference"] < 0
    assert decision["low"] <= decision["difference"] <= decision["high"]
    assert "not better by the margin" in decision["reason"]
    assert "does NOT pass" in proc.stderr
    assert tags(repo, environ) == before
    assert sh(["ontime", "registry", "which"], repo, environ).stdout.strip() == good["model_tag"]

    # the stump serves (promoted by hand); the first model, as the challenger, passes and is promoted
    sh(["ontime", "registry", "promote", "--reason", "for the test: the stump serves"], repo, environ)
    assert sh(["ontime", "registry", "which"], repo, environ).stdout.strip() == stump["model_tag"]
    sh(["git", "checkout", "-q", good_commit], repo, environ)
    proc = sh(
        ["ontime", "gate", "--from", GATE_DAYS[0], "--to", GATE_DAYS[1], "--promote", "--out", "gate.json",
         "--reason", "the stump is worse"],
        repo, environ,
    )  # fmt: skip
    decision = json.loads((repo / "gate.json").read_text())
    assert decision["passed"] is True
    assert decision["promoted"] == "v1.0.0"  # the first model's commit is that version already
    assert decision["difference"] >= decision["margin"]
    assert decision["low"] > 0
    assert decision["rows"] >= 1000
    assert sh(["ontime", "registry", "which"], repo, environ).stdout.strip() == good["model_tag"]
    history = sh(["ontime", "registry", "history"], repo, environ).stdout
    assert "the stump is worse | gate 2013-02-11..2013-02-28: roc_auc" in history

    # rollback: the stump's tag serves again
    sh(["ontime", "registry", "rollback", "--reason", "for the test"], repo, environ)
    assert sh(["ontime", "registry", "which"], repo, environ).stdout.strip() == stump["model_tag"]
    assert "rollback: for the test" in sh(["ontime", "registry", "history"], repo, environ).stdout
