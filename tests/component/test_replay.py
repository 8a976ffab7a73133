"""``ontime replay``: which flights, in which order, how they are sent, and where they may go.

The posting is checked against a real HTTP server on a loopback port (the standard library's, in a
thread) that declares a record schema as the service's ``/docs.json`` does and records every body
it is sent; the whole loop against a real ``bentoml serve`` is in tests/pipeline/test_live.py.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from ontime.cli import main as cli
from ontime.config import load_params
from ontime.errors import ConfigError, DataError
from ontime.live.outcomes import local_days
from ontime.live.replay import check_loopback, flights, replay
from ontime.serving.requestlog import flight_key

FIELDS = ["carrier", "flight", "origin", "dest", "time_hour", "sched_dep_time", "temp", "tail_leg_of_day"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:3000", "http://localhost:8080/", "http://[::1]:3000"])
def test_loopback_urls_are_accepted(url: str) -> None:
    assert check_loopback(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url", ["http://10.0.0.7:3000", "http://example.com", "ftp://127.0.0.1", "127.0.0.1:3000"]
)
def test_other_urls_are_refused_before_anything_is_sent(url: str) -> None:
    with pytest.raises(ConfigError, match="--url"):
        check_loopback(url)


def test_days_are_checked() -> None:
    assert local_days("2013-02-01", "2013-02-03") == (dt.date(2013, 2, 1), dt.date(2013, 2, 3))
    with pytest.raises(ConfigError, match="after"):
        local_days("2013-02-03", "2013-02-01")
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        local_days("2013/02/01", "2013-02-03")


def test_flights_are_the_local_days_in_time_order_with_their_forecast_and_counts(data_run: Path) -> None:
    params = load_params(data_run / "params.yaml")
    rows = flights(
        params, data_run / "data/clean", data_run / "data/features/features.parquet",
        dt.date(2013, 2, 11), dt.date(2013, 2, 12), FIELDS,
    )  # fmt: skip
    assert rows.columns == FIELDS
    local = rows.get_column("time_hour").dt.convert_time_zone("America/New_York").dt.date()
    assert set(local.to_list()) == {dt.date(2013, 2, 11), dt.date(2013, 2, 12)}
    assert rows.get_column("time_hour").is_sorted()
    clean = pl.read_parquet(data_run / "data/clean/flights.parquet")
    day = clean.get_column("time_hour").dt.convert_time_zone("America/New_York").dt.date()
    assert rows.height == clean.filter(day.is_between(dt.date(2013, 2, 11), dt.date(2013, 2, 12))).height
    # the forecast is the clean weather of the origin's hour; the count is the feature table's
    weather = pl.read_parquet(data_run / "data/clean/weather.parquet")
    some = rows.filter(pl.col("temp").is_not_null()).row(0, named=True)
    expected = weather.filter(
        (pl.col("origin") == some["origin"]) & (pl.col("time_hour") == some["time_hour"])
    ).get_column("temp")
    assert expected.to_list()[0] == some["temp"]
    feats = pl.read_parquet(data_run / "data/features/features.parquet")
    match = feats.filter(
        (pl.col("carrier") == some["carrier"])
        & (pl.col("flight").cast(pl.String) == str(some["flight"]))
        & (pl.col("origin") == some["origin"])
        & (pl.col("time_hour").dt.convert_time_zone("UTC") == some["time_hour"])
    )
    assert match.height == 1
    assert match.get_column("tail_leg_of_day").item() == some["tail_leg_of_day"]
    assert rows.get_column("tail_leg_of_day").null_count() < rows.height  # most flights have it


def test_a_range_without_flights_fails_clearly(data_run: Path) -> None:
    params = load_params(data_run / "params.yaml")
    with pytest.raises(DataError, match="no rows scheduled"):
        flights(
            params, data_run / "data/clean", data_run / "data/features/features.parquet",
            dt.date(2014, 1, 1), dt.date(2014, 1, 2), FIELDS,
        )  # fmt: skip


# ------------------------------------------------------------------------ against a real server ---
class Recorder(ThreadingHTTPServer):
    bodies: list[dict[str, Any]]
    refuse_every: int  # answer 422 to every n-th request (0: never)


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        props = {name: {"type": "string"} for name in FIELDS}
        self._send(
            200, {"components": {"schemas": {"Flight": {"properties": props, "required": FIELDS[:5]}}}}
        )

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        n = len(self.server.bodies)
        if self.server.refuse_every and n % self.server.refuse_every == 0:
            self._send(422, {"error": "refused for the test"})
        else:
            self._send(200, {"predictions": [{} for _ in body["flights"]]})


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder(("127.0.0.1", 0), Handler)
    server.bodies, server.refuse_every = [], 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def run_replay(data_run: Path, server: Recorder, **kw: Any) -> Any:
    host, port = server.server_address[:2]
    args: dict[str, Any] = {"speed": 0.0, "max_pause": 0.0, "batch": 16, "limit": None, **kw}
    return replay(
        f"http://{host!s}:{port}", str(data_run / "params.yaml"), dt.date(2013, 2, 11), dt.date(2013, 2, 11),
        clean=data_run / "data/clean", features=data_run / "data/features/features.parquet", **args,
    )  # fmt: skip


def test_every_flight_is_posted_once_in_time_order_hour_by_hour(data_run: Path, recorder: Recorder) -> None:
    out = run_replay(data_run, recorder, limit=200)
    sent = [f for body in recorder.bodies for f in body["flights"]]
    assert out.flights == len(sent) == 200
    assert out.answered == 200
    assert out.requests == len(recorder.bodies)
    assert all(len(body["flights"]) <= 16 for body in recorder.bodies)
    hours = [f["time_hour"] for f in sent]
    assert hours == sorted(hours)
    for body in recorder.bodies:  # a request never mixes two scheduled hours
        assert len({f["time_hour"] for f in body["flights"]}) == 1
    assert all(set(f) == set(FIELDS) for f in sent)
    assert all(h.endswith("Z") for h in hours)
    keys = [flight_key(f, ["carrier", "flight", "origin", "time_hour"]) for f in sent]
    assert len(set(keys)) == len(keys)  # each flight once
    assert out.days == {"2013-02-11": 200}


def test_refused_requests_are_counted_and_the_replay_goes_on(data_run: Path, recorder: Recorder) -> None:
    recorder.refuse_every = 3
    out = run_replay(data_run, recorder, limit=120, batch=10)
    refused = sum(len(b["flights"]) for i, b in enumerate(recorder.bodies, 1) if i % 3 == 0)
    assert out.refused == refused > 0
    assert out.answered == 120 - refused
    assert out.failed == 0
    assert out.errors == {"422": len(recorder.bodies) // 3}
    assert out.first_error is not None
    assert out.first_error.startswith("422")


def test_pauses_follow_the_schedule_and_are_bounded(data_run: Path, recorder: Recorder) -> None:
    fast = run_replay(data_run, recorder, limit=400, speed=0.0, max_pause=0.0)
    hours = sorted({dt.datetime.fromisoformat(f["time_hour"]) for b in recorder.bodies for f in b["flights"]})
    assert len(hours) > 5
    schedule_s = (hours[-1] - hours[0]).total_seconds()
    # an hour of schedule per 0.05 s, pauses up to 10 s: the schedule's span / speed in all
    recorder.bodies.clear()
    paced = run_replay(data_run, recorder, limit=400, speed=72_000.0, max_pause=10.0)
    assert paced.seconds >= schedule_s / 72_000 * 0.95
    # real time (speed 1) would pause an hour between hours: bounded at 0.05 s each
    recorder.bodies.clear()
    bounded = run_replay(data_run, recorder, limit=400, speed=1.0, max_pause=0.05)
    assert 0.05 * (len(hours) - 1) * 0.95 <= bounded.seconds < 0.05 * (len(hours) - 1) + fast.seconds + 30


def test_cli_refuses_a_remote_service_and_a_missing_one(
    data_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = str(data_run / "params.yaml")
    code = cli(["replay", "--params", params, "--url", "http://192.168.1.5:3000", "--from", "2013-02-11",
                "--to", "2013-02-11"])  # fmt: skip
    assert code == 2
    assert "only to a service on this machine" in capsys.readouterr().err
    from ontime.serving.local import free_port

    code = cli(["replay", "--params", params, "--url", f"http://127.0.0.1:{free_port()}", "--from",
                "2013-02-11", "--to", "2013-02-11"])  # fmt: skip
    assert code == 2
    assert "no service answers" in capsys.readouterr().err
