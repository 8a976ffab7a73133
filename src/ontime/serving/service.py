"""The BentoML service: validated flights in, delay probabilities out, every scored flight logged.

Serve the packaged model (``dvc repro package`` builds both the model and the Bento)::

    bentoml serve ontime.serving.service:OntimeDelay   # from the repository: models/package.json's model
    bentoml serve "$(jq -r .bento_tag models/package.json)"   # the Bento (what a container runs)

Which model: a Bento serves the model it was built with, always (``served_model.json`` in its
code). From the repository the service serves ``ONTIME_MODEL`` if set, else the ``model_tag`` of
``models/package.json`` (``ONTIME_PACKAGE`` names another file): the model the committed
``dvc.lock`` built. Never ``latest``: experiments and other data sets package into the same store.

HTTP contract (JSON, ``Content-Type: application/json``):

- ``POST /predict`` ``{"flights": [<flight>, ...]}`` (1 to ``serve.max_batch_size`` flights) ->
  ``{"request_id": "<uuid4>", "predictions": [{"delay_probability": 0.31, "delayed": true,
  "model_version": "ontime-delay:<version>"}, ...]}``, one prediction per flight, in order.
- ``POST /predict_one`` ``{"flight": <flight>}`` -> ``{"request_id": ..., "delay_probability": ...,
  "delayed": ..., "model_version": ...}``.
- A ``<flight>`` is an object with the raw fields of the data (see ``/docs.json``: every field with
  its type, range and whether it is required; unknown fields are rejected).
- Client mistakes get a 4xx and ``{"error": "<summary>", "detail": [{"loc": [...], "msg": "...",
  "type": "..."}]}``: 400 for a body that is not JSON or fails the schema (missing field, wrong
  type, out of range, NaN/Infinity, empty list, too many flights), 413 for a body over the size
  limit, 415 for a body that is not JSON by its Content-Type, 422 for a flight the model cannot
  score (a value so large the model overflows).
- ``POST /score_batch`` is the inner, adaptively batched step that ``/predict`` calls: it returns
  probabilities and the features the model saw, and logs nothing. Clients should not need it.
- ``/livez``, ``/readyz``, ``/metrics`` (Prometheus) come from BentoML.

Environment: ``ONTIME_MODEL`` (a pinned model tag; ignored inside a Bento), ``ONTIME_REQUEST_LOG``
(default ``logs/requests.jsonl``), ``ONTIME_WORKERS`` (default 1), ``ONTIME_ADAPTIVE_BATCHING``
(``0`` turns adaptive batching off, for benchmarks).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import uuid
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from ontime.errors import DataError
from ontime.io import read_json
from ontime.serving.online import Scorer
from ontime.serving.package import served_model_tag
from ontime.serving.requestlog import RequestLog, record

# A child of BentoML's logger, so `bentoml serve` prints it with its own (worker-tagged) lines.
log = logging.getLogger("bentoml.ontime")

MODEL_TAG, MODEL_SOURCE = served_model_tag()
TIMEOUT_S = 10  # a request's whole budget; scoring a full batch takes well under a second
WORKERS = int(os.environ.get("ONTIME_WORKERS", "1"))
BATCHING = os.environ.get("ONTIME_ADAPTIVE_BATCHING", "1") != "0"
MAX_LATENCY_MS = 2000  # the dispatcher answers 503 rather than let a flight wait longer than this
F32_MAX = float(np.finfo(np.float32).max)

# The schema comes from the packaged bundle, at import, so /docs.json shows every field.
MODEL_REF = bentoml.models.BentoModel(MODEL_TAG)
MODEL_PATH = Path(MODEL_REF.resolve().path)
SCORER = Scorer(MODEL_PATH)
SCORER.check_servable()
Flight = SCORER.Record
MAX_BATCH = SCORER.serve.max_batch_size
# A flight at its largest (every string field at 64 characters) is under 4 KiB of JSON.
MAX_BODY_BYTES = 4096 * MAX_BATCH + 65_536


# ------------------------------------------------------------------------------- response models ---
class Prediction(BaseModel):
    delay_probability: float = Field(ge=0, le=1, description="probability of arriving 15+ min late")
    delayed: bool = Field(description="delay_probability >= the model's decision threshold")
    model_version: str = Field(description="the BentoML model tag that scored the flight")


class Predictions(BaseModel):
    request_id: str = Field(description="uuid4 of this request, as in the request log")
    predictions: list[Prediction] = Field(description="one per flight, in the request's order")


class OnePrediction(Prediction):
    request_id: str = Field(description="uuid4 of this request, as in the request log")


class Scored(BaseModel):
    """The inner step's answer for one flight."""

    probability: float | None = Field(description="null when the flight could not be scored")
    features: dict[str, Any] = Field(description="the model's feature columns for the flight")
    error: str | None = None
    status: int = 200


# ------------------------------------------------------------------------------------ ASGI guard ---
def error_response(status: int, error: str, detail: list[dict[str, Any]] | None = None) -> JSONResponse:
    """The error body every 4xx of this service shares with BentoML's validation errors."""
    return JSONResponse({"error": error, "detail": detail or []}, status_code=status)


class RequestGuard:
    """Rejects a POST body over ``max_bytes`` (413) or not JSON by its Content-Type (415) before
    BentoML reads it; uvicorn itself sets no body limit."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype not in (b"", b"application/json"):
            name = ctype.decode("latin-1")
            await self._reject(scope, receive, send, 415, f"Content-Type {name!r} is not supported; "
                               "send JSON with Content-Type: application/json")  # fmt: skip
            return
        too_big = f"request body over {self.max_bytes} bytes; send at most {MAX_BATCH} flights per request"
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > self.max_bytes):
            if declared.strip().isdigit():
                await self._reject(scope, receive, send, 413, too_big)
            else:
                await self._reject(scope, receive, send, 400, "Content-Length is not a number")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._reject(scope, receive, send, 413, too_big)
                return
            more = message.get("more_body", False)
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _reject(scope: Any, receive: Any, send: Any, status: int, message: str) -> None:
        response = error_response(status, message)
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


# --------------------------------------------------------------------------------------- scoring ---
def score_flights(scorer: Scorer, records: list[dict[str, Any]]) -> list[Scored]:
    """Score validated records; a row the model cannot score gets an error, never the whole batch.

    Rows of several requests arrive together under adaptive batching: one bad row must not fail
    the others, so a failed batch is retried row by row.
    """
    try:
        features, probs = scorer.predict_frame(scorer.frame(records))
    except Exception:
        if len(records) == 1:
            raise
        log.exception("scoring a batch of %d failed; scoring row by row", len(records))
        return [_score_one(scorer, r) for r in records]
    return [_scored(row, float(p)) for row, p in zip(features.to_dicts(), probs, strict=True)]


def _score_one(scorer: Scorer, record_: dict[str, Any]) -> Scored:
    try:
        return score_flights(scorer, [record_])[0]
    except DataError as exc:
        return Scored(probability=None, features={}, error=str(exc), status=422)
    except Exception as exc:
        log.exception("scoring one flight failed")
        return Scored(probability=None, features={}, error=f"internal error: {exc}", status=500)


def _scored(features: dict[str, Any], p: float) -> Scored:
    if math.isfinite(p):
        return Scored(probability=p, features=features)
    bad = {k for k, v in features.items() if isinstance(v, float) and not abs(v) <= F32_MAX}
    huge = [f"{k}={features[k]!r}" for k in sorted(bad)]
    hint = f" ({', '.join(huge)} is outside the range the model computes in)" if huge else ""
    return Scored(
        probability=None,
        features={k: None if k in bad else v for k, v in features.items()},
        error=f"the model gives no finite probability for this flight{hint}; check its numeric fields",
        status=422,
    )


# --------------------------------------------------------------------------------------- service ---
# /predict reaches the batched step through BentoML's in-process client, which by default renews its
# session every 100 calls or 300 s and so cuts the calls in flight (500s under load): never renew.
@bentoml.service(
    traffic={"timeout": TIMEOUT_S},
    workers=WORKERS,
    runner_connection={"max_requests": 2**62, "max_age": 1e12},
)
class OntimeDelay:
    """Will a scheduled flight out of New York arrive 15+ minutes late (or be cancelled)?"""

    model = MODEL_REF  # packed into the Bento with the service

    def __init__(self) -> None:
        self.scorer = SCORER
        self.version = SCORER.version
        self.log = RequestLog()
        card = read_json(MODEL_PATH / "model_card.json")
        lineage = card.get("lineage") or {}
        log.info(
            "ontime: serving %s (from %s): champion %s, data %s, source data %s, split %s, git %s; "
            "request log %s, batching %s",
            self.version,
            MODEL_SOURCE,
            card.get("champion"),
            SCORER.data.name,
            lineage.get("collect", {}).get("outs"),
            lineage.get("split", {}).get("outs"),
            card.get("git", {}).get("commit"),
            self.log.path,
            BATCHING,
        )

    def __is_ready__(self) -> bool:
        return self.scorer is not None

    @bentoml.api(route="/predict")
    async def predict(
        self,
        flights: Annotated[
            list[Flight],  # type: ignore[valid-type]
            Field(min_length=1, max_length=MAX_BATCH, description="the flights to score"),
        ],
    ) -> Predictions:
        """Delay probability and decision for each flight (1 to serve.max_batch_size per request)."""
        answer = await self._answer(flights)
        if isinstance(answer, JSONResponse):
            return answer  # type: ignore[return-value]
        request_id, predictions = answer
        return Predictions(request_id=request_id, predictions=predictions)

    @bentoml.api(route="/predict_one")
    async def predict_one(self, flight: Flight) -> OnePrediction:  # type: ignore[valid-type]
        """Delay probability and decision for one flight."""
        answer = await self._answer([flight])
        if isinstance(answer, JSONResponse):
            return answer  # type: ignore[return-value]
        request_id, predictions = answer
        return OnePrediction(request_id=request_id, **predictions[0].model_dump())

    @bentoml.api(
        route="/score_batch",
        batchable=BATCHING,
        max_batch_size=max(2, MAX_BATCH),
        max_latency_ms=MAX_LATENCY_MS,
    )
    def score_batch(
        self,
        flights: Annotated[list[Flight], Field(max_length=MAX_BATCH)],  # type: ignore[valid-type]
    ) -> list[Scored]:
        """Inner step of /predict (adaptively batched): probabilities and features; logs nothing."""
        return score_flights(self.scorer, [f.model_dump() for f in flights])  # type: ignore[attr-defined]

    # -------------------------------------------------------------------------------------------
    async def _answer(self, flights: list[Any]) -> tuple[str, list[Prediction]] | JSONResponse:
        request_id = str(uuid.uuid4())
        raw = await self.to_async.score_batch(flights=flights)  # type: ignore[attr-defined]
        scored = [s if isinstance(s, Scored) else Scored.model_validate(s) for s in raw]
        failed = [(i, s) for i, s in enumerate(scored) if s.error is not None]
        if failed:
            status = max(s.status for _, s in failed)
            if status >= 500:
                return error_response(500, "An unexpected error has occurred, please check the server log.")
            detail = [{"loc": ["flights", i], "msg": s.error, "type": "unscorable"} for i, s in failed]
            return error_response(422, f"{len(failed)} flight(s) could not be scored", detail)
        now = dt.datetime.now(dt.UTC)
        threshold = self.scorer.threshold
        predictions = []
        entries = []
        for s in scored:
            assert s.probability is not None
            delayed = s.probability >= threshold
            predictions.append(
                Prediction(delay_probability=s.probability, delayed=delayed, model_version=self.version)
            )
            entries.append(
                record(
                    ts=now,
                    request_id=request_id,
                    model_version=self.version,
                    features=s.features,
                    probability=s.probability,
                    decision=int(delayed),
                )
            )
        self.log.write(entries)
        return request_id, predictions


OntimeDelay.add_asgi_middleware(RequestGuard, max_bytes=MAX_BODY_BYTES)  # type: ignore[attr-defined]
