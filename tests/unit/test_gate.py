"""The promotion gate's arithmetic and the registry's history, without a pipeline: the paired
bootstrap on known predictions, the window check on model cards, and who/when/why kept in the
stage assignments' git tags of a real temp repository. The gate on real packaged models, with
promotion and rollback, is in tests/pipeline/test_live.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ontime import registry
from ontime.config.gate import GateConfig
from ontime.errors import DataError
from ontime.live.gate import Model, check_window, compare, score, trained_until

CFG = GateConfig(metric="roc_auc", margin=0.002, confidence=0.95, bootstrap=200, min_rows=500)


def rows(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a weak model and a stronger one (more signal, same noise)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    noise = rng.normal(size=n)
    weak = 1 / (1 + np.exp(-(0.4 * (2 * y - 1) + noise)))
    strong = 1 / (1 + np.exp(-(0.9 * (2 * y - 1) + noise)))
    return y, weak, strong


def test_a_better_challenger_passes_with_an_interval_above_zero() -> None:
    y, weak, strong = rows()
    c = compare(y, weak, strong, CFG, seed=1)
    assert c.champion == pytest.approx(roc_auc_score(y, weak), abs=1e-6)
    assert c.challenger == pytest.approx(roc_auc_score(y, strong), abs=1e-6)
    assert c.difference == pytest.approx(c.challenger - c.champion, abs=2e-6)
    assert 0 < c.low < c.difference < c.high
    assert c.passed
    assert "above 0" in c.reason
    assert c.rows == len(y)


def test_a_worse_challenger_does_not_pass() -> None:
    y, weak, strong = rows()
    c = compare(y, strong, weak, CFG, seed=1)
    assert c.difference < 0
    assert not c.passed
    assert "not better by the margin" in c.reason


def test_the_same_model_is_not_surely_better_even_with_margin_zero() -> None:
    y, weak, _ = rows()
    jitter = weak + np.random.default_rng(5).normal(scale=1e-3, size=len(weak))
    c = compare(y, weak, jitter, CFG.model_copy(update={"margin": 0.0}), seed=1)
    assert c.low <= 0 <= c.high
    assert not c.passed


def test_the_bootstrap_is_seeded() -> None:
    y, weak, strong = rows()
    assert compare(y, weak, strong, CFG, seed=3) == compare(y, weak, strong, CFG, seed=3)
    assert compare(y, weak, strong, CFG, seed=3).low != compare(y, weak, strong, CFG, seed=4).low


def test_too_few_rows_or_one_class_fail_clearly() -> None:
    y, weak, strong = rows(n=100)
    with pytest.raises(DataError, match=r"gate\.min_rows"):
        compare(y, weak, strong, CFG, seed=0)
    with pytest.raises(DataError, match="one label only"):
        compare(np.zeros(600, dtype=int), np.full(600, 0.2), np.full(600, 0.3), CFG, seed=0)


@pytest.mark.parametrize("metric", ["roc_auc", "pr_auc", "neg_log_loss", "neg_brier"])
def test_every_metric_is_higher_for_the_better_model(metric: str) -> None:
    y, weak, strong = rows()
    assert score(metric, y, strong) > score(metric, y, weak)


# ---------------------------------------------------------------------------------- the window ---
def bundle(folder: Path, trained_on: list[str] | None) -> Path:
    folder.mkdir(parents=True)
    windows = {
        "train": {"first": "2013-01-01 05:00", "last": "2013-09-16 23:00"},
        "finetune_valid": {"first": "2013-11-17 05:00", "last": "2013-11-30 23:00"},
        "test": {"first": "2013-12-01 05:00", "last": "2013-12-31 23:00"},
    }
    (folder / "model_card.json").write_text(json.dumps({"windows": windows}))
    info = {"kind": "linear", "name": "x", **({"trained_on": trained_on} if trained_on else {})}
    (folder / "candidate.json").write_text(json.dumps(info))
    return folder


def test_trained_until_is_the_last_day_of_the_parts_it_trained_on(tmp_path: Path) -> None:
    assert trained_until(bundle(tmp_path / "a", ["train"])) == (dt.date(2013, 9, 16), ["train"])
    # without trained_on: every part but test (the most it may have seen)
    assert trained_until(bundle(tmp_path / "b", None))[0] == dt.date(2013, 11, 30)


def test_a_window_a_model_trained_on_is_refused() -> None:
    old = Model("m:old", None, dt.date(2013, 11, 30), ["train", "finetune_valid"])  # type: ignore[arg-type]
    new = Model("m:new", None, dt.date(2013, 12, 8), ["train", "finetune_valid"])  # type: ignore[arg-type]
    check_window(dt.date(2013, 12, 9), {"champion": old, "challenger": new})
    with pytest.raises(
        DataError, match=r"challenger m:new trained on rows up to 2013-12-08.*after 2013-12-08"
    ):
        check_window(dt.date(2013, 12, 8), {"champion": old, "challenger": new})


# -------------------------------------------------------------------------- registry history ---
def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def commit_package(repo: Path, model_tag: str) -> str:
    (repo / "models").mkdir(exist_ok=True)
    (repo / "models/package.json").write_text(
        json.dumps({"model_tag": model_tag, "bento_tag": "b:" + model_tag})
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", model_tag)
    return git(repo, "rev-parse", "HEAD").strip()


def test_history_keeps_who_when_and_why_of_every_assignment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    for k, v in {"GIT_AUTHOR_NAME": "Ada", "GIT_COMMITTER_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.org",
                 "GIT_COMMITTER_EMAIL": "ada@example.org"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    first = commit_package(repo, "m:1")
    v1 = registry.promote("HEAD", reason="first model", cwd=repo)
    commit_package(repo, "m:2")
    v2 = registry.promote("HEAD", reason="gate 2013-12-09..2013-12-15: +0.012", cwd=repo)
    back = registry.rollback(reason="alert: 7-day ROC AUC 0.61", cwd=repo)
    assert (v1.version, v2.version, back.version) == ("v1.0.0", "v1.1.0", "v1.0.0")
    assert registry.current("prod", cwd=repo).commit == first
    events = registry.history("prod", cwd=repo)
    assert [(e.number, e.version) for e in events] == [(1, "v1.0.0"), (2, "v1.1.0"), (3, "v1.0.0")]
    assert [e.why for e in events] == [
        "first model",
        "gate 2013-12-09..2013-12-15: +0.012",
        "rollback: alert: 7-day ROC AUC 0.61",
    ]
    assert all(e.who == "Ada <ada@example.org>" for e in events)
    assert all(dt.datetime.fromisoformat(e.when).year >= 2024 for e in events)
    table = registry.history_table(cwd=repo)
    assert "rollback: alert: 7-day ROC AUC 0.61" in table
    assert len(table.splitlines()) == 4
    assert os.environ["GIT_COMMITTER_NAME"] == "Ada"
