"""Resuming training on the smoke data: only a checkpoint of the same code resumes, and a resumed run
writes the same files, byte for byte, as a run that was never interrupted."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

import ontime
from ontime.io import read_json
from ontime.training import loop
from tests.conftest import SHRUNK, write_params
from tests.test_train import train_args

TINY = [*SHRUNK, "model.d_block=32", "model.n_blocks=1", "model.n_frequencies=4", "model.d_num_embedding=4"]
EPOCH_LINE = re.compile(r"^train epoch \d+/\d+: train loss")


class Interrupted(BaseException):
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

    caplog.clear()  # `dvc repro -f train`: same code, params and data: the finished run resumes
    run_train(data_run, tmp_path, params)
    assert epochs_trained(caplog) == 0
    assert "resuming after epoch 1" in caplog.text
    assert outputs(tmp_path) == first

    caplog.clear()  # the code changed: the checkpoint is not resumed, training starts afresh
    monkeypatch.setattr(loop, "code_hash", lambda root=None: "other code")
    run_train(data_run, tmp_path, params)
    assert epochs_trained(caplog) == 2
    assert "starting afresh" in caplog.text
    assert outputs(tmp_path) == first  # the same computation from scratch: the same bytes


def test_an_early_stopped_run_resumes_with_the_same_metrics(
    data_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ontime.training.loop")
    # a learning rate too small to move the validation ROC AUC: the run stops after its second epoch
    params = write_params(
        tmp_path / "params.yaml", [*TINY, "train.epochs=4", "train.patience=1", "train.lr=1e-12"]
    )
    run_train(data_run, tmp_path, params)
    assert read_json(tmp_path / "train.json")["epochs_run"] == 2
    first = outputs(tmp_path)
    caplog.clear()
    run_train(data_run, tmp_path, params)
    assert epochs_trained(caplog) == 0
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
            raise Interrupted

    monkeypatch.setattr(loop.Checkpoints, "save", save_then_die)
    out = tmp_path / "interrupted"
    with pytest.raises(Interrupted):
        run_train(data_run, out, params)
    assert not (out / "model").exists()  # nothing half-written
    monkeypatch.undo()

    caplog.clear()
    run_train(data_run, out, params)
    assert "resuming after epoch 1" in caplog.text
    assert epochs_trained(caplog) == 2
    straight = outputs(tmp_path / "straight")
    assert {"live/metrics.json", "live/plots/metrics/valid/roc_auc.tsv", "train.json"} <= set(straight)
    resumed = outputs(out)
    assert resumed.keys() == straight.keys()
    assert [k for k in straight if resumed[k] != straight[k]] == []
