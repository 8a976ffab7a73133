"""The request log: one JSON line per scored flight, the input of ``ontime monitor``.

Each line is exactly::

    {"ts": "2013-12-01T12:00:00.123456+00:00", "request_id": "<uuid4, one per HTTP request>",
     "model_version": "ontime-delay:<version>", "features": {"<feature>": <value>, ...},
     "probability": 0.42, "decision": 0}

``features`` holds the model's feature columns after online featurization (the names and values the
model saw, as in the offline feature table), ``decision`` is 1 when ``probability`` reaches the
model's threshold. The file is opened with ``O_APPEND`` and every line goes out in one ``write``
call, so concurrent threads and worker processes append whole lines without a lock.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ENV = "ONTIME_REQUEST_LOG"
DEFAULT_PATH = "logs/requests.jsonl"
KEYS = ("ts", "request_id", "model_version", "features", "probability", "decision")


def log_path() -> Path:
    """The log file: ``$ONTIME_REQUEST_LOG``, else ``logs/requests.jsonl`` in the launch folder.

    A relative path is taken from the folder the server was started in: ``$PWD`` (kept by the
    shell), not the process's cwd, which ``bentoml serve`` moves into the Bento's own files.
    """
    path = Path(os.environ.get(ENV) or DEFAULT_PATH)
    if path.is_absolute():
        return path
    launched = Path(os.environ.get("PWD") or ".")
    return (launched if launched.is_absolute() and launched.is_dir() else Path.cwd()) / path


def _plain(value: Any) -> Any:
    """A JSON-safe value: non-finite floats (never sent by a valid request) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def record(
    *,
    ts: dt.datetime,
    request_id: str,
    model_version: str,
    features: Mapping[str, Any],
    probability: float,
    decision: int,
) -> dict[str, Any]:
    """One log entry, keys in the documented order."""
    return {
        "ts": ts.astimezone(dt.UTC).isoformat(),
        "request_id": request_id,
        "model_version": model_version,
        "features": {k: _plain(v) for k, v in features.items()},
        "probability": float(probability),
        "decision": int(decision),
    }


class RequestLog:
    """Appends entries to a JSON Lines file (folder created on first use)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else log_path()
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def write(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Append ``entries``, one ``write`` per line; returns how many were written."""
        fd = self._open()
        n = 0
        for entry in entries:
            line = json.dumps(entry, allow_nan=False, separators=(",", ":")) + "\n"
            os.write(fd, line.encode("utf-8"))
            n += 1
        return n

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read(path: str | Path) -> list[dict[str, Any]]:
    """All entries of a request log (for tests and the monitor)."""
    text = Path(path).read_text() if Path(path).is_file() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
