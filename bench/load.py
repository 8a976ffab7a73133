"""Load benchmark of the served model: adaptive batching on vs off, measured in the same run.

For each mode it starts its own ``bentoml serve`` of the packaged Bento on a free loopback port
(``ONTIME_ADAPTIVE_BATCHING=1`` or ``0``; the request log goes to a temp file), sends
``--requests`` one-flight ``POST /predict`` requests at each concurrency (stopping early after
``--max-seconds``), stops the server, and prints requests/s, p50 and p99 latency, and the on/off
ratios. Any failed request (not 200) fails the run. Needs a packaged model (``dvc repro package``)
in ``$BENTOML_HOME``::

    .venv/bin/python bench/load.py                    # Bento from models/package.json
    .venv/bin/python bench/load.py --requests 100 --concurrency 1 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from ontime.serving.local import ServeError, serve_bento

ROUTES = {  # dest: (distance in miles, block minutes)
    "ATL": (762, 130), "ORD": (733, 150), "LAX": (2475, 360), "BOS": (187, 70), "MCO": (944, 160),
    "FLL": (1069, 180), "MIA": (1089, 185), "SFO": (2586, 385), "CLT": (544, 110), "IAH": (1416, 225),
}  # fmt: skip
CARRIERS = ["UA", "AA", "B6", "DL", "EV", "MQ", "US", "WN"]
ORIGINS = ["EWR", "JFK", "LGA"]


def flights(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` plausible December flights with a weather forecast, reproducible from ``seed``."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        dest = rng.choice(sorted(ROUTES))
        distance, block = ROUTES[dest]
        dep = rng.randrange(5 * 60, 23 * 60)
        arr = (dep + block) % 1440
        day, hour = rng.randrange(1, 32), dep // 60
        out.append(
            {
                "carrier": rng.choice(CARRIERS),
                "flight": rng.randrange(1, 4000),
                "origin": rng.choice(ORIGINS),
                "dest": dest,
                "distance": float(distance),
                "sched_dep_time": dep // 60 * 100 + dep % 60,
                "sched_arr_time": arr // 60 * 100 + arr % 60,
                "time_hour": f"2013-12-{day:02d}T{(hour + 5) % 24:02d}:00:00Z",
                "temp": round(rng.uniform(20, 55), 1),
                "humid": round(rng.uniform(30, 100), 1),
                "wind_speed": round(rng.uniform(0, 25), 2),
                "visib": rng.choice([10.0, 10.0, 10.0, 5.0, 2.0, 0.5]),
                "precip": rng.choice([0.0, 0.0, 0.0, 0.02, 0.1]),
            }
        )
    return out


@dataclass
class Result:
    mode: str
    concurrency: int
    requests: int
    failed: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


@contextmanager
def serve(bento: str, *, batching: bool, log_dir: Path) -> Iterator[str]:
    """A ``bentoml serve`` of ``bento`` on loopback; stopped (its process group) on exit."""
    environ = {
        **os.environ,
        "ONTIME_ADAPTIVE_BATCHING": "1" if batching else "0",
        "ONTIME_REQUEST_LOG": str(log_dir / f"requests-{'on' if batching else 'off'}.jsonl"),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    try:
        with serve_bento(bento, env=environ, output=log_dir / "serve.log") as url:
            yield url
    except ServeError as exc:
        raise SystemExit(str(exc)) from exc


async def load(
    url: str,
    bodies: list[bytes],
    *,
    concurrency: int,
    requests: int,
    max_seconds: float,
    statuses: Counter[int] | None = None,
) -> tuple[list[float], int, float]:
    """``requests`` POSTs from ``concurrency`` workers; (latencies in s, failures, wall seconds).
    ``statuses``, when given, counts the answers by HTTP status (0: no answer)."""
    latencies: list[float] = []
    failed = 0
    issued = 0
    reasons: dict[str, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Content-Type": "application/json"}
    start = time.perf_counter()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal issued, failed
        while issued < requests and time.perf_counter() - start < max_seconds:
            body = bodies[issued % len(bodies)]
            issued += 1
            t0 = time.perf_counter()
            try:
                r = await client.post("/predict", content=body, headers=headers)
                reason = "" if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"
                status = r.status_code
            except httpx.HTTPError as exc:
                reason, status = f"{type(exc).__name__}: {exc}", 0
            if statuses is not None:
                statuses[status] += 1
            latencies.append(time.perf_counter() - t0)
            if reason:
                failed += 1
                reasons[reason] = reasons.get(reason, 0) + 1

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:5]:
        print(f"    {n} x {reason}", flush=True)
    return latencies, failed, time.perf_counter() - start


def measure(url: str, mode: str, args: argparse.Namespace) -> list[Result]:
    data = flights(max(args.requests, 64) * args.flights_per_request)
    k = args.flights_per_request
    bodies = [json.dumps({"flights": data[i : i + k]}).encode() for i in range(0, len(data), k)]
    asyncio.run(load(url, bodies, concurrency=8, requests=args.warmup, max_seconds=60))  # warm up
    results = []
    for c in args.concurrency:
        lat, failed, seconds = asyncio.run(
            load(url, bodies, concurrency=c, requests=args.requests, max_seconds=args.max_seconds)
        )
        p50, p99 = np.percentile(np.asarray(lat) * 1000, [50, 99])
        r = Result(mode, c, len(lat), failed, seconds, float(p50), float(p99))
        results.append(r)
        print(f"  batching {mode:3} c={c:<3} {r.requests:5d} req {r.rps:8.1f} req/s  "
              f"p50 {r.p50_ms:7.1f} ms  p99 {r.p99_ms:7.1f} ms  failed {r.failed}", flush=True)  # fmt: skip
    return results


def default_bento() -> str:
    package = Path("models/package.json")
    if package.is_file():
        return str(json.loads(package.read_text())["bento_tag"])
    return "ontime-delay-service:latest"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bento", default=None, help="Bento tag (default: models/package.json)")
    parser.add_argument("--requests", type=int, default=300, help="requests per concurrency level")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time cap per level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--flights-per-request", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=40, help="requests before measuring")
    args = parser.parse_args(argv)
    bento = args.bento or default_bento()
    print(f"bento {bento}, BENTOML_HOME={os.environ.get('BENTOML_HOME', '~/bentoml')}, "
          f"{os.cpu_count()} CPUs, {args.flights_per_request} flight(s) per request", flush=True)  # fmt: skip
    results: dict[str, list[Result]] = {}
    with tempfile.TemporaryDirectory(prefix="ontime-bench-") as tmp:
        for mode, batching in (("on", True), ("off", False)):
            with serve(bento, batching=batching, log_dir=Path(tmp)) as url:
                results[mode] = measure(url, mode, args)
    print("\n| batching | concurrency | requests | req/s | p50 ms | p99 ms | failed |")
    print("|---|---|---|---|---|---|---|")
    for mode in ("on", "off"):
        for r in results[mode]:
            print(f"| {mode} | {r.concurrency} | {r.requests} | {r.rps:.1f} | {r.p50_ms:.1f} | "
                  f"{r.p99_ms:.1f} | {r.failed} |")  # fmt: skip
    print("\n| concurrency | req/s on/off | p50 on/off | p99 on/off |")
    print("|---|---|---|---|")
    for on, off in zip(results["on"], results["off"], strict=True):
        print(f"| {on.concurrency} | {on.rps / off.rps:.2f}x | {on.p50_ms / off.p50_ms:.2f}x | "
              f"{on.p99_ms / off.p99_ms:.2f}x |")  # fmt: skip
    return exit_status(sum(r.failed for rs in results.values() for r in rs))


def exit_status(failed: int) -> int:
    """Say whether every request answered 200; the exit status of a load benchmark (1 if not)."""
    if failed:
        print(f"\nFAILED: {failed} request(s) did not answer 200", file=sys.stderr)
        return 1
    print("\nzero failed requests")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
