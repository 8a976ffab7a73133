"""Packaging and serving through the real thing: `dvc repro package` in a temp git+DVC repo (smoke
profile, tiny models), then `bentoml serve` of the built Bento on a free loopback port, with
BENTOML_HOME and the request log in temp folders. The server starts once for the module."""

from __future__ import annotations

import ast
import datetime as dt
import json
import logging
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.metrics import roc_auc_score

from ontime.candidates import ONNX_FILE, torch_folders
from ontime.candidates.onnx_model import OnnxCandidate
from ontime.candidates.torch_model import TorchCandidate
from ontime.errors import ConfigError, DataError
from ontime.serving.local import serve_bento
from ontime.serving.online import OPTIONAL_DERIVED, Scorer
from ontime.serving.requestlog import KEYS
from ontime.serving.requestlog import read as read_log
from ontime.serving.scoring import score_records
from tests.conftest import REPO, TORCH_CANDIDATES, SmokeRepo

# The champion is chosen among the candidates that hold the PyTorch model (alone or in an ensemble),
# so that a flight the model cannot score exists for certain: see `unscorable`.
N_FLIGHTS = 40


# ------------------------------------------------------------------------------------- helpers ---
def sh(args: Sequence[str], cwd: Path, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), cwd=cwd, env=environ, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()}


@dataclass
class Packaged:
    repo: Path
    home: Path
    model_tag: str
    bento_tag: str
    environ: dict[str, str]

    @property
    def bundle(self) -> Path:
        name, version = self.model_tag.split(":")
        return self.home / "models" / name / version


@dataclass
class Server:
    url: str
    log: Path
    client: httpx.Client
    output: Path  # what `bentoml serve` (both services, all workers) prints

    def output_size(self) -> int:
        return self.output.stat().st_size

    def output_since(self, offset: int, *, settle_s: float = 1.0) -> str:
        """The server's output after ``offset`` bytes, once it has stopped growing for ``settle_s``."""
        size, deadline = -1, time.monotonic() + 30
        while size != self.output_size() and time.monotonic() < deadline:
            size = self.output_size()
            time.sleep(settle_s)
        with self.output.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def predict(self, flights: list[dict[str, Any]]) -> dict[str, Any]:
        r = self.client.post("/predict", json={"flights": flights})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def logged(self) -> list[dict[str, Any]]:
        """The request log's entries so far (none before the first scored flight)."""
        return read_log(self.log)


# ------------------------------------------------------------------------------------ fixtures ---
@pytest.fixture(scope="module")
def packaged(smoke_repo: SmokeRepo) -> Packaged:
    """The smoke pipeline through `dvc repro` (session-wide, tests/conftest.py): model and Bento in a
    temp BentoML store; the champion is one of TORCH_CANDIDATES."""
    info = json.loads((smoke_repo.origin / "models/package.json").read_text())
    home = Path(smoke_repo.environ["BENTOML_HOME"])
    assert info["champion"] in TORCH_CANDIDATES, info
    return Packaged(smoke_repo.origin, home, info["model_tag"], info["bento_tag"], smoke_repo.environ)


@pytest.fixture(scope="module")
def scorer(packaged: Packaged) -> Scorer:
    return Scorer(packaged.bundle)


@contextmanager
def serve_packaged(packaged: Packaged, name: str) -> Iterator[Server]:
    """`bentoml serve` of the packaged Bento, its request log and output named ``name``; stopped
    (the server and its workers) on exit."""
    log = packaged.repo.parent / f"{name}-requests.jsonl"
    env = {**packaged.environ, "ONTIME_REQUEST_LOG": str(log)}
    output = packaged.repo.parent / f"{name}.log"
    with (
        serve_bento(packaged.bento_tag, env=env, output=output, cwd=packaged.repo) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield Server(url, log, client, output)


@pytest.fixture(scope="module")
def server(packaged: Packaged) -> Iterator[Server]:
    """`bentoml serve` of the packaged Bento; stopped after the module."""
    with serve_packaged(packaged, "serve") as server:
        yield server


@pytest.fixture(scope="module")
def flights(packaged: Packaged, scorer: Scorer) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Test-window flights as raw rows (clean flights + their weather + the schedule counts) and
    their rows of the offline feature table, in the same order."""
    return window_flights(packaged, scorer, every=53, n=N_FLIGHTS)


def window_flights(
    packaged: Packaged, scorer: Scorer, *, every: int, n: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``n`` test-window flights (every ``every``-th), raw and as offline features."""
    repo = packaged.repo
    wx_cols = [f.column for f in scorer.fields if f.table == "weather"]
    weather = pl.read_parquet(repo / "data/clean/weather.parquet").select("origin", "time_hour", *wx_cols)
    start = dt.datetime(2013, 2, 10, tzinfo=dt.UTC)
    raw = (
        pl.read_parquet(repo / "data/clean/flights.parquet")
        .filter(pl.col("time_hour") >= start)
        .sort("time_hour", "carrier", "flight")
        .gather_every(every)
        .join(weather, on=["origin", "time_hour"], how="left", maintain_order="left")
        .with_columns(
            pl.col("flight").cast(pl.String).alias("_flight"),
            (pl.col("sched_dep_time") // 100 * 60 + pl.col("sched_dep_time") % 100)
            .cast(pl.Int32)
            .alias("_dep_minute"),
        )
    )
    key = ["carrier", "_flight", "origin", "time_hour", "_dep_minute"]
    offline = (
        pl.read_parquet(repo / "data/features/features.parquet")
        .with_columns(
            pl.col("time_hour").dt.convert_time_zone("UTC"),
            pl.col("flight").alias("_flight"),
            pl.col("sched_dep_minute").alias("_dep_minute"),
        )
        .filter(pl.struct(key).is_unique())
    )
    matched = raw.join(
        offline.select(*key, pl.int_range(pl.len()).alias("_i")), on=key, how="inner", maintain_order="left"
    ).head(n)
    assert matched.height == n, matched.height
    rows = offline[matched.get_column("_i").to_list()]
    raw = matched.drop("_flight", "_dep_minute", "_i").with_columns(rows.select(*OPTIONAL_DERIVED))
    return raw, rows.select(scorer.spec.columns)


def request_rows(scorer: Scorer, raw: pl.DataFrame) -> list[dict[str, Any]]:
    names = [f.name for f in scorer.fields]
    return [jsonable(r) for r in raw.select(names).to_dicts()]


@pytest.fixture(scope="module")
def unscorable(scorer: Scorer, flights: tuple[pl.DataFrame, pl.DataFrame]) -> dict[str, Any]:
    """A flight that passes the schema (pressure has no range) but that the model cannot score:
    -1e308 hPa, z-scored, is far outside float32, so it reaches the model as -inf; the periodic
    embedding takes cos(-inf) = NaN, and NaN spreads through the network and through any ensemble
    holding it (the champion is one of TORCH_CANDIDATES), so the probability is NaN for certain."""
    flight = {**request_rows(scorer, flights[0])[0], "pressure": -1e308}
    p = scorer.predict(scorer.validate([flight]))[0]["delay_probability"]
    assert math.isnan(p), f"the champion scored pressure=-1e308 as {p}; it must be unscorable"
    return flight


# ------------------------------------------------------------------------------ in-process parts ---
def test_bundle_and_metadata(packaged: Packaged, scorer: Scorer) -> None:
    bundle = packaged.bundle
    info = json.loads((bundle / "bundle.json").read_text())
    assert set(info) == {"version", "runtime", "onnx_max_abs_diff"}, info  # the champion has a network
    assert info["version"] == packaged.model_tag
    assert sorted(p.name for p in (bundle / "lookups").iterdir()) == ["airports.parquet", "planes.parquet"]
    # the clean stage's recorded schema, which the request fields come from
    assert (bundle / "schema.json").read_bytes() == (packaged.repo / "data/clean/schema.json").read_bytes()
    assert scorer.schema is not None
    assert scorer.version == packaged.model_tag
    model_yaml = (bundle / "model.yaml").read_text()
    for key in ("test_metrics", "valid_metrics", "threshold", "data_version", "params_sha256", "git"):
        assert key in model_yaml, key
    card = json.loads((packaged.repo / "models/champion/model_card.json").read_text())
    assert card["champion"] in model_yaml
    assert packaged.bento_tag.startswith("ontime-delay-service:")


def networks(candidate: Any) -> list[Any]:
    """The candidate's networks: itself, or its ensemble members' (recursively); none for others."""
    if isinstance(candidate, OnnxCandidate | TorchCandidate):
        return [candidate]
    return [n for member in getattr(candidate, "members", []) for n in networks(member)]


def test_the_networks_run_in_onnx_runtime_as_in_pytorch(
    packaged: Packaged,
    scorer: Scorer,
    server: Server,
    flights: tuple[pl.DataFrame, pl.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # serve.runtime auto and a champion holding a network: packaged for ONNX Runtime, every torch
    # folder with its model.onnx, and the answers those of PyTorch (ONTIME_RUNTIME=native).
    bundle = packaged.bundle
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["runtime"] == "onnx", info
    assert 0 <= info["onnx_max_abs_diff"] <= 1e-6, info
    folders = torch_folders(bundle)
    assert folders, "the champion holds no torch candidate"
    assert sorted(p.parent for p in bundle.rglob(ONNX_FILE)) == sorted(folders)
    assert scorer.runtime == "onnx"
    records = scorer.validate(request_rows(scorer, flights[0]))
    onnx_p = [p["delay_probability"] for p in scorer.predict(records)]
    monkeypatch.setenv("ONTIME_RUNTIME", "native")
    native = Scorer(bundle)
    assert native.runtime == "native"
    native_p = [p["delay_probability"] for p in native.predict(records)]
    diff = max(abs(a - b) for a, b in zip(onnx_p, native_p, strict=True))
    served = [p["delay_probability"] for p in server.predict(request_rows(scorer, flights[0]))["predictions"]]
    served_diff = max(abs(a - b) for a, b in zip(served, native_p, strict=True))
    # each network on its own too: an ensemble's weights may leave a network little say
    pairs = list(zip(networks(scorer.candidate), networks(native.candidate), strict=True))
    assert [(type(o), type(t)) for o, t in pairs] == [(OnnxCandidate, TorchCandidate)] * len(folders)
    member_diff = max(
        float(np.abs(o.predict_proba(flights[1]) - t.predict_proba(flights[1])).max()) for o, t in pairs
    )
    print(
        f"max abs difference from PyTorch: in process {diff:.3g}, served {served_diff:.3g}, "
        f"networks alone {member_diff:.3g}"
    )
    assert diff <= 1e-6, diff
    assert served_diff <= 1e-6, served_diff
    assert member_diff <= 1e-6, member_diff
    # ONTIME_RUNTIME takes native or onnx only, and onnx only for a bundle that has the files
    monkeypatch.setenv("ONTIME_RUNTIME", "torch")
    with pytest.raises(ConfigError, match=r"ONTIME_RUNTIME='torch': use native or onnx"):
        Scorer(bundle)
    plain = shutil.copytree(bundle, tmp_path / "bundle", ignore=shutil.ignore_patterns(ONNX_FILE))
    (plain / "bundle.json").write_text(json.dumps({"version": packaged.model_tag}))  # as before onnx
    monkeypatch.delenv("ONTIME_RUNTIME")
    assert Scorer(plain).runtime == "native"
    monkeypatch.setenv("ONTIME_RUNTIME", "onnx")
    with pytest.raises(DataError, match=r"packaged with runtime native and holds no model\.onnx"):
        Scorer(plain)


def test_online_features_equal_offline(scorer: Scorer, flights: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    raw, offline = flights
    records = scorer.validate(request_rows(scorer, raw))
    online = scorer.features(scorer.frame(records))
    assert_frame_equal(online, offline)


def test_batch_mates_never_mix(scorer: Scorer, flights: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    # Two flights at the same airport and hour with different forecasts, scored together (as
    # adaptive batching does with two requests) score as they do alone.
    raw, _ = flights
    a = scorer.validate(request_rows(scorer, raw.head(1)))[0]
    b = {**a, "wind_speed": 35.0, "precip": 0.8, "visib": 0.5, "temp": -5.0}
    together = [p["delay_probability"] for p in scorer.predict([a, b])]
    alone = [scorer.predict([a])[0]["delay_probability"], scorer.predict([b])[0]["delay_probability"]]
    assert together == pytest.approx(alone, abs=1e-9)
    assert alone[0] != pytest.approx(alone[1], abs=1e-9)


def test_package_refuses_a_missing_champion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ontime.serving import package
    from tests.conftest import SHRUNK, write_params

    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    params = write_params(tmp_path / "params.yaml", SHRUNK)
    with pytest.raises(DataError, match="champion folder is missing; run `dvc repro select`"):
        package.main(str(params), str(tmp_path / "nope"), str(tmp_path), str(tmp_path / "package.json"))
    assert not (tmp_path / "package.json").exists()


# ------------------------------------------------------------------------------- over HTTP ---
PUBLIC_PATHS = {"/healthz", "/livez", "/readyz", "/metrics", "/predict", "/predict_one"}
ERROR_STATUSES = {"400", "413", "415", "422", "500", "503", "504"}


def test_health_and_schema(server: Server, scorer: Scorer) -> None:
    for path in ("/livez", "/readyz", "/metrics"):
        assert server.client.get(path).status_code == 200, path
    assert "bentoml" in server.client.get("/metrics").text
    spec = server.client.get("/docs.json").json()
    assert set(spec["paths"]) == PUBLIC_PATHS
    flight = spec["components"]["schemas"]["Flight"]
    assert set(flight["properties"]) == {f.name for f in scorer.fields}
    assert set(flight["required"]) == {f.name for f in scorer.fields if f.required}
    assert flight["properties"]["distance"]["minimum"] == 1
    assert flight["properties"]["distance"]["maximum"] == 6000
    assert flight["additionalProperties"] is False
    for path, key in (("/predict", "flights"), ("/predict_one", "flight")):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["additionalProperties"] is False, path  # unknown top-level keys: 400
        assert body["required"] == [key], path
    flights = spec["components"]["schemas"]["PredictRequest"]["properties"]["flights"]
    assert (flights["minItems"], flights["maxItems"]) == (1, scorer.serve.max_batch_size)


def test_only_the_documented_endpoints_are_public(
    server: Server, scorer: Scorer, flights: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    # The batched inner step runs in its own service on a private Unix socket: from outside it is
    # not there at all, for any method or body (it once answered [] with 200 and a traceback).
    good = request_rows(scorer, flights[0])[0]
    for body in ([], {"flights": []}, {"flights": [good]}):
        r = server.client.post("/score_batch", json=body)
        assert r.status_code == 404, r.text
    assert server.client.get("/score_batch").status_code == 404
    routes = {route["route"] for route in server.client.get("/schema.json").json()["routes"]}
    assert routes == {"/predict", "/predict_one"}
    spec = server.client.get("/docs.json").json()
    assert "score_batch" not in json.dumps(spec)
    assert "Scored" not in spec["components"]["schemas"]
    assert server.client.get("/").status_code == 200  # the docs UI
    ui = server.client.get("/static_content/swagger-ui.css")
    assert ui.status_code == 200, ui.status_code


def test_openapi_declares_every_answer(server: Server) -> None:
    spec = server.client.get("/docs.json").json()
    schemas = spec["components"]["schemas"]
    error = schemas["ErrorBody"]
    assert error["required"] == ["error"]
    assert error["properties"]["detail"]["items"] == {"$ref": "#/components/schemas/ErrorDetail"}
    detail = schemas["ErrorDetail"]
    assert set(detail["required"]) == {"loc", "msg", "type"}
    assert detail["properties"]["loc"]["items"] == {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    assert not {"InvalidArgument", "NotFound", "InternalServerError"} & set(schemas)
    for path in ("/predict", "/predict_one"):
        responses = spec["paths"][path]["post"]["responses"]
        assert set(responses) == {"200", *ERROR_STATUSES}, path
        for status in ERROR_STATUSES:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]
    # what the spec says is what a 400 is: detail a list of {loc, msg, type}
    r = server.client.post("/predict", json={"flights": [{"distance": "far"}]})
    assert r.status_code == 400
    assert r.json()["detail"], r.text
    for entry in r.json()["detail"]:
        assert isinstance(entry["loc"], list), entry
        assert isinstance(entry["msg"], str), entry
        assert isinstance(entry["type"], str), entry


def test_single_and_batch(server: Server, scorer: Scorer, flights: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    rows = request_rows(scorer, flights[0])
    batch = server.predict(rows[:5])
    assert len(batch["predictions"]) == 5
    for p in batch["predictions"]:
        assert set(p) == {"delay_probability", "delayed", "model_version"}
        assert 0 <= p["delay_probability"] <= 1
        assert p["delayed"] == (p["delay_probability"] >= scorer.threshold)
        assert p["model_version"] == scorer.version
    one = server.client.post("/predict_one", json={"flight": rows[0]})
    assert one.status_code == 200, one.text
    assert one.json()["delay_probability"] == pytest.approx(
        batch["predictions"][0]["delay_probability"], abs=1e-6
    )
    assert one.json()["request_id"] != batch["request_id"]


def test_concurrent_requests_get_their_own_answers(
    server: Server, scorer: Scorer, flights: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    # Concurrent one-flight requests are batched together by the server; each still gets the
    # answer for its own flight (same airport and hour, different forecasts included).
    rows = request_rows(scorer, flights[0])[:6]
    rows += [{**rows[0], "wind_speed": 30.0 + i, "visib": 1.0} for i in range(6)]
    expected = [p["delay_probability"] for p in scorer.predict(scorer.validate(rows))]
    with ThreadPoolExecutor(max_workers=len(rows)) as pool:
        answers = list(pool.map(lambda r: server.predict([r]), rows))
    got = [a["predictions"][0]["delay_probability"] for a in answers]
    assert got == pytest.approx(expected, abs=1e-6)


def test_many_concurrent_requests_all_answered(
    server: Server, scorer: Scorer, flights: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    # More calls than BentoML's in-process client makes before renewing its session (100 by
    # default, which cut calls in flight): every one is answered.
    rows = request_rows(scorer, flights[0])
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda i: server.predict([rows[i % len(rows)]]), range(240)))
    assert len({a["request_id"] for a in answers}) == 240


def test_parity_with_ontime_predict(
    server: Server, packaged: Packaged, scorer: Scorer, flights: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    raw = flights[0]
    served = server.predict(request_rows(scorer, raw))["predictions"]
    # the whole clean rows, extra columns (dep_delay, label, ...) included: carried through
    raw.write_parquet(packaged.repo.parent / "flights.parquet")
    sh(
        [
            "ontime", "predict",
            "--input", str(packaged.repo.parent / "flights.parquet"),
            "--output", str(packaged.repo.parent / "predictions.parquet"),
            "--model", packaged.model_tag,
        ],
        packaged.repo,
        packaged.environ,
    )  # fmt: skip
    offline = pl.read_parquet(packaged.repo.parent / "predictions.parquet")
    assert offline.columns == [*raw.columns, "delay_probability", "delayed", "model_version"]
    assert_frame_equal(offline.select(raw.columns), raw)
    diff = max(
        abs(a - s["delay_probability"])
        for a, s in zip(offline.get_column("delay_probability"), served, strict=True)
    )
    assert diff < 1e-6, diff
    assert offline.get_column("model_version").unique().to_list() == [packaged.model_tag]
    # the default model is the one models/package.json names (what the service serves from the repo)
    sh(
        ["ontime", "predict", "--input", "../flights.parquet", "--output", "../default.parquet"],
        packaged.repo,
        packaged.environ,
    )
    default = pl.read_parquet(packaged.repo.parent / "default.parquet")
    assert_frame_equal(default, offline)


def test_request_log_holds_online_features(
    server: Server, scorer: Scorer, flights: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    raw, offline = flights
    body = server.predict(request_rows(scorer, raw))
    entries = [e for e in server.logged() if e["request_id"] == body["request_id"]]
    assert len(entries) == raw.height
    for entry, want, pred in zip(entries, offline.to_dicts(), body["predictions"], strict=True):
        assert tuple(entry) == KEYS
        assert dt.datetime.fromisoformat(entry["ts"]).utcoffset() == dt.timedelta(0)
        assert entry["model_version"] == scorer.version
        assert entry["probability"] == pred["delay_probability"]
        assert entry["decision"] == int(pred["delayed"])
        assert list(entry["features"]) == scorer.spec.columns
        for name, value in want.items():
            got = entry["features"][name]
            if isinstance(value, float):
                assert got == pytest.approx(value, rel=1e-12), name
            else:
                assert got == value, name


def bad_requests(good: dict[str, Any], max_batch: int) -> list[tuple[str, str | bytes, int, str]]:
    """(what, body, status, text the answer must contain)."""

    def one(**change: Any) -> str:
        return json.dumps({"flights": [{**good, **change}]})

    without_carrier = {k: v for k, v in good.items() if k != "carrier"}
    marker = 123456.789
    return [
        ("missing field", json.dumps({"flights": [without_carrier]}), 400, '"carrier"'),
        ("wrong type", one(distance="far"), 400, '"distance"'),
        ("month 13", one(time_hour="2013-13-01T10:00:00Z"), 400, "month value is outside"),
        ("negative distance", one(distance=-5), 400, "greater than or equal to 1"),
        ("hour 25", one(sched_dep_time=2500), 400, "less than or equal to 2359"),
        ("NaN", one(temp=marker).replace(str(marker), "NaN"), 400, "finite number"),
        ("Infinity", one(temp=marker).replace(str(marker), "-Infinity"), 400, "finite number"),
        ("NaN string", one(temp="NaN"), 400, "finite number"),
        ("unknown field", one(gate="B12"), 400, "Extra inputs are not permitted"),
        ("unknown top-level key", json.dumps({"flights": [good], "extra": 1}), 400, '"loc":["extra"]'),
        # over Int32: it once passed the schema and raised inside the scorer (see test_overflow...)
        ("flight over Int32", one(flight=2**31), 400, '"loc":["flights",0,"flight"]'),
        ("empty list", json.dumps({"flights": []}), 400, "at least 1 item"),
        ("over the limit", json.dumps({"flights": [good] * (max_batch + 1)}), 400, f"at most {max_batch}"),
        ("not JSON", "flights please", 400, "Invalid JSON"),
        ("empty body", "", 400, '"flights"'),
        ("not an object", "[1, 2]", 400, "should be an object"),
        ("oversized body", b"{" + b" " * 4_000_000 + b"}", 413, "request body over"),
    ]


def test_bad_requests_get_4xx_and_the_server_stays_healthy(
    server: Server, scorer: Scorer, flights: tuple[pl.DataFrame, pl.DataFrame], unscorable: dict[str, Any]
) -> None:
    good = request_rows(scorer, flights[0])[0]
    before = len(server.logged())
    cases = bad_requests(good, scorer.serve.max_batch_size)
    cases.append(("unscorable", json.dumps({"flights": [unscorable]}), 422, "wx_pressure"))
    # one unscorable flight fails its whole request, and the answer points at it
    both = json.dumps({"flights": [good, unscorable]})
    cases.append(("unscorable second", both, 422, '"loc":["flights",1]'))
    for what, body, status, text in cases:
        r = server.client.post("/predict", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == status, (what, r.status_code, r.text[:500])
        assert text in r.text, (what, r.text[:500])
        assert set(r.json()) == {"error", "detail"}, what
    r = server.client.post(
        "/predict", content=json.dumps({"flights": [good]}), headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 415, r.text
    r = server.client.post("/predict_one", json={"flights": [good]})
    assert r.status_code == 400
    assert '"flight"' in r.text
    r = server.client.post("/predict_one", json={"flight": good, "extra": 1})
    assert r.status_code == 400, r.text
    r = server.client.post("/predict_one", json={"flight": unscorable})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["flight"], r.text
    assert len(server.logged()) == before  # nothing rejected was logged
    assert server.client.get("/readyz").status_code == 200
    assert server.predict([good])["predictions"][0]["model_version"] == scorer.version


def body_limit(server: Server) -> int:
    """The body size limit, as /docs.json declares it for 413."""
    spec = server.client.get("/docs.json").json()
    found = re.search(
        r"over (\d+) bytes", spec["paths"]["/predict"]["post"]["responses"]["413"]["description"]
    )
    assert found, spec["paths"]["/predict"]["post"]["responses"]["413"]
    return int(found.group(1))


def test_a_body_over_the_limit_gets_413_with_the_standard_library(server: Server) -> None:
    # http.client sends the whole body before it reads the answer: the server reads (and discards)
    # it before answering 413, so the client reads the 413, not a reset connection.
    limit = body_limit(server)
    for size in (limit + 1, 3 * limit):
        request = urllib.request.Request(
            f"{server.url}/predict", data=b" " * size, headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=60)
        assert caught.value.code == 413, size
        body = json.loads(caught.value.read())
        assert body["error"].startswith(f"request body over {limit} bytes"), body
        assert body["detail"] == []
    assert server.client.get("/readyz").status_code == 200


def concurrently(calls: list[tuple[str, Any]], workers: int = 12) -> list[tuple[str, httpx.Response, float]]:
    """Run ``(label, call)`` pairs on a thread pool: (label, response, seconds) in the same order."""

    def run(item: tuple[str, Any]) -> tuple[str, httpx.Response, float]:
        t0 = time.perf_counter()
        response = item[1]()
        return item[0], response, time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, calls))


def test_a_poisoned_batch_does_not_hold_up_its_batch_mates(
    server: Server, scorer: Scorer, flights: tuple[pl.DataFrame, pl.DataFrame], unscorable: dict[str, Any]
) -> None:
    # Full batches each holding one flight the model cannot score, among concurrent valid requests
    # that adaptive batching puts in the same scoring calls: the valid ones get 200, the poisoned
    # ones 422 naming their flight, nobody a 5xx (a re-scored batch once took 7-9 s and the queue
    # shed the others with 503), and the scorer neither retried nor logged a traceback.
    rows = request_rows(scorer, flights[0])
    n = scorer.serve.max_batch_size
    full = [rows[i % len(rows)] for i in range(n)]
    offset = server.output_size()
    post = server.client.post
    calls: list[tuple[str, Any]] = []
    for k in range(6):
        at = (37 * k) % n
        poisoned = [*full[:at], unscorable, *full[at + 1 :]]
        calls.append(
            (f"poisoned {at}", lambda b=poisoned: server.client.post("/predict", json={"flights": b}))
        )
        for i in range(5):
            some = full[: 1 + (7 * i + k) % 40]
            calls.append(("valid", lambda b=some: post("/predict", json={"flights": b})))
    answers = concurrently(calls)
    for label, r, _ in answers:
        assert r.status_code < 500, (label, r.status_code, r.text[:300])
        if label == "valid":
            assert r.status_code == 200, (label, r.text[:300])
        else:
            at = int(label.split()[1])
            assert r.status_code == 422, (label, r.text[:300])
            assert [d["loc"] for d in r.json()["detail"]] == [["flights", at]], r.text[:300]
    said = server.output_since(offset)
    assert "Traceback" not in said
    assert "row by row" not in said
    assert "re-scor" not in said
    slowest = max(seconds for _, _, seconds in answers)
    print(f"{len(answers)} concurrent requests, slowest {slowest:.2f} s")


def test_overflowing_flight_number_is_refused_not_scored(
    server: Server, scorer: Scorer, flights: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    # flight=2147483648 overflows the Int32 column: it passed the schema, made the scorer raise, and
    # its batch was re-scored row by row (504s and 503s for everyone). Now the schema refuses it.
    rows = request_rows(scorer, flights[0])
    n = scorer.serve.max_batch_size
    full = [rows[i % len(rows)] for i in range(n)]
    big = [{**full[0], "flight": 2**31}, *full[1:]]
    offset = server.output_size()
    calls: list[tuple[str, Any]] = [("big", lambda: server.client.post("/predict", json={"flights": big}))]
    calls += [
        ("valid", lambda: server.client.post("/predict", json={"flights": full[:3]})) for _ in range(10)
    ]
    for label, r, _ in concurrently(calls):
        if label == "big":
            assert r.status_code == 400, r.text[:300]
            assert r.json()["detail"][0]["loc"] == ["flights", 0, "flight"], r.text[:300]
        else:
            assert r.status_code == 200, r.text[:300]
    assert "Traceback" not in server.output_since(offset)


def test_client_errors_are_one_log_line_each(
    server: Server, scorer: Scorer, flights: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    # A 400 was an ERROR with a ~40-line traceback that echoed the client's input; now it is the
    # access log line and one INFO line naming the path and the first problem, without the input.
    good = request_rows(scorer, flights[0])[0]
    marker = "zz-client-input-zz"
    bad = [
        {"flights": [{**good, "distance": marker}]},
        {"flights": [{**good, "carrier": marker * 4}]},
        {"flights": [{**good, marker: 1}]},
        {"flights": [], marker: 1},
    ]
    offset = server.output_size()
    for i in range(20):
        r = server.client.post("/predict", json=bad[i % len(bad)])
        assert r.status_code == 400, r.text
    said = server.output_since(offset)
    lines = said.splitlines()
    assert len(lines) <= 2 * 20, said[-3000:]
    assert "Traceback" not in said
    assert "[ERROR]" not in said
    client_lines = [line for line in lines if "client error 400 on /predict" in line]
    assert len(client_lines) == 20, said[-3000:]
    assert "first at flights.0.distance (float_parsing)" in client_lines[0]
    for line in lines:  # the client's values never; its unknown key's name only as the location
        assert marker not in line.split("first at")[0], line


def test_a_batch_that_raises_answers_500_once_and_is_never_rescored(
    scorer: Scorer,
    flights: tuple[pl.DataFrame, pl.DataFrame],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The inner step with the real scorer, given (bypassing the schema, which refuses it) a flight
    # that overflows Int32: the one scoring call raises; every row gets a 500, one traceback is
    # logged, and the scorer is not called again.
    records = scorer.validate(request_rows(scorer, flights[0]))
    records[3] = {**records[3], "flight": 2**31}
    calls = []
    real = scorer.predict_frame

    def counted(raw: pl.DataFrame) -> Any:
        calls.append(raw.height)
        return real(raw)

    monkeypatch.setattr(scorer, "predict_frame", counted)
    with caplog.at_level(logging.INFO, logger="bentoml.ontime"):
        answers = score_records(scorer, records)
    assert [a.status for a in answers] == [500] * len(records)
    assert {a.error for a in answers} == {"internal error while scoring; the server log has the traceback"}
    assert all(a.probability is None and a.features == {} for a in answers)
    assert len(calls) <= 1  # frame() raised before scoring, or scoring raised: never again per row
    logged = [r for r in caplog.records if r.name == "bentoml.ontime"]
    assert len(logged) == 1, logged
    assert logged[0].levelno == logging.ERROR
    assert logged[0].exc_info is not None
    assert score_records(scorer, []) == []


def test_bentoml_client(server: Server, scorer: Scorer, flights: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    import bentoml

    rows = request_rows(scorer, flights[0])[:2]
    with bentoml.SyncHTTPClient(server.url) as client:
        out = client.predict(flights=rows)
        one = client.predict_one(flight=rows[0])
    assert [p["model_version"] for p in out["predictions"]] == [scorer.version] * 2
    assert one["delay_probability"] == pytest.approx(out["predictions"][0]["delay_probability"], abs=1e-6)


def test_log_counts_every_scored_flight_once(
    server: Server, scorer: Scorer, flights: tuple[pl.DataFrame, pl.DataFrame], unscorable: dict[str, Any]
) -> None:
    # Whatever ran before: the entries this test's requests add are one per flight answered 200,
    # in order, under their request's id, and none for a rejected request.
    rows = request_rows(scorer, flights[0])
    before = len(server.logged())
    batch = server.predict(rows[:3])
    bad = server.client.post("/predict", json={"flights": [{**rows[0], "distance": -5}]})
    assert bad.status_code == 400, bad.text
    failed = server.client.post("/predict", json={"flights": [rows[0], unscorable]})
    assert failed.status_code == 422, failed.text
    one = server.client.post("/predict_one", json={"flight": rows[3]})
    assert one.status_code == 200, one.text
    added = server.logged()[before:]
    assert [e["request_id"] for e in added] == [batch["request_id"]] * 3 + [one.json()["request_id"]]
    answered = [p["delay_probability"] for p in batch["predictions"]] + [one.json()["delay_probability"]]
    assert [e["probability"] for e in added] == answered
    assert [e["decision"] for e in added] == [int(p >= scorer.threshold) for p in answered]


# ------------------------------------------------------------------------- optional inputs ---
def readme_examples() -> dict[str, dict[str, Any]]:
    """The flights of the README's curl and Python examples, as a user copies them."""
    text = (REPO / "README.md").read_text()
    curl = re.search(r"-d '(\{\"flights\": \[.*?\]\})'", text, re.S)
    python = re.search(r"^flight = (\{.*?^\})", text, re.S | re.M)
    assert curl, "README.md lost its curl example"
    assert python, "README.md lost its Python example"
    return {"curl": json.loads(curl.group(1))["flights"][0], "python": ast.literal_eval(python.group(1))}


def group_fields(scorer: Scorer) -> dict[str, list[str]]:
    """Per optional group (featurize.optional): the request fields that feed it."""
    return {
        group: [f.name for f in scorer.fields if f.feature in columns]
        for group, columns in sorted(scorer.spec.optional.items())
    }


def blanked(scorer: Scorer, features: pl.DataFrame, group: str) -> pl.DataFrame:
    columns = scorer.spec.optional[group]
    return features.with_columns(pl.lit(None, dtype=features.schema[c]).alias(c) for c in columns)


def test_optional_means_seen_missing_in_training(server: Server, scorer: Scorer) -> None:
    required = {f.name for f in scorer.fields if f.required}
    optional = {f.name for f in scorer.fields if not f.required}
    groups = group_fields(scorer)
    assert set(groups) == {"aircraft", "schedule_counts", "weather"}
    assert groups["aircraft"] == ["tailnum", "tail_leg_of_day", "tail_legs_of_day"]
    assert set(groups["schedule_counts"]) == set(OPTIONAL_DERIVED)
    assert optional == {f for fields in groups.values() for f in fields}
    # never missing in training, so never optional: the flight number included
    assert {"flight", "carrier", "origin", "dest", "distance", "time_hour"} <= required
    example = readme_examples()["curl"]
    r = server.client.post(
        "/predict", json={"flights": [{k: v for k, v in example.items() if k != "flight"}]}
    )
    assert r.status_code == 400, r.text
    assert '"flight"' in r.text, r.text


def test_readme_examples_with_and_without_each_optional_group(server: Server, scorer: Scorer) -> None:
    # A request without a group is scored as training saw it: the group's features missing, which
    # is exactly what evaluate's optional_inputs measure. The README's examples answer 200 either way.
    for name, example in readme_examples().items():
        assert set(example) <= {f.name for f in scorer.fields}, name
        features = scorer.features(scorer.frame(scorer.validate([example])))
        full = server.predict([example])["predictions"][0]["delay_probability"]
        assert full == pytest.approx(float(scorer.candidate.predict_proba(features)[0]), abs=1e-6)
        for group, fields in group_fields(scorer).items():
            sent = {k: v for k, v in example.items() if k not in fields}
            got = server.predict([sent])["predictions"][0]["delay_probability"]
            expected = float(scorer.candidate.predict_proba(blanked(scorer, features, group))[0])
            assert got == pytest.approx(expected, abs=1e-6), (name, group)
            assert abs(got - full) < 0.3, (name, group, full, got)


def test_leaving_optional_groups_out_costs_little(server: Server, scorer: Scorer, packaged: Packaged) -> None:
    # Over HTTP, on a sample of the test window: full requests vs the same without each group.
    raw, _ = window_flights(packaged, scorer, every=5, n=600)
    rows = request_rows(scorer, raw)

    def score(flights: list[dict[str, Any]]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(flights), 200):
            out += [p["delay_probability"] for p in server.predict(flights[i : i + 200])["predictions"]]
        return out

    labels = raw.join(
        pl.read_parquet(packaged.repo / "data/clean/flights.parquet").select(
            "carrier", "flight", "origin", "time_hour", "sched_dep_time", "label"
        ),
        on=["carrier", "flight", "origin", "time_hour", "sched_dep_time"],
        how="left",
        maintain_order="left",
    ).get_column("label")
    assert labels.len() == raw.height
    assert labels.null_count() == 0

    full = score(rows)
    auc_full, mean_full = roc_auc_score(labels, full), sum(full) / len(full)
    table = {}
    for group, fields in group_fields(scorer).items():
        p = score([{k: v for k, v in r.items() if k not in fields} for r in rows])
        table[group] = (roc_auc_score(labels, p) - auc_full, sum(p) / len(p) - mean_full)
    print(f"full: ROC AUC {auc_full:.4f}, mean {mean_full:.4f}; without (ROC AUC, mean) change: {table}")
    assert abs(table["schedule_counts"][0]) <= 0.03, table
    assert abs(table["schedule_counts"][1]) <= 0.05, table
    for group, (d_auc, d_mean) in table.items():
        assert abs(d_mean) <= 0.05, (group, table)
        assert d_auc >= -0.1, (group, table)


def test_a_request_after_an_idle_pause_is_answered(
    server: Server, scorer: Scorer, flights: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    # The public service keeps its connection to the internal scorer alive; the scorer closes it
    # after its keep-alive timeout (uvicorn: 5 s). The next request must still get 200, not a 503.
    rows = request_rows(scorer, flights[0])[:1]
    first = server.predict(rows)["predictions"][0]["delay_probability"]
    time.sleep(7)
    assert server.predict(rows)["predictions"][0]["delay_probability"] == pytest.approx(first, abs=1e-9)
