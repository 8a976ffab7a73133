"""The tune stage for real on the smoke data: outputs, overrides that round-trip, determinism, errors."""

from __future__ import annotations

import csv
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from ontime.errors import ConfigError
from ontime.io import read_json
from ontime.training import tune
from ontime.training.tune import TuneError
from tests.conftest import SHRUNK, compose_params, write_params

TINY = [*SHRUNK, "model.d_block=32", "model.n_blocks=1", "model.n_frequencies=4", "model.d_num_embedding=4"]


def rng(type_: str, low: Any = None, high: Any = None, *, log: bool = False, choices: Any = None) -> dict:
    """One entry of ``tune.space``."""
    return {"type": type_, "low": low, "high": high, "log": log, "choices": choices}


SPACE = {
    "train.lr": rng("float", 1e-4, 1e-2, log=True),
    "model.d_block": rng("int", 16, 48),
    "model.dropout": rng("float", 0.0, 0.3),
}


def tune_params(path: Path, extra: Sequence[str] = (), **overrides: Any) -> Path:
    """The shrunk real config plus a small ``tune`` section (3 trials, 2 epochs, 2000 rows)."""
    params = yaml.safe_load(write_params(path, [*TINY, *extra]).read_text())
    params["tune"] = {
        "n_trials": 3, "timeout_s": 600, "pruning": False, "max_train_rows": 2000, "epochs": 2,
        "space": SPACE, **overrides,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run_tune(data: Path, out: Path, params: Path) -> None:
    tune.main(
        str(params), str(data / "data/split"), str(data / "data/features/spec.json"),
        str(out / "tune"), str(out / "tune.json"),
    )  # fmt: skip


def get(params: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        params = params[part]
    return params


def test_tune_writes_trials_best_params_and_overrides(data_run: Path, tmp_path: Path) -> None:
    params = tune_params(tmp_path / "params.yaml")
    run_tune(data_run, tmp_path / "a", params)
    out = tmp_path / "a/tune"

    with (out / "trials.csv").open() as f:
        trials = list(csv.DictReader(f))
    assert [t["number"] for t in trials] == ["0", "1", "2"]
    assert {t["state"] for t in trials} == {"COMPLETE"}
    assert list(trials[0]) == ["number", "state", "value", *SPACE]  # no wall-clock columns

    best = read_json(out / "best_params.json")
    assert list(best) == sorted(SPACE)
    for key, value in best.items():
        assert SPACE[key]["low"] <= value <= SPACE[key]["high"]
    assert isinstance(best["model.d_block"], int)

    metrics = read_json(tmp_path / "a/tune.json")
    assert metrics["n_trials_complete"] == 3
    assert metrics["n_trials_pruned"] == metrics["n_trials_failed"] == 0
    assert 0.5 < metrics["best_valid_roc_auc"] <= 1
    assert float(trials[metrics["best_trial"]]["value"]) == metrics["best_valid_roc_auc"]

    # `dvc exp run $(cat tune/best_overrides.txt)`: shell word-splitting, then Hydra's grammar
    words = subprocess.run(
        ["bash", "-c", 'printf "%s\\n" $(cat "$1")', "_", str(out / "best_overrides.txt")],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")[:-1]  # fmt: skip
    assert words[::2] == ["-S"] * len(SPACE)
    composed = compose_params([*TINY, *words[1::2]])
    assert {key: get(composed, key) for key in SPACE} == best

    run_tune(data_run, tmp_path / "b", params)  # the same search again: the same outputs, byte for byte
    for name in ("tune/trials.csv", "tune/best_params.json", "tune/best_overrides.txt", "tune.json"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "b/tune").iterdir()) == sorted(p.name for p in out.iterdir())
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["tune", "tune.json"]  # no temp files


def test_pruning_search_completes_and_counts(data_run: Path, tmp_path: Path) -> None:
    params = tune_params(tmp_path / "params.yaml", n_trials=4, epochs=3, pruning=True)
    run_tune(data_run, tmp_path, params)
    metrics = read_json(tmp_path / "tune.json")
    assert metrics["n_trials_complete"] >= 2  # the first two trials are never pruned
    # and pruning does stop a trial: the seeded sampler's third draw (lr about 1.3e-4) trails the
    # first two by far (valid ROC AUC about 0.52 against 0.57 and 0.65 after its second epoch)
    assert metrics["n_trials_pruned"] >= 1
    assert metrics["n_trials_complete"] + metrics["n_trials_pruned"] + metrics["n_trials_failed"] == 4
    with (tmp_path / "tune/trials.csv").open() as f:
        states = [t["state"] for t in csv.DictReader(f)]
    assert states.count("PRUNED") == metrics["n_trials_pruned"]


def test_no_completed_trial_is_an_error_that_writes_nothing(data_run: Path, tmp_path: Path) -> None:
    params = tune_params(
        tmp_path / "params.yaml",
        ["train.grad_clip=0", "train.warmup_epochs=0"],
        n_trials=2,
        space={"train.lr": rng("float", 1e29, 1e30, log=True)},
    )
    with pytest.raises(TuneError, match=r"no trial completed \(0 pruned, 2 failed; first error: .*train.lr"):
        run_tune(data_run, tmp_path, params)
    assert list(tmp_path.iterdir()) == [params]


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            {"model.d_token": rng("int", 8, 64)},
            r"tune.space.model.d_token is not a param of model mlp",
        ),
        (
            {"train.lrr": rng("float", 1e-4, 1e-2, log=True)},
            r"tune.space.train.lrr is not a param of train",
        ),
        (
            {"optimizer.lr": rng("float", 1e-4, 1e-2)},
            r"tune.space.optimizer.lr cannot be searched",
        ),
        (
            {"model.dropout": rng("float", 0.0, 1.0)},
            r"tune.space.model.dropout value 1.0: invalid config:\n  model.dropout: Input should be less",
        ),
        (
            {"train.lr": rng("float", 0.01, 0.001, log=True)},
            r"tune.space.train.lr: Value error, type float needs low < high",
        ),
        (
            {"train.class_weight": rng("categorical", choices=[])},
            r"tune.space.train.class_weight: Value error, type categorical needs a non-empty list",
        ),
    ],
)
def test_bad_space_is_a_config_error_before_training(
    data_run: Path, tmp_path: Path, space: dict[str, Any], message: str
) -> None:
    params = tune_params(tmp_path / "params.yaml", space=space)
    with pytest.raises(ConfigError, match=message):
        run_tune(data_run, tmp_path, params)
    assert not (tmp_path / "tune").exists()
    assert not (tmp_path / "tune.json").exists()
