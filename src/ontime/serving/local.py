"""Run ``bentoml serve`` on a free loopback port for tests and benchmarks; stop it afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from ontime.errors import OntimeError


class ServeError(OntimeError):
    """The server exited or never became ready."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_bento(
    bento: str, *, env: dict[str, str], output: Path, cwd: Path | None = None, ready_s: float = 180
) -> Iterator[str]:
    """``bentoml serve bento`` on 127.0.0.1; yields its URL once /readyz answers 200; on exit the
    process group is stopped (SIGTERM, then SIGKILL). Server output goes to ``output``."""
    port = free_port()
    bentoml = Path(sys.executable).parent / "bentoml"
    with output.open("a") as out:
        proc = subprocess.Popen(
            [str(bentoml), "serve", bento, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + ready_s
            while True:
                if proc.poll() is not None:
                    raise ServeError(f"bentoml serve exited {proc.returncode}:\n{output.read_text()[-4000:]}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise ServeError(
                        f"bentoml serve not ready after {ready_s} s:\n{output.read_text()[-4000:]}"
                    )
                time.sleep(0.5)
            yield url
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
