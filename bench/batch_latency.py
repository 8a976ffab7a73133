"""Latency of one full batch (256 flights by default) through ``bentoml serve``, against the same
flights scored in this process by the bundle's Scorer (the peer: no HTTP, no batching queue).

It starts one ``bentoml serve`` of the packaged Bento on a free loopback port (the request log goes
to a temp file), sends ``--warmup`` requests, then ``--requests`` sequential ``POST /predict`` of
``--flights`` valid flights each (synthetic December flights, fixed seed, as in ``load.py``), then
``--poisoned`` requests of each kind of flight that cannot be scored, first in the batch:
``flight`` 2147483648 (over Int32: the scorer raised on it before validation refused it with 400)
and ``pressure`` -1e308 hPa (NaN from a PyTorch champion: 422 naming the row). It prints median, p90
and max latency with the answers' statuses, the median of the peer (the Bento's model scoring the
same flights in a worker thread of this process, as BentoML runs the batched step) and the
served/peer ratio, and exits 1 if a valid request did not answer 200. Needs a packaged model
(``dvc repro package``) in ``$BENTOML_HOME``::

    .venv/bin/python bench/batch_latency.py                   # Bento from models/package.json
    .venv/bin/python bench/batch_latency.py --bento ontime-delay-service:<version> --requests 50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from load import default_bento, flights  # bench/load.py: this script's folder is on sys.path

from ontime.serving.local import ServeError, serve_bento

POISONS = {"flight=2147483648": {"flight": 2_147_483_648}, "pressure=-1e308": {"pressure": -1e308}}


def timed_posts(client: httpx.Client, body: bytes, n: int) -> tuple[list[float], dict[int, int]]:
    """``n`` sequential POSTs of ``body`` to /predict: latencies in ms, and a count per status."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
        latencies.append((time.perf_counter() - t0) * 1000)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    return latencies, statuses


def in_process_ms(bento: str, rows: list[dict[str, Any]], n: int) -> float:
    """Median ms of validating and scoring ``rows`` with the Bento's model in this process, in a
    worker thread as BentoML runs a sync API (in the main thread the OpenMP pools of LightGBM and
    torch contend: several times slower on 2 cores)."""
    import bentoml

    from ontime.serving.online import Scorer

    model_tag = bentoml.bentos.get(bento).info.labels["model"]
    scorer = Scorer(bentoml.models.get(model_tag).path)

    def run() -> float:
        scorer.predict(scorer.validate(rows))  # warm up
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            scorer.predict(scorer.validate(rows))
            out.append((time.perf_counter() - t0) * 1000)
        return statistics.median(out)

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def summary(latencies: list[float]) -> str:
    p50, p90 = np.percentile(latencies, [50, 90])
    return f"median {p50:8.1f} ms  p90 {p90:8.1f} ms  max {max(latencies):8.1f} ms  (n={len(latencies)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bento", default=None, help="Bento tag (default: models/package.json)")
    parser.add_argument("--flights", type=int, default=256, help="flights per request")
    parser.add_argument("--requests", type=int, default=50, help="valid requests measured")
    parser.add_argument("--poisoned", type=int, default=3, help="requests per kind of unscorable flight")
    parser.add_argument("--warmup", type=int, default=5, help="valid requests before measuring")
    args = parser.parse_args(argv)
    bento = args.bento or default_bento()
    rows = flights(args.flights, seed=1)
    valid = json.dumps({"flights": rows}).encode()
    print(f"bento {bento}, BENTOML_HOME={os.environ.get('BENTOML_HOME', '~/bentoml')}, "
          f"{os.cpu_count()} CPUs, {args.flights} flights per request", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ontime-bench-") as tmp:
        environ = {
            **os.environ,
            "ONTIME_REQUEST_LOG": str(Path(tmp) / "requests.jsonl"),
            "BENTOML_DO_NOT_TRACK": "True",
        }
        try:
            with (
                serve_bento(bento, env=environ, output=Path(tmp) / "serve.log") as url,
                httpx.Client(base_url=url, timeout=120) as client,
            ):
                timed_posts(client, valid, args.warmup)
                served, statuses = timed_posts(client, valid, args.requests)
                bad = {
                    name: timed_posts(
                        client,
                        json.dumps({"flights": [{**rows[0], **change}, *rows[1:]]}).encode(),
                        args.poisoned,
                    )
                    for name, change in POISONS.items()
                    if args.poisoned
                }
        except ServeError as exc:
            raise SystemExit(str(exc)) from exc
    peer = in_process_ms(bento, rows, min(args.requests, 20))
    print(f"served, valid:            {summary(served)}  statuses {statuses}")
    for name, (latencies, codes) in bad.items():
        print(f"served, {name + ':':17} {summary(latencies)}  statuses {codes}")
    print(f"in process (peer):        median {peer:8.1f} ms")
    print(f"served / in process:      {statistics.median(served) / peer:.2f}x (median)")
    if statuses.get(200, 0) != args.requests:
        print(f"FAILED: valid requests answered {statuses}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
