"""Serving benchmark: our BentoML service against a plain FastAPI app serving the same model.

Ours is ``bentoml serve`` of the packaged Bento (adaptive batching on, the default; one worker per
service), started as ``load.py`` starts it. The peer is ``bench/fastapi_app.py`` under ``uvicorn``
with one worker: the same bundle (the Bento's ``model`` label, from BentoML's store), the same
request and answer models, the same :class:`~ontime.serving.online.Scorer` and request log, one
sync endpoint in FastAPI's threadpool. Each listens on a free loopback port and writes its request
log and output into a temp folder; one server runs at a time, and each is stopped (its process
group) before the next starts, on Ctrl-C and on errors too.

For each body size in ``--flights`` (default 1 and 64 flights per ``POST /predict``: synthetic
December flights, fixed seed, as in ``load.py``) and each concurrency in ``--concurrency`` (1, 8,
32), after ``--warmup`` requests, ``load.py``'s ``load()`` sends ``--requests`` requests (stopping
early after ``--max-seconds``) from an ``httpx.AsyncClient`` on the same machine. It prints a header
(date, CPU, versions), a Markdown table of requests/s, p50 and p99 latency, 5xx answers and other
failures (other statuses, transport errors) per server, body size and concurrency, the ratios
ours/peer, and the issue's aims beside what was measured. Any failed request fails the run (exit 1).

Then the time split of one request along our service's path, in this process (a worker thread, as
BentoML runs the scoring step), for each body size: the median over ``--split-repeats`` of each
step, calling the functions the service calls, in its order: validation of the body, the scorer
call's encoding, featurization, the model, the scorer's per-flight answers, the response, the
request log. The rest of a served request (HTTP, the scorer's Unix socket, the batching queue,
BentoML's dispatch) is not separable in process: it is shown as the served p50 at concurrency 1
less the steps' sum. Needs a packaged model (``dvc repro package``) in ``$BENTOML_HOME``::

    .venv/bin/python bench/serving.py                 # Bento from models/package.json
    .venv/bin/python bench/serving.py --requests 60 --concurrency 1 8 --max-seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import pickle
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from load import default_bento, exit_status, flights, load, serve
from pydantic import TypeAdapter

from ontime.serving.local import reserved_port, stop_server
from ontime.serving.online import Scorer
from ontime.serving.requestlog import RequestLog, record
from ontime.serving.scoring import Scored

HERE = Path(__file__).resolve().parent
SERVERS = ("ours", "peer")
PACKAGES = ("bentoml", "fastapi", "uvicorn", "starlette", "pydantic", "torch", "lightgbm", "polars")


@dataclass
class Result:
    server: str
    flights: int
    concurrency: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_errors: int  # 5xx answers
    other_errors: int  # any other status than 200, and transport errors

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


# ---------------------------------------------------------------------------------- servers ---
def model_dir(bento: str) -> Path:
    """The folder of the model the Bento packs (its ``model`` label), in BentoML's store."""
    import bentoml

    return Path(bentoml.models.get(bentoml.bentos.get(bento).info.labels["model"]).path)


@contextmanager
def serve_peer(model: Path, *, log_dir: Path, ready_s: float = 120) -> Iterator[str]:
    """``uvicorn fastapi_app:app`` (one worker) on a free loopback port; yields its URL once
    ``/readyz`` answers; its process group is stopped on exit. Output goes to ``peer.log``."""
    environ = {
        **os.environ,
        "ONTIME_MODEL_DIR": str(model),
        "ONTIME_REQUEST_LOG": str(log_dir / "requests-peer.jsonl"),
    }
    output = log_dir / "peer.log"
    with output.open("ab") as out, reserved_port() as port:  # held until uvicorn listens on it
        command = [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(HERE),
                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
        proc = subprocess.Popen(
            command, env=environ, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + ready_s
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    said = output.read_text(errors="replace")[-4000:]
                    raise SystemExit(f"the FastAPI peer did not start (exit {proc.poll()}):\n{said}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
        except BaseException:
            stop_server(proc)
            raise
    try:
        yield url
    finally:
        stop_server(proc)


# ------------------------------------------------------------------------------------- load ---
def bodies(k: int, requests: int) -> list[bytes]:
    """Request bodies of ``k`` flights each (at most 256 distinct), the same for both servers."""
    n = min(max(requests, 64), 256)
    data = flights(n * k)
    return [json.dumps({"flights": data[i : i + k]}).encode() for i in range(0, len(data), k)]


def measure(url: str, server: str, args: argparse.Namespace) -> list[Result]:
    results = []
    statuses: Counter[int] = Counter()
    for k in args.flights:
        sent = bodies(k, args.requests)
        asyncio.run(load(url, sent, concurrency=8, requests=args.warmup, max_seconds=60))
        for c in args.concurrency:
            statuses.clear()
            lat, failed, seconds = asyncio.run(
                load(url, sent, concurrency=c, requests=args.requests, max_seconds=args.max_seconds,
                     statuses=statuses)
            )  # fmt: skip
            p50, p99 = np.percentile(np.asarray(lat) * 1000, [50, 99])
            fives = sum(n for status, n in statuses.items() if status >= 500)
            r = Result(server, k, c, len(lat), seconds, float(p50), float(p99), fives, failed - fives)
            results.append(r)
            print(f"  {server} {k:3d} flight(s) c={c:<3} {r.requests:5d} req {r.rps:8.1f} req/s  "
                  f"p50 {r.p50_ms:7.1f} ms  p99 {r.p99_ms:7.1f} ms  5xx {fives}  other {r.other_errors}",
                  flush=True)  # fmt: skip
    return results


# ------------------------------------------------------------------------------- time split ---
STEPS = {  # step: what is called (the service's path, in order)
    "validation": "PredictRequest.model_validate_json(body), as BentoML's JSONSerde parses it",
    "scorer call encoding": "model_dump per flight; records and answers validated, dumped, pickled and "
    "back, as BentoML's PickleSerde between services (not the socket, nor the batching queue)",
    "featurization": "Scorer.frame + Scorer.features",
    "model": "Scorer.candidate.predict_proba",
    "scorer answers": "features.to_dicts + a Scored per flight (score_records)",
    "response building": "a Prediction per flight, Predictions, model_dump_json",
    "request log": "record per flight + RequestLog.write (a temp file)",
}


RECORDS_SPEC = TypeAdapter(list[dict[str, Any]])  # score_batch's input, as BentoML types it
ANSWERS_SPEC = TypeAdapter(list[Scored])  # and its output


def between_services(spec: TypeAdapter[Any], value: Any) -> Any:
    """``value`` through one inter-service hop as BentoML's ``PickleSerde`` makes it: validated into
    the spec, dumped, pickled (protocol 5), unpickled and validated again."""
    data = pickle.dumps(spec.dump_python(spec.validate_python(value)), protocol=5)
    return spec.validate_python(pickle.loads(data))


def split_once(scorer: Scorer, api: Any, log: RequestLog, body: bytes) -> dict[str, float]:
    """One request along the service's path (``OntimeDelay.predict`` -> ``OntimeScorer.score_batch``
    -> ``score_records`` -> back); seconds per step."""
    times: dict[str, float] = {}
    t = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal t
        now = time.perf_counter()
        times[step] = times.get(step, 0.0) + now - t
        t = now

    request = api.predict_request.model_validate_json(body)
    lap("validation")
    records = between_services(RECORDS_SPEC, [r.model_dump() for r in getattr(request, scorer.serve.records)])
    lap("scorer call encoding")
    features = scorer.features(scorer.frame(records))
    lap("featurization")
    probs = scorer.candidate.predict_proba(features)
    lap("model")
    scored = [
        Scored(probability=float(p), features=f) for f, p in zip(features.to_dicts(), probs, strict=True)
    ]
    lap("scorer answers")
    scored = between_services(ANSWERS_SPEC, scored)
    lap("scorer call encoding")
    request_id, now = str(uuid.uuid4()), dt.datetime.now(dt.UTC)
    serve = scorer.serve
    predictions = [
        api.prediction(**{serve.probability: s.probability, serve.positive: s.probability >= scorer.threshold,
                          "model_version": scorer.version})
        for s in scored
    ]  # fmt: skip
    api.predictions(request_id=request_id, predictions=predictions).model_dump_json()
    lap("response building")
    log.write(
        record(ts=now, request_id=request_id, model_version=scorer.version, features=s.features,
               probability=s.probability, decision=int(s.probability >= scorer.threshold))
        for s in scored
    )  # fmt: skip
    lap("request log")
    return times


def time_split(model: Path, sizes: list[int], repeats: int, log_dir: Path) -> dict[int, dict[str, float]]:
    """Median ms of each step per body size, in a worker thread (in the main thread the OpenMP
    pools of LightGBM and torch contend: see ``batch_latency.py``)."""
    scorer = Scorer(model)
    api = scorer.api_models()
    log = RequestLog(log_dir / "requests-split.jsonl")

    def run() -> dict[int, dict[str, float]]:
        out = {}
        for k in sizes:
            body = json.dumps({"flights": flights(k, seed=1)}).encode()
            split_once(scorer, api, log, body)  # warm up
            runs = [split_once(scorer, api, log, body) for _ in range(repeats)]
            out[k] = {step: statistics.median(r[step] for r in runs) * 1000 for step in STEPS}
            out[k]["total (median of sums)"] = statistics.median(sum(r.values()) for r in runs) * 1000
        return out

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


# ---------------------------------------------------------------------------------- report ---
def header(bento: str, model: Path) -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or platform.machine()
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in PACKAGES)
    return (
        f"date {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %z}; CPU {cpu}, "
        f"{os.cpu_count()} cores; python {platform.python_version()}, {versions}\n"
        f"bento {bento} (model {model.name}, {model}); "
        f"BENTOML_HOME={os.environ.get('BENTOML_HOME', '~/bentoml')}; one worker each, "
        "load generator on the same machine"
    )


def tables(results: list[Result]) -> dict[tuple[str, int, int], Result]:
    print("\n| server | body (flights) | concurrency | requests | req/s | p50 ms | p99 ms | 5xx | "
          "other errors |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        name = "ours (BentoML)" if r.server == "ours" else "peer (FastAPI)"
        print(f"| {name} | {r.flights} | {r.concurrency} | {r.requests} | {r.rps:.1f} | {r.p50_ms:.1f} | "
              f"{r.p99_ms:.1f} | {r.server_errors} | {r.other_errors} |")  # fmt: skip
    by = {(r.server, r.flights, r.concurrency): r for r in results}
    print("\n| body (flights) | concurrency | req/s ours/peer | p50 ours/peer | p99 ours/peer |")
    print("|---|---|---|---|---|")
    for (server, k, c), ours in by.items():
        if server == "ours" and (peer := by.get(("peer", k, c))):
            print(f"| {k} | {c} | {ours.rps / peer.rps:.2f}x | {ours.p50_ms / peer.p50_ms:.2f}x | "
                  f"{ours.p99_ms / peer.p99_ms:.2f}x |")  # fmt: skip
    return by


def aims(by: dict[tuple[str, int, int], Result]) -> None:
    """The issue's aims beside what was measured (only where it was measured)."""
    print("\nAims (issue 15), as measured:")

    def ratio(k: int, c: int) -> float | None:
        ours, peer = by.get(("ours", k, c)), by.get(("peer", k, c))
        return ours.rps / peer.rps if ours and peer else None

    if one := by.get(("ours", 1, 1)):
        met = "met" if one.p50_ms <= 10 else "not met"
        print(f"- one flight at c=1, p50 <= 10 ms: {one.p50_ms:.1f} ms ({met})")
    for c, aim in ((1, 1.0), (32, 4.0)):
        for k in sorted({k for _, k, _ in by}):
            if (x := ratio(k, c)) is not None:
                print(f"- req/s ours/peer at c={c}, {k} flight(s), >= {aim:.1f}x: {x:.2f}x "
                      f"({'met' if x >= aim else 'not met'})")  # fmt: skip
    fives = sum(r.server_errors for r in by.values() if r.server == "ours")
    print(f"- zero 5xx (ours): {fives} ({'met' if fives == 0 else 'not met'})")


def split_table(split: dict[int, dict[str, float]], by: dict[tuple[str, int, int], Result]) -> None:
    sizes = sorted(split)
    print("\nTime split of one request along our service's path, in process "
          "(median ms, share of the steps' sum):")  # fmt: skip
    print("\n| step | what is called | " + " | ".join(f"{k} flight(s): ms | share" for k in sizes) + " |")
    print("|---|---|" + "---|---|" * len(sizes))
    sums = {k: sum(split[k][s] for s in STEPS) for k in sizes}
    for step, what in STEPS.items():
        cells = " | ".join(f"{split[k][step]:.3f} | {split[k][step] / sums[k]:.0%}" for k in sizes)
        print(f"| {step} | {what} | {cells} |")
    print("| sum of the medians | | " + " | ".join(f"{sums[k]:.3f} | 100%" for k in sizes) + " |")
    total = "total (median of sums)"
    print(f"| {total} | | " + " | ".join(f"{split[k][total]:.3f} | " for k in sizes) + " |")
    for server in SERVERS:
        cells = []
        for k in sizes:
            r = by.get((server, k, 1))
            cells.append(f"{r.p50_ms:.3f} | " if r else "- | ")
        print(f"| served p50 at c=1, {server} | over HTTP | " + " | ".join(cells) + " |")
    cells = []
    for k in sizes:
        r = by.get(("ours", k, 1))
        cells.append(
            f"{r.p50_ms - sums[k]:.3f} | {(r.p50_ms - sums[k]) / r.p50_ms:.0%} of p50" if r else "- | "
        )
    print("| rest of ours (served p50 - sum) | HTTP, BentoML's dispatch, the scorer's socket and "
          "batching queue | " + " | ".join(cells) + " |")  # fmt: skip


# ------------------------------------------------------------------------------------ main ---
def terminate(signum: int, frame: types.FrameType | None) -> None:
    raise SystemExit(128 + signum)  # SIGTERM: unwind, so that every server started is stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bento", default=None, help="Bento tag (default: models/package.json)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per level")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time cap per level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--flights", type=int, nargs="+", default=[1, 64], help="flights per request")
    parser.add_argument("--warmup", type=int, default=40, help="requests before each body size")
    parser.add_argument("--split-repeats", type=int, default=200, help="repeats of the time split")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, terminate)
    bento = args.bento or default_bento()
    model = model_dir(bento)
    print(header(bento, model), flush=True)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="ontime-bench-") as tmp:
        log_dir = Path(tmp)
        servers: dict[str, Callable[[], Any]] = {
            "ours": lambda: serve(bento, batching=True, log_dir=log_dir),
            "peer": lambda: serve_peer(model, log_dir=log_dir),
        }
        for server in SERVERS:
            with servers[server]() as url:
                print(f"{server}: {url}", flush=True)
                results += measure(url, server, args)
        split = time_split(model, args.flights, args.split_repeats, log_dir)
    by = tables(results)
    aims(by)
    split_table(split, by)
    return exit_status(sum(r.server_errors + r.other_errors for r in results))


if __name__ == "__main__":
    raise SystemExit(main())
