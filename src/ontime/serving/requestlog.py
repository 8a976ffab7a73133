"""The request log: one JSON line per scored flight, the input of ``ontime monitor``.

Each line is exactly::

    {"ts": "2013-12-01T12:00:00.123456+00:00", "request_id": "<uuid4, one per HTTP request>",
     "model_version": "ontime-delay:<version>", "key": "UA|1545|EWR|2013-12-01T10:00:00Z",
     "features": {"<feature>": <value>, ...}, "probability": 0.42, "decision": 0}

``key`` identifies the record: the values of the request fields named by params ``serve.key``
(carrier, flight, origin, scheduled hour for the default data), joined by ``|`` (``flight_key``;
a date-time in UTC as ``YYYY-MM-DDTHH:MM:SSZ``); null when ``serve.key`` is empty. Late labels
(``ontime outcomes``) carry the same key, and ``ontime monitor --outcomes`` joins on it.

``features`` holds the model's feature columns after online featurization (the names and values the
model saw, as in the offline feature table), ``decision`` is 1 when ``probability`` reaches the
model's threshold.

Where: ``default_path()`` (``$ONTIME_REQUEST_LOG``, else ``<repository>/logs/requests.jsonl``, else
``$BENTOML_HOME/logs/ontime-requests.jsonl``).

Rotation by size, as ``logging.handlers.RotatingFileHandler``: when a request's entries would take
the file past ``$ONTIME_REQUEST_LOG_MAX_BYTES`` (default 50 MiB), ``requests.jsonl`` becomes
``requests.jsonl.1`` (``.1`` becomes ``.2``, ... up to ``.N`` with ``N = $ONTIME_REQUEST_LOG_BACKUPS``,
default 10; older ones are deleted) and a new file starts. The whole log therefore takes at most
about ``(N + 1) * max_bytes``. ``read_lines`` and ``ontime monitor`` read the backups and the file
oldest first.

Several worker processes (and threads) append to the same file: every write, and any rotation, runs
under an exclusive ``fcntl.flock`` on ``<log>.lock`` (a file beside the log, never rotated), so that
one process's rotation never races another's append. One request's entries go out in one ``write``
(``O_APPEND``), never split across files; a write that fails part-way is cut back to the last whole
line. Before each write the path is compared with the open file (device and inode, as
``logging.handlers.WatchedFileHandler``): a log moved away (``mv``, logrotate) or deleted is reopened
at its path, so nothing is written into the moved file any more.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ontime
from ontime.errors import ConfigError

ENV = "ONTIME_REQUEST_LOG"
MAX_BYTES_ENV = "ONTIME_REQUEST_LOG_MAX_BYTES"
BACKUPS_ENV = "ONTIME_REQUEST_LOG_BACKUPS"
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_BACKUPS = 10
REPO_LOG = "logs/requests.jsonl"  # under the repository root (the folder holding dvc.yaml)
BENTO_LOG = "logs/ontime-requests.jsonl"  # under $BENTOML_HOME, when no repository is around
LOCK_SUFFIX = ".lock"
KEYS = ("ts", "request_id", "model_version", "key", "features", "probability", "decision")
KEY_SEPARATOR = "|"


def default_path(package_dir: str | Path | None = None) -> Path:
    """Where the request log is (the service writes it, ``ontime monitor`` reads it), first of:

    1. ``$ONTIME_REQUEST_LOG``, when set and not empty; a relative path is taken from the folder the
       server was started in (``$PWD``, kept by the shell; not the process's cwd, which
       ``bentoml serve`` moves into the Bento's files).
    2. ``<repository>/logs/requests.jsonl`` when ``ontime`` runs from a checkout (an editable
       install: ``src/ontime``, the package folder, two levels under a folder holding ``dvc.yaml``),
       wherever the server is started.
    3. ``$BENTOML_HOME/logs/ontime-requests.jsonl`` (``BENTOML_HOME`` defaults to ``~/bentoml``, as
       in BentoML) otherwise: a built Bento (its code has no repository around it) or a plain install.

    ``package_dir``: the ``ontime`` package folder (default: the imported one), for tests.
    """
    env = os.environ.get(ENV)
    if env:
        path = Path(env).expanduser()
        if path.is_absolute():
            return path
        launched = Path(os.environ.get("PWD") or ".")
        return (launched if launched.is_absolute() and launched.is_dir() else Path.cwd()) / path
    package = Path(package_dir if package_dir is not None else Path(ontime.__file__).parent).resolve()
    root = package.parents[1]
    if package.parent.name == "src" and (root / "dvc.yaml").is_file():
        return root / REPO_LOG
    home = Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml").expanduser()
    return home / BENTO_LOG


def _env_int(name: str, default: int, minimum: int, what: str) -> int:
    """An integer setting from the environment, at least ``minimum``; a ConfigError naming it."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: not an integer; {what} (unset: {default})") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be at least {minimum}; {what} (unset: {default})")
    return value


def rotation_settings() -> tuple[int, int]:
    """``(max_bytes, backups)`` from ``$ONTIME_REQUEST_LOG_MAX_BYTES`` and
    ``$ONTIME_REQUEST_LOG_BACKUPS``; a bad value is a ConfigError naming the variable."""
    max_bytes = _env_int(
        MAX_BYTES_ENV, DEFAULT_MAX_BYTES, 1, "the request log's size in bytes that starts a new file"
    )
    backups = _env_int(BACKUPS_ENV, DEFAULT_BACKUPS, 1, "how many rotated request logs (.1 ... .N) to keep")
    return max_bytes, backups


def _backups(path: Path) -> dict[int, Path]:
    """The rotated files of the log at ``path`` that exist (``<name>.1``, ``<name>.2``, ...) by number."""
    pattern = re.compile(re.escape(path.name) + r"\.([1-9][0-9]*)")
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return {}
    found = {int(m.group(1)): path.parent / n for n in names if (m := pattern.fullmatch(n))}
    return {i: p for i, p in found.items() if p.is_file()}


def log_files(path: str | Path) -> list[Path]:
    """The log at ``path`` and its rotated files that exist, oldest first: ``.N`` ... ``.1``, then
    the log itself (every numbered file found, not only up to the configured count)."""
    path = Path(path)
    backups = _backups(path)
    return [backups[i] for i in sorted(backups, reverse=True)] + ([path] if path.is_file() else [])


def _plain(value: Any) -> Any:
    """A JSON-safe value: non-finite floats (never sent by a valid request) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def key_part(value: Any) -> str:
    """One field of a key as text: a date-time in UTC (naive: taken as UTC) as
    ``YYYY-MM-DDTHH:MM:SSZ``, a date as ``YYYY-MM-DD``, a whole float as an integer, else ``str``."""
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC) if value.tzinfo else value
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def flight_key(values: Mapping[str, Any], fields: Iterable[str]) -> str | None:
    """The key of a record: its ``fields`` (params ``serve.key``) joined by ``|``; None for no fields.

    >>> flight_key({"carrier": "UA", "flight": 1545, "origin": "EWR",
    ...             "time_hour": dt.datetime(2013, 1, 1, 10, tzinfo=dt.UTC)},
    ...            ["carrier", "flight", "origin", "time_hour"])
    'UA|1545|EWR|2013-01-01T10:00:00Z'
    """
    fields = list(fields)
    if not fields:
        return None
    return KEY_SEPARATOR.join(key_part(values.get(f)) for f in fields)


def record(
    *,
    ts: dt.datetime,
    request_id: str,
    model_version: str,
    key: str | None = None,
    features: Mapping[str, Any],
    probability: float,
    decision: int,
) -> dict[str, Any]:
    """One log entry, keys in the documented order."""
    return {
        "ts": ts.astimezone(dt.UTC).isoformat(),
        "request_id": request_id,
        "model_version": model_version,
        "key": key,
        "features": {k: _plain(v) for k, v in features.items()},
        "probability": float(probability),
        "decision": int(decision),
    }


def _same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` is still the file open as ``fd`` (same device and inode)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (opened.st_dev, opened.st_ino)


class RequestLog:
    """Appends entries to a JSON Lines file, rotated by size (folder created on first use).

    ``max_bytes``, ``backups``: default from the environment (``rotation_settings``).
    """

    def __init__(
        self, path: str | Path | None = None, *, max_bytes: int | None = None, backups: int | None = None
    ) -> None:
        self.path = Path(path) if path is not None else default_path()
        env_max, env_backups = rotation_settings()
        self.max_bytes = env_max if max_bytes is None else max_bytes
        self.backups = env_backups if backups is None else backups
        if self.max_bytes < 1 or self.backups < 1:
            raise ConfigError(f"max_bytes={self.max_bytes}, backups={self.backups}: both must be at least 1")
        self.lock_path = self.path.with_name(self.path.name + LOCK_SUFFIX)
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._pid = os.getpid()
        self._thread_lock = threading.Lock()

    def __str__(self) -> str:
        return f"{self.path} (new file past {self.max_bytes} bytes, {self.backups} rotated kept)"

    # ---------------------------------------------------------------------------------- files ---
    def _after_fork(self) -> None:
        """A forked child shares the parent's open files (and so its flock): it opens its own."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._thread_lock = threading.Lock()
            for fd in (self._fd, self._lock_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._lock_fd = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the exclusive lock of ``<log>.lock`` (reopened when it was moved or deleted)."""
        while True:
            if self._lock_fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            if _same_file(self.lock_path, self._lock_fd):
                break
            os.close(self._lock_fd)  # another process made a new lock file: lock that one
            self._lock_fd = None
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _current(self) -> int:
        """The log's file at its path, (re)opened when it is not open or was moved or deleted."""
        if self._fd is not None and not _same_file(self.path, self._fd):
            os.close(self._fd)
            self._fd = None
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def _rotate(self) -> None:
        """``.i`` -> ``.i+1`` (from the oldest kept), the log -> ``.1``; past ``.N`` is deleted."""
        for i, old in sorted(_backups(self.path).items(), reverse=True):
            if i >= self.backups:
                if i > self.backups:
                    old.unlink(missing_ok=True)
                continue  # .N: overwritten by .N-1 below, or kept when there is none
            os.replace(old, self.path.with_name(f"{self.path.name}.{i + 1}"))
        with contextlib.suppress(FileNotFoundError):  # deleted from outside meanwhile: nothing to keep
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def open(self) -> None:
        """Create the folder, lock file and log now (the first write does it otherwise): a service
        calls it at start, to fail there on a location it cannot write."""
        self._after_fork()
        try:
            with self._thread_lock, self._locked():
                self._current()
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot write the request log ({exc}); set {ENV}") from exc

    # ---------------------------------------------------------------------------------- write ---
    def write(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Append ``entries`` (one request's) in one write, into one file; returns how many."""
        lines = [json.dumps(e, allow_nan=False, separators=(",", ":")) + "\n" for e in entries]
        if not lines:
            return 0
        data = "".join(lines).encode("utf-8")
        self._after_fork()
        with self._thread_lock, self._locked():
            fd = self._current()
            size = os.fstat(fd).st_size
            if size > 0 and size + len(data) > self.max_bytes:
                self._rotate()
                fd, size = self._current(), 0
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(fd, view) :]
            except BaseException:
                os.ftruncate(fd, size)  # no half line, no part of a request (the lock keeps others out)
                raise
        return len(lines)

    def close(self) -> None:
        with self._thread_lock:
            for fd in (self._fd, self._lock_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._lock_fd = None


# ------------------------------------------------------------------------------------ reading ---
def read_lines(path: str | Path) -> Iterator[tuple[Path, int, bytes]]:
    """``(file, line number, line without its newline)`` for every line of the log at ``path`` and
    its rotated files, oldest first (``log_files``).

    A consistent snapshot: the files are listed, opened and measured under a shared lock of
    ``<log>.lock`` (when there is one), which the writer holds exclusively to append and rotate; the
    lines written later, and a rotation meanwhile, are not seen, and no line is read half-written.
    """
    path = Path(path)
    opened: list[tuple[Path, Any, int]] = []
    try:
        with _shared_lock(path.with_name(path.name + LOCK_SUFFIX)):
            for file in log_files(path):
                try:
                    f = file.open("rb")
                except FileNotFoundError:  # deleted from outside since listed
                    continue
                opened.append((file, f, os.fstat(f.fileno()).st_size))
        for file, f, size in opened:
            left = size
            for number, raw in enumerate(f, start=1):
                if left <= 0:
                    break
                line = raw[:left]
                left -= len(raw)
                yield file, number, line.rstrip(b"\n")
    finally:
        for _, f, _ in opened:
            f.close()


@contextlib.contextmanager
def _shared_lock(lock_path: Path) -> Iterator[None]:
    """A shared flock of the writers' lock file; none when there is none (or it cannot be read)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def read(path: str | Path) -> list[dict[str, Any]]:
    """All entries of a request log and its rotated files, oldest first (for tests and tools)."""
    return [json.loads(line) for _, _, line in read_lines(path) if line.strip()]
