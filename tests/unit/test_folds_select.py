"""Walk-forward folds and the selection on them: windows, the rule, the interval, the tie-break.

The fold windows are checked against the default and smoke params; the selection runs on crafted
fold predictions written as ``ontime fold`` writes them (no training), so each expected champion is
known in advance.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from ontime.config import section
from ontime.config.select import SelectConfig
from ontime.config.split import SplitConfig
from ontime.errors import ConfigError, DataError
from ontime.evaluation import select
from ontime.io import write_json, write_parquet
from ontime.training.folds import fold_windows
from tests.conftest import compose_params

KINDS = {"lin": "linear", "gbm": "lightgbm", "net": "torch", "ens": "ensemble"}


def split_cfg(overrides: list[str] | None = None) -> SplitConfig:
    return section(compose_params(overrides or []), "split", SplitConfig, source="conf")


@pytest.mark.parametrize("overrides", [[], ["experiment=smoke"]], ids=["default", "smoke"])
def test_folds_lie_before_the_test_window_and_never_overlap_their_training(overrides: list[str]) -> None:
    params = compose_params(overrides)
    cfg = section(params, "select", SelectConfig, source="conf")
    windows = split_cfg(overrides).windows
    rated = []
    for k in cfg.folds:
        w = fold_windows(windows, k, cfg.fold_days)
        assert w["train"].start == windows["train"].start  # trains from the data start, as the final fit
        assert w["train"].end <= w["finetune"].start < w["finetune"].end <= w["test"].start
        assert w["test"].end <= windows["test"].start, "a fold reaches into the test window"
        assert (w["test"].end - w["test"].start).days == cfg.fold_days
        # the same structure as the final fit: each window moved back by the same days
        shift = windows["test"].start - w["test"].start
        assert shift == dt.timedelta(days=k * cfg.fold_days)
        assert (w["finetune"].start, w["finetune"].end) == (
            windows["finetune"].start - shift,
            windows["finetune"].end - shift,
        )
        rated.append((w["test"].start, w["test"].end))
    rated.sort()
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(rated)), "folds' test windows overlap"
    assert sum((e - s).days for s, e in rated) >= 6 * 7 or overrides, "under 6 weeks of fold days"


def test_the_default_folds_are_november_october_and_september() -> None:
    cfg = section(compose_params([]), "select", SelectConfig, source="conf")
    windows = split_cfg().windows
    tests = [fold_windows(windows, k, cfg.fold_days)["test"] for k in cfg.folds]
    assert [(str(w.start), str(w.end)) for w in tests] == [
        ("2013-11-01", "2013-12-01"),
        ("2013-10-02", "2013-11-01"),
        ("2013-09-02", "2013-10-02"),
    ]


def test_a_fold_that_leaves_no_training_window_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"select\.folds 12 x select\.fold_days 30"):
        fold_windows(split_cfg().windows, 12, 30)


def test_select_config_refuses_bad_folds() -> None:
    base = {"metric": "roc_auc", "candidates": ["a"]}
    with pytest.raises(ValueError, match="distinct whole numbers"):
        SelectConfig(**base, folds=[1, 1])
    with pytest.raises(ValueError, match="distinct whole numbers"):
        SelectConfig(**base, folds=[0])
    with pytest.raises(ValueError, match="f1 needs a decision threshold"):
        SelectConfig(metric="f1", candidates=["a"])
    assert SelectConfig(metric="f1", candidates=["a"], folds=[]).folds == []


# --------------------------------------------------------------------------------- selection ---
def write_folds(
    root: Path, probabilities: dict[int, dict[str, np.ndarray]], y: dict[int, np.ndarray]
) -> Path:
    folds = root / "folds"
    for k, p in probabilities.items():
        (folds / str(k)).mkdir(parents=True)
        write_parquet(pl.DataFrame({"label": y[k], **p}), folds / str(k) / select.FOLD_PREDICTIONS)
        write_json(folds / str(k) / select.FOLD_INFO, {"fold": k, "windows": {}})
    return folds


def crafted(noise: dict[str, float], n: int = 3000, seed: int = 0) -> tuple[dict, dict]:
    """Two folds; each candidate sees the hidden signal through its own noise (less: better)."""
    rng = np.random.default_rng(seed)
    probabilities, labels = {}, {}
    for k in (1, 2):
        signal = rng.normal(size=n)
        labels[k] = (rng.random(n) < 1 / (1 + np.exp(-(signal - 1.0)))).astype(np.int8)
        shared = rng.normal(size=n)  # candidates within noise of each other share most of their error
        probabilities[k] = {
            c: 1 / (1 + np.exp(-(signal + s * (0.9 * shared + 0.1 * rng.normal(size=n)))))
            for c, s in noise.items()
        }
    return probabilities, labels


def decide(tmp_path: Path, noise: dict[str, float], **cfg: object) -> dict:
    probabilities, labels = crafted(noise)
    folds = write_folds(tmp_path, probabilities, labels)
    cfg = {"folds": [1, 2], **cfg}  # the crafted folds
    config = SelectConfig(metric="roc_auc", candidates=list(noise), bootstrap=300, **cfg)  # type: ignore[arg-type]
    return select.decide(select.read_folds(folds, config, "label"), config, KINDS, seed=1)


def test_the_best_mean_wins_and_its_interval_excludes_zero(tmp_path: Path) -> None:
    decision = decide(tmp_path, {"lin": 2.0, "gbm": 1.0, "net": 0.4})
    assert decision["champion"] == decision["best"] == "net"
    assert decision["runner_up"] == "gbm"
    low, high = decision["interval"]
    assert 0 < low <= high, "a clear winner: champion minus runner-up stays above zero"
    table = {r["candidate"]: r for r in decision["table"]}
    assert [r["candidate"] for r in decision["table"]] == ["net", "gbm", "lin"]  # by mean
    assert not table["gbm"]["within_noise"]
    assert table["net"]["within_noise"]
    assert "trails it beyond noise" in decision["reason"]


def test_the_fold_table_is_each_folds_roc_auc_and_their_mean(tmp_path: Path) -> None:
    probabilities, labels = crafted({"lin": 2.0, "net": 0.5})
    folds = write_folds(tmp_path, probabilities, labels)
    config = SelectConfig(metric="roc_auc", candidates=["lin", "net"], bootstrap=100, folds=[1, 2])
    decision = select.decide(select.read_folds(folds, config, "label"), config, KINDS, seed=1)
    for row in decision["table"]:
        expected = [roc_auc_score(labels[k], probabilities[k][row["candidate"]]) for k in (1, 2)]
        assert row["folds"] == pytest.approx(expected, abs=1e-6)
        assert row["mean"] == pytest.approx(np.mean(expected), abs=1e-6)


@pytest.mark.parametrize(
    ("prefer", "champion"), [("higher_mean", None), ("simpler", "lin"), ("cheaper", "lin")]
)
def test_within_noise_the_declared_tie_break_decides(
    tmp_path: Path, prefer: str, champion: str | None
) -> None:
    # ens and lin are the same model up to a sliver of noise; gbm is clearly worse.
    decision = decide(tmp_path, {"gbm": 3.0, "ens": 0.50, "lin": 0.505}, prefer=prefer)
    table = {r["candidate"]: r for r in decision["table"]}
    assert table["lin"]["within_noise"]
    assert table["ens"]["within_noise"]
    assert not table["gbm"]["within_noise"]
    assert decision["champion"] == (champion or decision["best"])
    if champion and champion != decision["best"]:
        assert f"select.prefer {prefer} picks `{champion}`" in decision["reason"]


def test_lower_is_better_metrics_pick_the_smallest(tmp_path: Path) -> None:
    probabilities, labels = crafted({"lin": 2.0, "net": 0.4})
    folds = write_folds(tmp_path, probabilities, labels)
    config = SelectConfig(metric="log_loss", candidates=["lin", "net"], bootstrap=100, folds=[1, 2])
    decision = select.decide(select.read_folds(folds, config, "label"), config, KINDS, seed=1)
    assert decision["champion"] == "net"
    table = {r["candidate"]: r for r in decision["table"]}
    assert table["net"]["mean"] < table["lin"]["mean"]


def test_a_fold_with_one_class_is_refused(tmp_path: Path) -> None:
    probabilities, labels = crafted({"lin": 1.0, "net": 0.5})
    labels[2] = np.zeros_like(labels[2])
    folds = write_folds(tmp_path, probabilities, labels)
    config = SelectConfig(metric="roc_auc", candidates=["lin", "net"], folds=[1, 2])
    with pytest.raises(DataError, match=r"fold 2 .* one class only.*select.fold_days"):
        select.read_folds(folds, config, "label")


def test_a_fold_without_a_candidate_is_refused(tmp_path: Path) -> None:
    probabilities, labels = crafted({"lin": 1.0})
    folds = write_folds(tmp_path, probabilities, labels)
    config = SelectConfig(metric="roc_auc", candidates=["lin", "net"], folds=[1, 2])
    with pytest.raises(DataError, match=r"no column\(s\) \['net'\].*dvc repro fold@1"):
        select.read_folds(folds, config, "label")


def test_the_bootstrap_roc_auc_is_the_weighted_roc_auc() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.random(500), 2)  # ties
    scorer = select._Scorer("roc_auc", y, p)
    for _ in range(5):
        w = np.bincount(rng.integers(0, 500, 500), minlength=500).astype(np.float64)
        assert scorer(w) == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-12)
