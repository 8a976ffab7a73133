"""The request log on real files: rotation by size (whole requests, whole lines, at most N rotated
files), reopening after an outside `mv` or delete, several processes appending and rotating at once,
the settings from the environment, and where the log goes by default."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import resource
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from ontime.cli import parse_args
from ontime.errors import ConfigError
from ontime.serving import requestlog
from ontime.serving.requestlog import RequestLog, default_path, log_files, read, read_lines, record

REPO = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2013, 12, 1, 12, tzinfo=dt.UTC)


def request(n: int, flights: int = 3) -> list[dict[str, Any]]:
    """The log entries of request ``n``: ``flights`` of them, about 180 bytes each."""
    return [
        record(
            ts=T0 + dt.timedelta(seconds=n), request_id=f"req-{n}", model_version="ontime-delay:test",
            features={"flight": n * 10 + i, "carrier": "UA", "distance": 1000.0 + i}, probability=0.25,
            decision=0,
        )
        for i in range(flights)
    ]  # fmt: skip


def nbytes(entries: list[dict[str, Any]]) -> int:
    """Their size in the log."""
    return len("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries).encode())


def ids(entries: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(e["request_id"], e["features"]["flight"]) for e in entries]


def in_file(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), f"{path}: a line is cut"
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (requestlog.ENV, requestlog.MAX_BYTES_ENV, requestlog.BACKUPS_ENV):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------ rotation ---
def test_rotation_keeps_n_backups_of_whole_requests(tmp_path: Path) -> None:
    path = tmp_path / "logs/requests.jsonl"
    max_bytes = 3 * nbytes(request(10)) + 10  # three requests a file
    log = RequestLog(path, max_bytes=max_bytes, backups=3)
    written = []
    for n in range(42):
        entries = request(n)
        assert log.write(entries) == 3
        written += entries
    log.close()
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["requests.jsonl", *(f"requests.jsonl.{i}" for i in (1, 2, 3)), "requests.jsonl.lock"]
    files = log_files(path)
    assert [p.name for p in files] == [
        "requests.jsonl.3",
        "requests.jsonl.2",
        "requests.jsonl.1",
        "requests.jsonl",
    ]
    seen: set[str] = set()
    for file in files:
        entries = in_file(file)
        assert file.stat().st_size <= max_bytes
        here = {e["request_id"] for e in entries}
        assert not here & seen, f"{file.name}: a request split across files"
        seen |= here
        for rid in here:  # every request whole, in one file
            assert sum(e["request_id"] == rid for e in entries) == 3
    # what is kept is the newest part of what was written, in order
    kept = read(path)
    assert ids(kept) == ids(written[-len(kept) :])
    assert len(kept) == 4 * 3 * 3  # the 4 files are full: 3 requests of 3 flights each


def test_nothing_is_lost_below_the_backup_count_and_a_big_request_stays_whole(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    log = RequestLog(path, max_bytes=500, backups=50)
    written = []
    for n in range(12):
        entries = request(n, flights=10 if n == 5 else 1)  # request 5 alone is over 500 bytes
        log.write(entries)
        written += entries
    assert log.write([]) == 0
    log.close()
    assert ids(read(path)) == ids(written)  # every entry, oldest first, across the files
    big = [f for f in log_files(path) if {e["request_id"] for e in in_file(f)} == {"req-5"}]
    assert len(big) == 1, "the big request is alone in its file"
    assert len(in_file(big[0])) == 10
    assert big[0].stat().st_size > 500


def test_lowering_the_backup_count_deletes_the_extra_files(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    log = RequestLog(path, max_bytes=300, backups=6)
    for n in range(10):
        log.write(request(n))
    log.close()
    assert len(log_files(path)) == 7
    log = RequestLog(path, max_bytes=300, backups=2)
    log.write(request(10))
    log.close()
    assert [p.name for p in log_files(path)] == ["requests.jsonl.2", "requests.jsonl.1", "requests.jsonl"]
    assert [e["request_id"] for e in in_file(path)] == ["req-10"] * 3


def _append(path: str, worker: int, requests: int, log: RequestLog | None) -> None:
    log = log or RequestLog(path, max_bytes=2000, backups=10_000)
    for n in range(requests):
        log.write(request(worker * 1000 + n, flights=1 + n % 4))
    log.close()


def test_processes_append_and_rotate_without_losing_or_splitting(tmp_path: Path) -> None:
    """Four processes (two forked with the parent's open log, two with their own) at once."""
    path = tmp_path / "requests.jsonl"
    shared = RequestLog(path, max_bytes=2000, backups=10_000)
    shared.write(request(999, flights=1))  # the parent's files are open when it forks
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_append, args=(str(path), w, 150, shared if w % 2 else None)) for w in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    shared.close()
    files = log_files(path)
    assert len(files) > 20  # it rotated, many times
    entries = []
    where: dict[str, str] = {}
    for file in files:
        for e in in_file(file):  # every line whole JSON
            assert where.setdefault(e["request_id"], file.name) == file.name, "a request split across files"
            entries.append(e)
    expected = {
        (f"req-{w * 1000 + n}", (w * 1000 + n) * 10 + i)
        for w in range(4)
        for n in range(150)
        for i in range(1 + n % 4)
    }
    assert sorted(ids(entries)) == sorted(expected | {("req-999", 9990)})  # each once, none lost
    for w in range(4):  # each process's requests in its order
        mine = [int(rid[4:]) for rid, _ in ids(entries) if rid != "req-999" and int(rid[4:]) // 1000 == w]
        assert mine == sorted(mine)
    # one request's lines are together (one write each)
    at: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        at.setdefault(e["request_id"], []).append(i)
    assert all(rows == list(range(rows[0], rows[0] + len(rows))) for rows in at.values())


def _write_past_file_size_limit(path: str, limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    log = RequestLog(path, max_bytes=10**9, backups=1)
    log.write(request(1))
    try:
        log.write(request(2, flights=20))  # crosses the limit part-way through a line
    except OSError:
        os._exit(3)
    os._exit(0)


def test_a_failed_write_leaves_no_half_line(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    one_request = nbytes(request(1))
    proc = multiprocessing.get_context("fork").Process(
        target=_write_past_file_size_limit, args=(str(path), one_request + 1000)
    )
    proc.start()
    proc.join(30)
    assert proc.exitcode == 3  # the write failed (the file hit its size limit) ...
    assert path.stat().st_size == one_request  # ... and was cut back to the last whole request
    assert [e["request_id"] for e in in_file(path)] == ["req-1"] * 3


# ----------------------------------------------------------------------------- outside changes ---
def test_a_moved_log_is_reopened_at_its_path(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    log = RequestLog(path)
    log.write(request(1))
    moved = tmp_path / "requests.jsonl.old"
    path.rename(moved)  # `mv`, as logrotate does
    log.write(request(2))
    log.write(request(3))
    assert [e["request_id"] for e in in_file(moved)] == ["req-1"] * 3  # not written to any more
    assert [e["request_id"] for e in in_file(path)] == ["req-2"] * 3 + ["req-3"] * 3
    log.close()


def test_a_deleted_log_or_folder_is_recreated(tmp_path: Path) -> None:
    path = tmp_path / "logs/requests.jsonl"
    log = RequestLog(path)
    log.write(request(1))
    path.unlink()
    log.write(request(2))
    assert [e["request_id"] for e in in_file(path)] == ["req-2"] * 3
    shutil.rmtree(path.parent)  # the lock file goes too
    log.write(request(3))
    assert [e["request_id"] for e in in_file(path)] == ["req-3"] * 3
    assert path.with_name("requests.jsonl.lock").is_file()
    log.close()


def test_reading_takes_numbered_files_oldest_first_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    for name, n in [
        ("requests.jsonl.10", 1),
        ("requests.jsonl.2", 2),
        ("requests.jsonl.1", 3),
        ("requests.jsonl", 4),
    ]:
        (tmp_path / name).write_text("".join(json.dumps(e) + "\n" for e in request(n, flights=1)))
    for other in ("requests.jsonl.lock", "requests.jsonl.bak", "requests.jsonl.01", "other.jsonl.3"):
        (tmp_path / other).write_text("not a request\n")
    assert [e["request_id"] for e in read(path)] == ["req-1", "req-2", "req-3", "req-4"]
    assert [(f.name, n) for f, n, _ in read_lines(path)] == [
        ("requests.jsonl.10", 1), ("requests.jsonl.2", 1), ("requests.jsonl.1", 1), ("requests.jsonl", 1)
    ]  # fmt: skip
    path.unlink()  # rotated away, nothing new yet: the rotated files are still read
    assert [e["request_id"] for e in read(path)] == ["req-1", "req-2", "req-3"]
    assert read(tmp_path / "none.jsonl") == []


# ------------------------------------------------------------------------------------ settings ---
def test_rotation_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert requestlog.rotation_settings() == (50 * 1024 * 1024, 10)
    monkeypatch.setenv(requestlog.MAX_BYTES_ENV, " 1_000_000 ")
    monkeypatch.setenv(requestlog.BACKUPS_ENV, "3")
    log = RequestLog(tmp_path / "requests.jsonl")
    assert (log.max_bytes, log.backups) == (1_000_000, 3)
    assert "1000000 bytes, 3 rotated kept" in str(log)
    monkeypatch.setenv(requestlog.BACKUPS_ENV, "")  # empty: the default
    assert requestlog.rotation_settings() == (1_000_000, 10)
    for name, value, why in [
        (requestlog.MAX_BYTES_ENV, "50MB", "not an integer"),
        (requestlog.MAX_BYTES_ENV, "0", "must be at least 1"),
        (requestlog.MAX_BYTES_ENV, "-5", "must be at least 1"),
        (requestlog.BACKUPS_ENV, "ten", "not an integer"),
        (requestlog.BACKUPS_ENV, "0", "must be at least 1"),
    ]:
        with monkeypatch.context() as m:
            m.setenv(name, value)
            with pytest.raises(ConfigError, match=rf"^{name}='{value}': {why}"):
                RequestLog(tmp_path / "requests.jsonl")


def test_open_fails_at_start_on_a_folder_it_cannot_write(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    log = RequestLog(tmp_path / "file/requests.jsonl")  # a file where the folder should be
    with pytest.raises(ConfigError, match="cannot write the request log"):
        log.open()
    good = RequestLog(tmp_path / "logs/requests.jsonl")
    good.open()
    assert good.path.stat().st_size == 0
    good.close()


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    # this checkout (an editable install of it): under the repository, wherever the server starts
    assert (REPO / "dvc.yaml").is_file()
    assert default_path() == REPO / "logs/requests.jsonl"
    # a repository layout elsewhere
    repo = tmp_path / "repo"
    (repo / "src/ontime").mkdir(parents=True)
    (repo / "dvc.yaml").write_text("stages: {}\n")
    assert default_path(repo / "src/ontime") == repo / "logs/requests.jsonl"
    # a built Bento: its code under <bento>/src, no dvc.yaml around it
    bento = tmp_path / "bentoml/bentos/ontime/abc123"
    (bento / "src/ontime").mkdir(parents=True)
    (bento / "bento.yaml").write_text("name: ontime\n")
    assert default_path(bento / "src/ontime") == tmp_path / "bentoml/logs/ontime-requests.jsonl"
    monkeypatch.delenv("BENTOML_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_path(bento / "src/ontime") == tmp_path / "home/bentoml/logs/ontime-requests.jsonl"
    # $ONTIME_REQUEST_LOG first; a relative one from where the server was started ($PWD)
    monkeypatch.setenv(requestlog.ENV, str(tmp_path / "mine.jsonl"))
    assert default_path() == default_path(bento / "src/ontime") == tmp_path / "mine.jsonl"
    monkeypatch.setenv(requestlog.ENV, "logs/here.jsonl")
    monkeypatch.setenv("PWD", str(repo))
    assert default_path() == repo / "logs/here.jsonl"
    monkeypatch.setenv(requestlog.ENV, "")  # empty: as unset
    assert default_path() == REPO / "logs/requests.jsonl"
    assert RequestLog().path == REPO / "logs/requests.jsonl"


def test_monitor_reads_where_the_service_writes_by_default() -> None:
    assert parse_args(["monitor"]).log is None  # monitor.main: default_path()
