"""Run ``bentoml serve`` on a free loopback port for tests and benchmarks; stop it afterwards.

``bentoml serve`` takes a port number, not a socket, so the port is chosen here and bound there. The
gap between the two is closed from both sides: the port stays reserved (bound here, not listening,
``SO_REUSEADDR``) until the server is up, so no other ``bind(port 0)`` on the machine is handed it,
while BentoML (whose sockets set ``SO_REUSEADDR`` too) can still bind and listen on it; and should
someone bind it anyway, the server exits with "Address already in use" and is started again on
another port, up to ``BIND_ATTEMPTS`` times.
"""

from __future__ import annotations

import contextlib
import errno
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
import psutil  # a dependency of bentoml

from ontime.errors import OntimeError


class ServeError(OntimeError):
    """The server exited or never became ready."""


BIND_ATTEMPTS = 5
# What `bentoml serve` (circus) prints when its port is taken: "[ERROR] [cli] Could not bind
# 127.0.0.1:<port>", then "OSError: [Errno 98] Address already in use" (other bind errors, e.g.
# permission denied, are no reason to try another port).
ADDRESS_IN_USE = ("Address already in use", f"[Errno {errno.EADDRINUSE}]")


@contextmanager
def reserved_port() -> Iterator[int]:
    """A free loopback port, held until the context ends: bound with ``SO_REUSEADDR``, never
    listening. The kernel gives a held port to no other ``bind(port 0)``; a server that sets
    ``SO_REUSEADDR`` (as BentoML does) can still bind and listen on it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def free_port() -> int:
    """A port free now. Racy: anyone may take it before it is used; prefer ``reserved_port``."""
    with reserved_port() as port:
        return port


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (circus then stops its workers), then SIGKILL it if it has not
    exited within 30 s, and any worker still alive. Circus starts every worker (one or more per
    service) in a session of its own, out of the group: they are found as the server's children."""
    if proc.poll() is not None:
        return
    try:
        workers = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    for worker in alive:  # psutil checks it is the same process (pid and start time), not a reuse
        with contextlib.suppress(psutil.NoSuchProcess):
            worker.kill()


def _since(output: Path, offset: int) -> str:
    """What the server wrote to ``output`` after ``offset`` bytes."""
    with output.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def _wait_ready(
    proc: subprocess.Popen[bytes], url: str, *, ready_s: float, output: Path, offset: int
) -> bool:
    """True once ``url``/readyz answers 200; False if the server exits first; ServeError after
    ``ready_s`` seconds."""
    deadline = time.monotonic() + ready_s
    while True:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200 and proc.poll() is None:
                return True
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise ServeError(f"bentoml serve not ready after {ready_s} s:\n{_since(output, offset)[-4000:]}")
        time.sleep(0.5)


@contextmanager
def serve_bento(
    bento: str, *, env: dict[str, str], output: Path, cwd: Path | None = None, ready_s: float = 180
) -> Iterator[str]:
    """``bentoml serve bento`` on 127.0.0.1; yields its URL once /readyz answers 200; on exit the
    process group is stopped (SIGTERM, then SIGKILL). Server output goes to ``output``.

    The port is reserved until the server is up; a server that exits because its port was taken
    anyway is started again on another port (``BIND_ATTEMPTS`` in all)."""
    bentoml = Path(sys.executable).parent / "bentoml"
    with output.open("ab") as out:
        for attempt in range(1, BIND_ATTEMPTS + 1):
            offset = output.stat().st_size
            with reserved_port() as port:
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
                    ready = _wait_ready(proc, url, ready_s=ready_s, output=output, offset=offset)
                except BaseException:
                    stop_server(proc)
                    raise
            if ready:
                break
            said = _since(output, offset)
            if attempt < BIND_ATTEMPTS and any(text in said for text in ADDRESS_IN_USE):
                continue  # the port was taken between the reservation and the server's bind
            raise ServeError(f"bentoml serve exited {proc.returncode}:\n{said[-4000:]}")
        try:
            yield url
        finally:
            stop_server(proc)
