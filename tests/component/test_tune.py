"""The tune stage for real on the smoke data: outputs, overrides that round-trip, determinism, errors.

best_overrides.txt must rebuild the run it came from: its data-side overrides are checked on their own
(no training) for the default data, the smoke profile, an own-data table and values that need quoting.
"""

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
from ontime.overrides import overrides_for
from ontime.training import tune
from ontime.training.tune import DATA_SECTIONS, TuneError, overrides_line
from tests.conftest import REPO, SHRUNK, compose_params, write_params

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
        str(out / "tune"), str(out / "tune.json"), config_dir=str(REPO / "conf"),
    )  # fmt: skip


def dvc_args(path: Path) -> list[str]:
    """The arguments after `dvc exp run` of the README's `eval "dvc exp run $(cat best_overrides.txt)"`.

    Run in the repository root, where a glob such as conf/*.yaml would match files if left unquoted.
    """
    script = 'dvc() { printf "%s\\0" "$@"; }; eval "dvc exp run $(cat "$1")"'
    out = subprocess.run(
        ["bash", "-c", script, "_", str(path)], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    words = out.split("\0")[:-1]
    assert words[:2] == ["exp", "run"], words
    return words[2:]


def applied(line: str, tmp_path: Path) -> dict[str, Any]:
    """params.yaml as `dvc exp run` composes it from best_overrides.txt holding ``line``."""
    path = tmp_path / "best_overrides.txt"
    path.write_text(line + "\n")
    words = dvc_args(path)
    assert words[::2] == ["-S"] * (len(words) // 2), words
    return compose_params(words[1::2])


def data_side(params: dict[str, Any]) -> str:
    """The data-bearing sections as YAML text: 15 and 15.0 or "1" and 1 differ, as in params.yaml."""
    return yaml.safe_dump({s: params[s] for s in DATA_SECTIONS if s in params})


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

    # the README's `eval "dvc exp run $(cat reports/tune/best_overrides.txt)"`, on conf/ alone: the
    # smoke profile's split windows come back as overrides, then the winner
    words = dvc_args(out / "best_overrides.txt")
    assert words[::2] == ["-S"] * (len(words) // 2)
    assert words[-2 * len(SPACE) + 1 :: 2] == [f"{k}={tune.fmt(best[k])}" for k in SPACE]
    assert "split.valid_days=5" in words  # experiment=smoke's, on the data side
    composed = compose_params(words[1::2])
    assert {key: get(composed, key) for key in SPACE} == best
    assert data_side(composed) == data_side(yaml.safe_load(params.read_text()))

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
            {"train.loss": rng("categorical", choices=[])},
            r"tune.space.train.loss: Value error, type categorical needs a non-empty list",
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


def test_bad_data_side_is_a_config_error_before_training(data_run: Path, tmp_path: Path) -> None:
    params = tune_params(tmp_path / "params.yaml")
    text = params.read_text()
    params.write_text(text.replace("  uri: null\n", "", 1))  # Hydra cannot delete a key that is null
    with pytest.raises(ConfigError, match=r"cannot be written as overrides of .*data\.uri"):
        run_tune(data_run, tmp_path, params)
    assert not (tmp_path / "tune").exists()


# --- best_overrides.txt: the data side, checked without training --------------------------------
CONF = REPO / "conf"
WINNER: dict[str, tune.Value] = {"train.lr": 0.003, "model.d_block": 32, "train.loss": "weighted_bce"}
OWN = [  # an own-data run as the README shows it
    "data=table",
    "data.tables.table=data/external/mine.csv",
    "clean.label.column=churned",
    "featurize.time_column=signup_at",
    "split.method=time",
]


def test_default_data_needs_no_data_overrides(tmp_path: Path) -> None:
    params = compose_params()
    assert overrides_for(params, DATA_SECTIONS, CONF) == []
    line = overrides_line([], WINNER)
    assert line == "-S train.lr=0.003 -S model.d_block=32 -S train.loss=weighted_bce"  # as before
    assert data_side(applied(line, tmp_path)) == data_side(params)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], ["data.tables.table=data/external/mine.csv", "data.dep=data/external/mine.csv"]),
        (["data.dep=data/external"], ["data.tables.table=data/external/mine.csv", "data.dep=data/external"]),
        (["experiment=smoke"], ["data.dep=data/external/mine.csv", "split.valid_days=5"]),
    ],
    ids=["dep-follows-table", "dep-set-apart", "with-smoke"],
)
def test_own_data_overrides_round_trip(tmp_path: Path, extra: list[str], expected: list[str]) -> None:
    params = compose_params([*OWN, *extra])
    assert data_side(params) != data_side(compose_params())  # tuned values alone would train on flights
    found = overrides_for(params, DATA_SECTIONS, CONF)
    assert found[0] == "data=table"
    assert {*expected, "clean.label.column=churned", "split.method=time"} <= set(found)
    run = applied(overrides_line(found, WINNER), tmp_path)
    assert data_side(run) == data_side(params)
    assert {key: get(run, key) for key in WINNER} == WINNER


def test_smoke_profile_round_trips(tmp_path: Path) -> None:
    params = compose_params(SHRUNK)
    found = overrides_for(params, DATA_SECTIONS, CONF)
    assert "split.windows.train.end=2013-01-25" in found
    assert all(o.startswith("split.") for o in found), found  # the default data: no data=NAME
    assert data_side(applied(overrides_line(found, WINNER), tmp_path)) == data_side(params)


def test_values_needing_quotes_survive_the_shell_and_hydra(tmp_path: Path) -> None:
    params = compose_params(["data=table"])
    params["data"]["tables"]["table"] = 'data/external/it\'s my "file" $HOME `id` ${data.name}.csv'
    params["data"]["dep"] = "conf/*.yaml"  # matches files in the repository root: must not glob
    params["clean"]["label"]["column"] = "42"  # a string that Hydra reads as an int unless quoted
    params["clean"]["label"]["positive_value"] = "yes, true"
    params["clean"]["tables"]["table"]["key"] = ["id", "signup day", "null"]
    params["featurize"]["time_format"] = "%d/%m/%Y %H:%M"
    params["seed"] = 7
    found = overrides_for(params, DATA_SECTIONS, CONF)
    line = overrides_line(found, WINNER)
    assert "\n" not in line
    run = applied(line, tmp_path)
    assert run["clean"]["label"]["column"] == "42"
    assert data_side(run) == data_side(params)


def test_params_conf_cannot_rebuild_are_an_error() -> None:
    params = compose_params(OWN)
    params["clean"]["label"]["threshold"] = 0.5
    assert "clean.label.threshold=0.5" in overrides_for(params, DATA_SECTIONS, CONF)  # a value: fine
    del params["data"]["uri"]  # but Hydra cannot delete a key whose value is null
    with pytest.raises(
        ConfigError, match=r"cannot be written as overrides of .*still differs at .*data\.uri"
    ):
        overrides_for(params, DATA_SECTIONS, CONF)
