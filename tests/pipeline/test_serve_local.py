"""`serve_bento` (ontime.serving.local) with a real `bentoml serve` of a tiny service: a port taken
between choosing it and the server's bind costs a retry on another port, not a failed start."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ontime.serving import local
from tests.conftest import env

SERVICE = """
import bentoml


@bentoml.service
class Echo:
    @bentoml.api
    def echo(self, x: int) -> int:
        return x + 1
"""


def test_reserved_port_is_not_handed_out_while_held() -> None:
    with local.reserved_port() as port:
        plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with plain, pytest.raises(OSError, match="Address already in use"):
            plain.bind(("127.0.0.1", port))  # a bind without SO_REUSEADDR is refused
        # while a server socket as BentoML makes it (SO_REUSEADDR) binds and listens on it
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", port))
            server.listen()


def test_serve_bento_retries_on_a_port_taken_before_it_binds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "svc.py").write_text(SERVICE)
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen()  # someone else's server, listening, never answering
    busy_port = busy.getsockname()[1]
    real = local.reserved_port
    handed: list[int] = []

    @contextmanager
    def taken_first() -> Iterator[int]:
        if not handed:
            handed.append(busy_port)
            yield busy_port
            return
        with real() as port:
            handed.append(port)
            yield port

    monkeypatch.setattr(local, "reserved_port", taken_first)
    environ = {**env(), "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    output = tmp_path / "serve.log"
    with busy, local.serve_bento("svc:Echo", env=environ, output=output, cwd=tmp_path, ready_s=120) as url:
        assert len(handed) == 2, handed
        assert url == f"http://127.0.0.1:{handed[1]}"
        assert handed[1] != busy_port
        answer = httpx.post(f"{url}/echo", json={"x": 41}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json() == 42
    log = output.read_text()
    assert f"Could not bind 127.0.0.1:{busy_port}" in log
    assert "Address already in use" in log
    with pytest.raises(httpx.TransportError):  # stopped on leaving the context
        httpx.get(f"{url}/readyz", timeout=2)


def test_serve_bento_reports_a_server_that_cannot_start(tmp_path: Path) -> None:
    (tmp_path / "svc.py").write_text(SERVICE)
    environ = {**env(), "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    with (
        pytest.raises(local.ServeError, match=r"bentoml serve exited [1-9](.|\n)*no_such_service"),
        local.serve_bento("no_such_service:Nope", env=environ, output=tmp_path / "serve.log", cwd=tmp_path),
    ):
        pass
