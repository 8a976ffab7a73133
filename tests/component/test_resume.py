"""Resuming training on the smoke data: only a checkpoint of the same code resumes, and a resumed run
writes the same files, byte for byte, as a run that was never interrupted; Ctrl-C ends with one line
and a checkpoint to resume from; ONTIME_FRESH=1 retrains from scratch; what the bar and the log say."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import ontime
from ontime.errors import ConfigError, Interrupted
from ontime.io import read_json
from ontime.training import loop, train
from tests.component.test_train import train_args
from tests.conftest import SHRUNK, write_params

TINY = [*SHRUNK, "model.d_block=32", "model.n_blocks=1", "model.n_frequencies=4", "model.d_num_embedding=4"]
EPOCH_LINE = re.compile(r"^train epoch \d+ \(up to \d+\): train loss")
FRESH = "`ONTIME_FRESH=1 dvc repro -f -s train` retrains from scratch instead"


class Killed(BaseException):
    """Stands for a kill right after a checkpoint was written."""


def run_train(data: Path, out: Path, params: Path) -> None:
    from ontime.cli import main

    assert main(train_args(data, out, params)) == 0


def outputs(out: Path) -> dict[str, bytes]:
    """Every file of the train stage's outputs (model, metrics, dvclive folder) by relative path."""
    files = [out / "train.json", *(p for d in ("model", "live") for p in sorted((out / d).rglob("*")))]
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in files if p.is_file()}


def epochs_trained(caplog: pytest.LogCaptureFixture) -> int:
    return sum(bool(EPOCH_LINE.match(r.getMessage())) for r in caplog.records)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the training loop logged, in order."""
    return [r.getMessage() for r in caplog.records if r.name == loop.log.name]


def caught(run: Callable[[], Any]) -> Any:
    """``run()``; a KeyboardInterrupt getting out (a traceback for the user) fails this test only."""
    try:
        return run()
    except KeyboardInterrupt:
        pytest.fail("a KeyboardInterrupt got out of training: the user would see a traceback")


def checkpointed_epoch(ckpt: Path) -> int:
    """The epoch (counted from 1) whose checkpoint is on disk."""
    return int(read_json(ckpt / "latest.json")["epoch"]) + 1


def test_code_hash_covers_every_python_file_of_the_package(tmp_path: Path) -> None:
    package = Path(ontime.__file__).parent
    copy = Path(shutil.copytree(package, tmp_path / "ontime", ignore=shutil.ignore_patterns("__pycache__")))
    assert loop.code_hash(copy) == loop.code_hash()  # relative paths and bytes, not the location
    (copy / "README.txt").write_text("not code\n")
    assert loop.code_hash(copy) == loop.code_hash()
    edited = copy / "training/loop.py"
    edited.write_text(edited.read_text() + "\n# an edit\n")
    assert loop.code_hash(copy) != loop.code_hash()
    edited.unlink()
    assert loop.code_hash(copy) != loop.code_hash()


def test_a_finished_run_resumes_only_with_the_same_code(
    data_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="ontime.training.loop")
    params = write_params(tmp_path / "params.yaml", [*TINY, "train.epochs=2", "train.patience=2"])
    run_train(data_run, tmp_path, params)
    assert epochs_trained(caplog) == 2
    first = outputs(tmp_path)

    caplog.clear()  # `dvc repro -f -s train`: same code, params and data: the finished run resumes
    run_train(data_run, tmp_path, params)
    assert epochs_trained(caplog) == 0
    assert (
        f"train: resuming after epoch 2 (up to 2) from the checkpoint in {tmp_path / 'ckpt'}: that run had "
        f"finished, no epoch is left to train; {FRESH}"
    ) in messages(caplog)
    assert outputs(tmp_path) == first

    caplog.clear()  # the code changed: the checkpoint is not resumed, training starts afresh
    monkeypatch.setattr(loop, "code_hash", lambda root=None: "other code")
    run_train(data_run, tmp_path, params)
    assert epochs_trained(caplog) == 2
    assert "starting afresh" in caplog.text
    assert outputs(tmp_path) == first  # the same computation from scratch: the same bytes


def test_an_early_stopped_run_resumes_with_its_real_epochs_run(
    data_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ontime.training.loop")
    # a learning rate too small to move the validation ROC AUC: the run stops after its second epoch
    params = write_params(
        tmp_path / "params.yaml", [*TINY, "train.epochs=4", "train.patience=1", "train.lr=1e-12"]
    )
    run_train(data_run, tmp_path, params)
    ran = epochs_trained(caplog)
    assert ran == 2  # stopped early: fewer than the 4 epochs it could have run
    assert read_json(tmp_path / "train.json")["epochs_run"] == ran
    first = outputs(tmp_path)
    caplog.clear()
    run_train(data_run, tmp_path, params)
    assert epochs_trained(caplog) == 0
    assert (
        f"train: resuming after epoch 2 (up to 4) from the checkpoint in {tmp_path / 'ckpt'}: that run had "
        f"finished (stopped early), no epoch is left to train; {FRESH}"
    ) in messages(caplog)
    assert read_json(tmp_path / "train.json")["epochs_run"] == ran  # the epochs the first run ran, not 4
    assert outputs(tmp_path) == first


def test_an_interrupted_run_resumes_to_identical_files(
    data_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="ontime.training.loop")
    params = write_params(
        tmp_path / "params.yaml", [*TINY, "train.epochs=4", "train.patience=4", "train.noise_std=0.1"]
    )
    run_train(data_run, tmp_path / "straight", params)

    save = loop.Checkpoints.save

    def save_then_die(self: loop.Checkpoints, epoch: int, **kwargs: Any) -> None:
        save(self, epoch, **kwargs)
        if epoch == 1:  # two of four epochs done
            raise Killed

    monkeypatch.setattr(loop.Checkpoints, "save", save_then_die)
    out = tmp_path / "interrupted"
    with pytest.raises(Killed):
        run_train(data_run, out, params)
    assert not (out / "model").exists()  # nothing half-written
    monkeypatch.undo()

    caplog.clear()
    run_train(data_run, out, params)
    assert "train: resuming after epoch 2 (up to 4)" in caplog.text
    assert "continuing with epoch 3" in caplog.text
    assert epochs_trained(caplog) == 2
    straight = outputs(tmp_path / "straight")
    assert {"live/metrics.json", "live/plots/metrics/valid/roc_auc.tsv", "train.json"} <= set(straight)
    resumed = outputs(out)
    assert resumed.keys() == straight.keys()
    assert [k for k in straight if resumed[k] != straight[k]] == []


def test_ctrl_c_ends_with_one_line_and_a_rerun_resumes_to_the_same_files(
    data_run: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ontime.cli import main

    caplog.set_level(logging.INFO, logger="ontime.training.loop")
    params = write_params(
        tmp_path / "params.yaml", [*TINY, "train.epochs=4", "train.patience=4", "train.noise_std=0.1"]
    )
    run_train(data_run, tmp_path / "straight", params)

    evaluate, calls = loop.evaluate_arrays, []

    def ctrl_c_in_epoch_3(*args: Any, **kwargs: Any) -> dict[str, float]:
        calls.append(1)
        if len(calls) == 3:  # epoch 3 trained, not yet validated nor checkpointed
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_arrays", ctrl_c_in_epoch_3)
    out = tmp_path / "interrupted"
    capsys.readouterr()
    assert caught(lambda: main(train_args(data_run, out, params))) == 130  # as a shell's Ctrl-C
    err = capsys.readouterr().err
    assert err == (
        f"ontime train: train: interrupted during epoch 3 (up to 4); the checkpoint of epoch 2 is in "
        f"{out / 'ckpt'}: re-run `dvc repro` (or the same command) to resume from it\n"
    )  # one line, no traceback
    assert checkpointed_epoch(out / "ckpt") == 2
    assert not (out / "model").exists()
    monkeypatch.undo()

    caplog.clear()
    run_train(data_run, out, params)
    assert "train: resuming after epoch 2 (up to 4)" in caplog.text
    assert epochs_trained(caplog) == 2  # epochs 3 and 4
    straight, resumed = outputs(tmp_path / "straight"), outputs(out)
    assert "model/model.safetensors" in straight
    assert resumed.keys() == straight.keys()
    assert [k for k in straight if resumed[k] != straight[k]] == []


@pytest.fixture
def python_sigint() -> Iterator[None]:
    """Python's own Ctrl-C handler, as in a terminal: a pytest-xdist worker ignores SIGINT."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("python_sigint")
def test_ctrl_c_while_a_checkpoint_is_written_keeps_that_epoch(
    data_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = write_params(tmp_path / "params.yaml", [*TINY, "train.epochs=4", "train.patience=4"])
    save = loop.Checkpoints.save

    def ctrl_c_then_save(self: loop.Checkpoints, epoch: int, **kwargs: Any) -> None:
        if epoch == 1:  # Ctrl-C as the checkpoint of epoch 2 starts to be written
            os.kill(os.getpid(), signal.SIGINT)
        save(self, epoch, **kwargs)

    monkeypatch.setattr(loop.Checkpoints, "save", ctrl_c_then_save)
    with pytest.raises(Interrupted) as info:
        caught(lambda: train.main(*train_args(data_run, tmp_path, params)[2::2]))
    assert str(info.value) == (
        f"train: interrupted after epoch 2 (up to 4); the checkpoint of epoch 2 is in {tmp_path / 'ckpt'}: "
        "re-run `dvc repro` (or the same command) to resume from it"
    )
    assert checkpointed_epoch(tmp_path / "ckpt") == 2


def test_ontime_fresh_retrains_from_scratch_to_the_same_files(
    data_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="ontime.training.loop")
    params = write_params(
        tmp_path / "params.yaml", [*TINY, "train.epochs=2", "train.patience=2", "train.noise_std=0.1"]
    )
    run_train(data_run, tmp_path, params)
    first = outputs(tmp_path)
    old = read_json(tmp_path / "ckpt/latest.json")

    caplog.clear()  # `ONTIME_FRESH=1 dvc repro -f -s train`: the finished run's checkpoint is not resumed
    monkeypatch.setenv("ONTIME_FRESH", "1")
    stale = tmp_path / "ckpt/epoch-0009"  # an old epoch folder `save` left behind goes too
    stale.mkdir()
    run_train(data_run, tmp_path, params)
    assert (
        f"train: ONTIME_FRESH=1: removed the checkpoint of epoch 2 in {tmp_path / 'ckpt'}; "
        "training from scratch"
    ) in messages(caplog)
    assert "resuming" not in caplog.text
    assert epochs_trained(caplog) == 2
    assert not stale.exists()
    assert read_json(tmp_path / "ckpt/latest.json") == old  # the new run's own checkpoint
    assert outputs(tmp_path) == first  # from scratch, the same bytes: dvc.lock stays true

    # a Ctrl-C under ONTIME_FRESH=1 says to resume without it (with it, a re-run starts over)
    fit = train.fit

    def fit_with_ctrl_c_in_epoch_2(*args: Any, **kwargs: Any) -> loop.FitResult:
        def ctrl_c(epoch: int, row: dict[str, float]) -> None:
            if epoch == 1:  # epoch 2 validated, not yet checkpointed
                raise KeyboardInterrupt

        return fit(*args, **{**kwargs, "on_epoch": ctrl_c})

    monkeypatch.setattr(train, "fit", fit_with_ctrl_c_in_epoch_2)
    with pytest.raises(
        Interrupted,
        match=r"during epoch 2 \(up to 2\); the checkpoint of epoch 1 is in "
        r".*\(or the same command without ONTIME_FRESH=1\) to resume from it$",
    ):
        caught(lambda: train.main(*train_args(data_run, tmp_path, params)[2::2]))


@pytest.mark.parametrize("value", ["", "0", "1", "yes"])
def test_ontime_fresh_takes_1_or_nothing(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONTIME_FRESH", value)
    if value == "yes":
        with pytest.raises(ConfigError, match=r"ONTIME_FRESH is 'yes'; set it to 1 to retrain from scratch"):
            loop.fresh_requested()
    else:
        assert loop.fresh_requested() is (value == "1")


def test_the_bar_and_the_log_say_up_to_and_early_stopping(
    data_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="ontime.training.loop")
    descs: list[str] = []

    def tqdm(iterable: Any, *, desc: str, **kwargs: Any) -> Any:
        descs.append(desc)
        return real_tqdm(iterable, desc=desc, **kwargs)

    real_tqdm = loop.tqdm
    monkeypatch.setattr(loop, "tqdm", tqdm)
    # the learning rate of the early-stopped run above: it stops after epoch 2 of up to 4
    params = write_params(
        tmp_path / "params.yaml",
        [*TINY, "train.epochs=4", "train.patience=1", "train.lr=1e-12", "train.refit=true"],
    )
    run_train(data_run, tmp_path, params)
    # the refit runs exactly the chosen epochs (the best was the first): "of 1", not "up to"
    assert descs == ["train epoch 1 (up to 4)", "train epoch 2 (up to 4)", "refit epoch 1 of 1"]
    said = messages(caplog)
    assert said[0] == (
        "train: up to 4 epochs, early stopping after 1 without a better validation ROC AUC; "
        f"checkpoints in {tmp_path / 'ckpt'} (an interrupted run resumes)"
    )
    assert [m.split(":")[0] for m in said if EPOCH_LINE.match(m)] == [
        "train epoch 1 (up to 4)",
        "train epoch 2 (up to 4)",
    ]
    assert "train: early stop after epoch 2 (up to 4): no better validation ROC AUC for 1 epochs" in said
    assert any(m.startswith("refit epoch 1 of 1: train loss") for m in said), said
