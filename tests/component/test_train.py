"""Training the PyTorch model for real on the smoke data: determinism, resume, DDP, bad input."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ontime.errors import ConfigError, DataError
from ontime.io import read_json
from ontime.training import train
from ontime.training.loop import TrainingError
from tests.conftest import BIN, SHRUNK, env, write_params

TINY = [*SHRUNK, "model.d_block=32", "model.n_blocks=1", "model.n_frequencies=4", "model.d_num_embedding=4"]


def train_args(data: Path, out: Path, params: Path) -> list[str]:
    return [
        "train",
        "--params", str(params),
        "--split", str(data / "data/split"),
        "--spec", str(data / "data/features/spec.json"),
        "--out", str(out / "model"),
        "--metrics", str(out / "train.json"),
        "--checkpoints", str(out / "ckpt"),
        "--live", str(out / "live"),
    ]  # fmt: skip


def run_train(data: Path, out: Path, params: Path) -> None:
    from ontime.cli import main

    assert main(train_args(data, out, params)) == 0


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model" / "model.safetensors"))


def test_training_writes_a_candidate_with_curves(data_run: Path, tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", [*TINY, "train.epochs=2"])
    run_train(data_run, tmp_path, params)
    metrics = read_json(tmp_path / "train.json")
    assert metrics["epochs_run"] == 2
    assert metrics["valid_roc_auc"] > 0.55
    assert {"candidate.json", "model.json", "model.safetensors", "preprocessor.json"} <= {
        p.name for p in (tmp_path / "model").iterdir()
    }
    assert not list((tmp_path / "model").glob("*.pt*"))
    assert not list((tmp_path / "model").glob("*.pkl"))
    curve = (tmp_path / "live/plots/metrics/valid/roc_auc.tsv").read_text().splitlines()
    assert len(curve) == 1 + 2  # header + one row per epoch
    import polars as pl

    from ontime.candidates import load_candidate

    test = pl.read_parquet(data_run / "data/split/test.parquet")
    p = load_candidate(tmp_path / "model").predict_proba(test)
    assert p.shape == (test.height,)
    assert ((p > 0) & (p < 1)).all()


def test_two_runs_give_identical_weights(data_run: Path, tmp_path: Path) -> None:
    params = write_params(
        tmp_path / "params.yaml", [*TINY, "train.epochs=2", "train.noise_std=0.1", "train.mask_prob=0.1"]
    )
    run_train(data_run, tmp_path / "a", params)
    run_train(data_run, tmp_path / "b", params)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)
    assert (tmp_path / "a/model/preprocessor.json").read_text() == (
        tmp_path / "b/model/preprocessor.json"
    ).read_text()


def test_resume_after_kill_gives_the_same_weights(data_run: Path, tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", [*TINY, "train.epochs=8", "train.patience=8"])
    run_train(data_run, tmp_path / "straight", params)

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [str(BIN / "ontime"), *train_args(data_run, out, params)],
        env=env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    pointer = out / "ckpt/latest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if pointer.is_file() and read_json(pointer)["epoch"] >= 1:  # two of eight epochs done
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be interrupted"
    assert not (out / "model").exists()  # nothing half-written

    resumed = subprocess.run(
        [str(BIN / "ontime"), *train_args(data_run, out, params)], env=env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stderr
    a, b = weights(tmp_path / "straight"), weights(out)
    assert all((a[k] == b[k]).all() for k in a)
    # the curves of the resumed run hold every epoch, as if never interrupted
    assert (out / "live/plots/metrics/valid/roc_auc.tsv").read_text() == (
        tmp_path / "straight/live/plots/metrics/valid/roc_auc.tsv"
    ).read_text()


def test_ctrl_c_ends_with_one_line_and_the_same_command_resumes(data_run: Path, tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", [*TINY, "train.epochs=4", "train.patience=4"])
    args = [str(BIN / "ontime"), *train_args(data_run, tmp_path, params)]
    # As from a terminal: Ctrl-C's default action in the child (a pytest-xdist worker ignores SIGINT,
    # and an ignored signal stays ignored across exec)
    proc = subprocess.Popen(
        args, env=env(), stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    pointer = tmp_path / "ckpt/latest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if pointer.is_file() and read_json(pointer)["epoch"] >= 1:  # two of four epochs done
            proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    said = re.fullmatch(
        r"ontime train: train: interrupted (?:during|after) epoch \d \(up to 4\); the checkpoint of "
        r"epoch (\d) is in (.+): re-run `dvc repro` \(or the same command\) to resume from it",
        err.splitlines()[-1],
    )
    assert said, err[-3000:]
    assert said[2] == str(tmp_path / "ckpt")
    assert int(said[1]) == read_json(pointer)["epoch"] + 1 >= 2  # the epoch on disk, as it says
    assert not (tmp_path / "model").exists()

    resumed = subprocess.run(args, env=env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"train: resuming after epoch {said[1]} (up to 4)" in resumed.stderr
    assert read_json(tmp_path / "train.json")["epochs_run"] == 4


def test_changed_params_do_not_resume_a_stale_checkpoint(data_run: Path, tmp_path: Path) -> None:
    run_train(data_run, tmp_path, write_params(tmp_path / "p1.yaml", [*TINY, "train.epochs=1"]))
    first = weights(tmp_path)
    run_train(
        data_run, tmp_path, write_params(tmp_path / "p2.yaml", [*TINY, "train.epochs=1", "train.lr=0.01"])
    )
    second = weights(tmp_path)
    assert any((first[k] != second[k]).any() for k in first)


def test_ddp_with_two_cpu_processes_writes_one_model(data_run: Path, tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", [*TINY, "train.epochs=1"])
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "ontime", *train_args(data_run, tmp_path, params),
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, env={**env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = read_json(tmp_path / "train.json")
    assert metrics["processes"] == 2
    assert len(list((tmp_path / "model").glob("model.safetensors"))) == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_unknown_model_is_a_config_error(data_run: Path, tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", TINY)
    params.write_text(params.read_text().replace("name: mlp", "name: resnet"))
    with pytest.raises(ConfigError, match=r"model.name 'resnet' is not a known model; use one of"):
        train.main(*train_args(data_run, tmp_path, params)[2::2])


def test_unknown_scaler_is_a_config_error(data_run: Path, tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", [*TINY, "preprocess.scaling=robust"])
    with pytest.raises(ConfigError, match=r"preprocess.scaling: .*'robust'"):
        train.main(*train_args(data_run, tmp_path, params)[2::2])


def test_spec_that_does_not_match_the_data(data_run: Path, tmp_path: Path) -> None:
    spec = read_json(data_run / "data/features/spec.json")
    spec["features"].append({"name": "gate_number", "kind": "numeric", "dtype": "Int64", "nullable": False})
    bad_spec = tmp_path / "spec.json"
    from ontime.io import write_json

    write_json(bad_spec, spec)
    params = write_params(tmp_path / "params.yaml", TINY)
    args = train_args(data_run, tmp_path, params)
    args[args.index("--spec") + 1] = str(bad_spec)
    with pytest.raises(DataError, match=r"\['gate_number'\] of the feature spec are missing"):
        train.main(*args[2::2])
    assert not (tmp_path / "model").exists()


def test_nan_loss_is_reported_with_a_fix(data_run: Path, tmp_path: Path) -> None:
    params = write_params(
        tmp_path / "params.yaml", [*TINY, "train.lr=1e30", "train.grad_clip=0", "train.warmup_epochs=0"]
    )
    with pytest.raises(TrainingError, match=r"the loss became (nan|inf).*lower train.lr"):
        train.main(*train_args(data_run, tmp_path, params)[2::2])
    assert not (tmp_path / "model").exists()
    assert not (tmp_path / "train.json").exists()


NO_CUDA = "train.device is cuda, but no CUDA device is visible; use auto or cpu"


def test_cli_reports_training_errors_without_traceback(data_run: Path, tmp_path: Path) -> None:
    # No CUDA device is visible to this run on any machine (CUDA_VISIBLE_DEVICES is empty), so
    # asking for one is the same clear error everywhere: its fix, exit code 2, no traceback.
    params = write_params(tmp_path / "params.yaml", [*TINY, "train.device=cuda"])
    proc = subprocess.run(
        [str(BIN / "ontime"), *train_args(data_run, tmp_path, params)],
        env={**env(), "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert NO_CUDA in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "model").exists()
    assert not (tmp_path / "train.json").exists()


@pytest.mark.parametrize("cuda", ["hidden", "as_the_machine_has"])
def test_train_device_resolves_to_what_is_visible(cuda: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same assertions on every machine: "hidden" checks a machine without CUDA everywhere,
    # "as_the_machine_has" checks this machine's real answer (cuda on a GPU machine, cpu elsewhere).
    import os

    import torch

    from ontime.training.loop import setup_runtime

    if cuda == "hidden":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8"))
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    visible = torch.cuda.is_available()
    expected = {
        "cpu": "cpu",
        "auto": "cuda" if visible else "cpu",
        "cuda": "cuda" if visible else f"TrainingError: {NO_CUDA}",
    }

    def resolve(device: str) -> str:
        try:
            return setup_runtime(device, threads).device.type
        except TrainingError as exc:
            return f"TrainingError: {exc}"

    try:
        assert {device: resolve(device) for device in expected} == expected
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def test_bagging_over_seeds_averages_members(data_run: Path, tmp_path: Path) -> None:
    import numpy as np
    import polars as pl

    from ontime.candidates import load_candidate

    params = write_params(tmp_path / "params.yaml", [*TINY, "train.epochs=1", "train.bagging_seeds=2"])
    run_train(data_run, tmp_path, params)
    bag = load_candidate(tmp_path / "model")
    assert bag.name == "base"
    members = [load_candidate(tmp_path / "model/members" / n) for n in ("base_seed42", "base_seed43")]
    test = pl.read_parquet(data_run / "data/split/test.parquet")
    p = [m.predict_proba(test) for m in members]
    assert not np.allclose(p[0], p[1])  # different seeds, different models
    assert np.allclose(bag.predict_proba(test), (p[0] + p[1]) / 2)
    # the studies' in-memory bag of the same members is the saved bag
    from ontime.studies import one

    in_memory = one("bag", members)
    assert in_memory.name == "bag"
    assert np.array_equal(in_memory.predict_proba(test), bag.predict_proba(test))
    metrics = read_json(tmp_path / "train.json")
    assert metrics["bagging_seeds"] == 2
    assert len(metrics["members_valid_roc_auc"]) == 2

    # fine-tuning a bag fine-tunes each member and keeps the bag
    from ontime.training import finetune

    out = tmp_path / "ft"
    finetune.main(
        str(write_params(tmp_path / "ft.yaml", [*TINY, "finetune.epochs=1"])), str(tmp_path / "model"),
        str(data_run / "data/split"), str(data_run / "data/features/spec.json"), str(out / "model"),
        str(out / "ft.json"), str(out / "ckpt"), str(out / "live"),
    )  # fmt: skip
    tuned = load_candidate(out / "model")
    assert tuned.name == "finetuned"
    assert sorted(p.name for p in (out / "model/members").iterdir()) == [
        "finetuned_seed42",
        "finetuned_seed43",
    ]
    assert tuned.predict_proba(test).shape == (test.height,)


def test_refit_replays_the_chosen_epochs_on_train_plus_valid(data_run: Path, tmp_path: Path) -> None:
    """train.refit: the same first fit (same metrics), then a model trained from the same initial
    weights on train + train_valid for best_epoch epochs; that model is the candidate."""
    import polars as pl

    from ontime.candidates import load_candidate

    common = [*TINY, "train.epochs=3", "train.patience=3"]
    run_train(data_run, tmp_path / "plain", write_params(tmp_path / "a.yaml", [*common, "train.refit=false"]))
    run_train(data_run, tmp_path / "refit", write_params(tmp_path / "b.yaml", [*common, "train.refit=true"]))
    plain, refit = read_json(tmp_path / "plain/train.json"), read_json(tmp_path / "refit/train.json")
    assert {k: v for k, v in refit.items() if k != "refit_rows"} == plain  # the first fit is the same
    split = data_run / "data/split"
    rows = (
        pl.read_parquet(split / "train.parquet").height
        + pl.read_parquet(split / "train_valid.parquet").height
    )
    assert refit["refit_rows"] == rows
    a, b = weights(tmp_path / "plain"), weights(tmp_path / "refit")
    assert any(not (a[k] == b[k]).all() for k in a)  # another model: it saw the validation days
    info = read_json(tmp_path / "refit/model/candidate.json")
    assert info["trained_on"] == ["train", "train_valid"]
    test = pl.read_parquet(split / "test.parquet")
    p = load_candidate(tmp_path / "refit/model").predict_proba(test)
    assert ((p > 0) & (p < 1)).all()
