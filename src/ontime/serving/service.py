"""The BentoML service: validated records (flights) in, probabilities out, every scored record logged.

Serve the packaged model (``dvc repro package`` builds both the model and the Bento)::

    bentoml serve ontime.serving.service:OntimeDelay   # from the repository: models/package.json's model
    bentoml serve "$(jq -r .bento_tag models/package.json)"   # the Bento (what a container runs)

Which model: a Bento serves the model it was built with, always (``served_model.json`` in its
code). From the repository the service serves ``ONTIME_MODEL`` if set, else the ``model_tag`` of
``models/package.json`` (``ONTIME_PACKAGE`` names another file): the model the committed
``dvc.lock`` built. Never ``latest``: experiments and other data sets package into the same store.

Two services, one public. ``OntimeDelay`` answers HTTP: it validates, calls the scorer, logs. It
reaches ``OntimeScorer`` (the adaptively batched ``score_batch``) through ``bentoml.depends``:
``bentoml serve`` runs a dependency as its own processes on a Unix socket in a private temp folder
(``_bentoml_impl/server/serving.py``: ``create_dependency_watcher``, ``_get_server_socket``), so the
inner step is on no TCP port and in no ``/docs.json``. (Within one service it could not be hidden:
``self.to_async`` calls the service's own ASGI app, middleware included, exactly as an outside
client does: ``_bentoml_impl/server/app.py``, ``create_instance``.)

HTTP contract (JSON, ``Content-Type: application/json``), in the names of params ``serve`` (the
default data's shown; a table of one's own has ``records``, ``record``, ``probability``, ``positive``):

- ``POST /predict`` ``{"flights": [<flight>, ...]}`` (1 to ``serve.max_batch_size`` flights) ->
  ``{"request_id": "<uuid4>", "predictions": [{"delay_probability": 0.31, "delayed": true,
  "model_version": "ontime-delay:<version>"}, ...]}``, one prediction per flight, in order.
- ``POST /predict_one`` ``{"flight": <flight>}`` -> ``{"request_id": ..., "delay_probability": ...,
  "delayed": ..., "model_version": ...}``.
- A ``<flight>`` (schema ``Flight``) is an object with the raw fields of the data (see
  ``/docs.json``: every field with its type, range, what training saw and whether it is required).
  Unknown fields, in a flight or at the top level of the body, are rejected.
- Errors are ``{"error": "<summary>", "detail": [{"loc": [...], "msg": "...", "type": "..."}, ...]}``
  (``detail`` may be empty; ``loc`` in the configured names, e.g. ``["flights", 0, "distance"]``):
  400 for a body that is not JSON or fails the schema (missing field,
  wrong type, out of range, NaN/Infinity, unknown key, empty list, too many flights), 413 for a body
  over the size limit, 415 for a body that is not JSON by its Content-Type, 422 for a flight the
  model gives no finite probability (``loc`` names it; the request's other flights are not
  answered), 500 for a bug (the server log has the traceback), 503 when the scorer is overloaded
  or unreachable, 504 when scoring takes over ``TIMEOUT_S`` (e.g. while a crashed scorer
  restarts). ``/docs.json`` declares all of them.
- Also public: ``/livez``, ``/healthz``, ``/readyz`` (503 until the scorer is up), ``/metrics``
  (Prometheus), ``/docs.json``, the docs UI at ``/`` with its static files, and ``/schema.json``
  (what ``bentoml.SyncHTTPClient`` reads). Nothing else: ``/score_batch`` answers 404.

Names in BentoML: the request bodies are pydantic models made at import (``api_models``) with the
configured keys, passed as ``input_spec``. BentoML calls an API method with one keyword argument
per field of its input_spec (``_bentoml_impl/server/app.py``, ``api_endpoint``: ``call_kwargs =
{k: getattr(input_data, k) for k in input_data.model_fields}``) and does not compare the spec with
the method's signature, so the methods take ``**body`` and read the configured key. (A field named
``args`` or ``kwargs`` would be spread as ``*args``/``**kwargs``: ``ServeConfig`` refuses them.)

Logging: a request rejected for its content (400) is one INFO line (path, error count, the first
error's location and type; BentoML's trace and span ids), never a traceback echoing the input.

Environment: ``ONTIME_MODEL`` (a pinned model tag; ignored inside a Bento), ``ONTIME_REQUEST_LOG``
(default ``<repository>/logs/requests.jsonl`` from a checkout, ``$BENTOML_HOME/logs/ontime-requests.jsonl``
in a Bento), ``ONTIME_REQUEST_LOG_MAX_BYTES`` (default 52428800) and ``ONTIME_REQUEST_LOG_BACKUPS``
(default 10): size rotation, see ``ontime.serving.requestlog``; ``ONTIME_WORKERS`` (worker processes
of each service, default 1),
``ONTIME_ADAPTIVE_BATCHING`` (``0`` turns adaptive batching off, for benchmarks).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp  # BentoML's client to the scorer (a dependency of bentoml)
import bentoml
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse

from ontime.io import read_json
from ontime.serving.online import Body, Scorer, openapi_examples
from ontime.serving.package import served_model_tag
from ontime.serving.requestlog import RequestLog, rotation_settings
from ontime.serving.scoring import Scored, answers, score_records

# A child of BentoML's logger, so `bentoml serve` prints it with its own (worker-tagged) lines.
log = logging.getLogger("bentoml.ontime")

MODEL_TAG, MODEL_SOURCE = served_model_tag()
TIMEOUT_S = 10  # scoring's budget per request (504 after it); a full batch scores in well under 1 s
WORKERS = int(os.environ.get("ONTIME_WORKERS", "1"))
BATCHING = os.environ.get("ONTIME_ADAPTIVE_BATCHING", "1") != "0"
MAX_LATENCY_MS = 2000  # the dispatcher answers 503 rather than let a flight wait longer than this

# The schema comes from the packaged bundle, at import (in both services), so /docs.json shows
# every field; the scorer's model is declared on OntimeScorer, which packs it into the Bento.
MODEL_REF = bentoml.models.BentoModel(MODEL_TAG)
MODEL_PATH = Path(MODEL_REF.resolve().path)
SCORER = Scorer(MODEL_PATH)
SCORER.check_servable()
rotation_settings()  # a bad ONTIME_REQUEST_LOG_* value stops `bentoml serve` before any worker starts
MAX_BATCH = SCORER.serve.max_batch_size
RECORDS, RECORD = SCORER.serve.records, SCORER.serve.record  # the body keys: "flights", "flight"
PROBABILITY, POSITIVE = SCORER.serve.probability, SCORER.serve.positive
# A record at its largest (every string field at 64 characters) is under 4 KiB of JSON.
MAX_BODY_BYTES = 4096 * MAX_BATCH + 65_536
# A rejected body is read (and discarded) up to this much before the answer, so that a client that
# sends its whole body before reading (Python's http.client) reads the 413, not a reset connection.
DRAIN_BYTES = 8 * MAX_BODY_BYTES


# ------------------------------------------------------------------------ request and answer ---
class RequestBody(Body, bentoml.IODescriptor):
    """A request body BentoML reads; unknown top-level keys are rejected (BentoML's own input model,
    made from the method's signature, would ignore them)."""


# PredictRequest {<records>: [<Record>, ...]}, PredictOneRequest {<record>: <Record>}, and the answers
# Prediction, Predictions, OnePrediction with the <probability> and <positive> keys (params serve).
API = SCORER.api_models(body=RequestBody)


class ErrorDetail(BaseModel):
    """One problem with a request (pydantic's error format; it may carry more keys, e.g. ``url``)."""

    model_config = ConfigDict(extra="allow")
    loc: list[str | int] = Field(
        description=f'where: the path to the field, e.g. ["{RECORDS}", 0, "<field>"]'
    )
    msg: str = Field(description="what is wrong, and the fix")
    type: str = Field(description="the kind of problem, e.g. missing, greater_than_equal, unscorable")


class ErrorBody(BaseModel):
    """Every error this service answers (BentoML's own 504 after its traffic timeout has no detail)."""

    error: str = Field(description="a summary")
    detail: list[ErrorDetail] = Field(default_factory=list, description="one entry per problem; may be empty")


# ----------------------------------------------------------------------------------- errors ---
SERVER_ERROR = "An unexpected error has occurred, please check the server log."
ERRORS = {  # status -> when (declared on every public POST endpoint in /docs.json)
    400: "the body is not JSON, or fails the schema: one detail entry per problem",
    413: f"the body is over {MAX_BODY_BYTES} bytes",
    415: "the Content-Type is not application/json",
    422: f"a {RECORD} the model gives no finite probability; detail names each (loc: {RECORDS}, index)",
    500: "a bug; the server log has the traceback",
    503: "the scorer is overloaded (its batching queue is full) or unreachable; retry later",
    504: f"scoring took over {TIMEOUT_S} s",
}


def error_response(status: int, error: str, detail: list[dict[str, Any]] | None = None) -> JSONResponse:
    """The error body every error of this service shares with BentoML's validation errors."""
    return JSONResponse({"error": error, "detail": detail or []}, status_code=status)


class ClientErrorLog(logging.Filter):
    """BentoML logs a request that fails validation at ERROR with a traceback that echoes the
    client's input (``_bentoml_impl/server/app.py`` ``api_endpoint_wrapper``: ``except
    ValidationError: log_exception(request)``; ``bentoml/_internal/server/http_app.py``
    ``log_exception``: ``logger.error(..., exc_info=True)``). A client's mistake is no server error:
    this filter, on that logger, turns such a record into one INFO line that names the path, the
    number of errors and the first one's location and type, never its input."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ValidationError):
            status, errors = 400, exc.errors(include_input=False, include_context=False, include_url=False)
        elif isinstance(exc, BentoMLException) and exc.error_code < 500:
            status, errors = int(exc.error_code), []
        else:
            return True
        path = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        loc = ".".join(str(part)[:64] for part in errors[0]["loc"]) if errors else ""
        kind = errors[0]["type"] if errors else type(exc).__name__
        record.msg = "client error %d on %s: %d problem(s), first at %s (%s)"
        record.args = (status, path, len(errors), loc or "-", kind)
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return True


def install_client_error_log() -> None:
    logger = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, ClientErrorLog) for f in logger.filters):
        logger.addFilter(ClientErrorLog())


install_client_error_log()


# ---------------------------------------------------------------------------------- OpenAPI ---
REF = "#/components/schemas/{model}"


def public_openapi(spec: dict[str, Any]) -> dict[str, Any]:
    """BentoML's generated spec (``_bentoml_sdk/service/openapi.py``: ``generate_spec``) made true:
    it declares only 400 (``detail`` a string), 404 and 500 for every API (``error_responses``),
    and offers no hook to change that. Here every public POST endpoint declares the errors it does
    answer (``ERRORS``) with the shared ``ErrorBody``, and ``/readyz`` its 503. Each field shows
    its example, and each request body a complete valid one (:func:`openapi_examples`): what
    Swagger UI's "Try it out" sends."""
    schemas = spec["components"]["schemas"]
    for unused in ("InvalidArgument", "NotFound", "InternalServerError", "TaskStatusResponse"):
        schemas.pop(unused, None)
    error_schema = ErrorBody.model_json_schema(ref_template=REF)
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorBody"] = error_schema
    error_content = {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}}
    for item in spec["paths"].values():
        if "post" in item:
            responses = item["post"]["responses"]
            ok = responses.get("200", responses.get(200))
            item["post"]["responses"] = {
                "200": ok,
                **{str(code): {"description": why, "content": error_content} for code, why in ERRORS.items()},
            }
    if "/readyz" in spec["paths"]:
        spec["paths"]["/readyz"]["get"]["responses"]["503"] = {
            "description": "not ready: the model or the scorer is not up yet"
        }
    return openapi_examples(spec)


@functools.cache
def openapi_spec() -> dict[str, Any]:
    return public_openapi(OntimeDelay.openapi_spec.asdict())  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------- ASGI guard ---
class RequestGuard:
    """The public service's front door, before BentoML reads a request: GET /docs.json answers the
    spec of :func:`public_openapi`; a POST body over ``max_bytes`` gets 413 and one not JSON by its
    Content-Type 415 (uvicorn itself sets no body limit), after the body is read and discarded up
    to ``drain_bytes``."""

    def __init__(self, app: Any, max_bytes: int, drain_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == "/docs.json":
            await JSONResponse(openapi_spec())(scope, receive, send)
            return
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
        too_big = f"request body over {self.max_bytes} bytes; send at most {MAX_BATCH} {RECORDS} per request"
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
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._reject(scope, receive, send, 413, too_big, read=len(body), done=not more)
                return
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(
        self,
        scope: Any,
        receive: Any,
        send: Any,
        status: int,
        message: str,
        *,
        read: int = 0,
        done: bool = False,
    ) -> None:
        while not done and read <= self.drain_bytes:
            chunk = await receive()
            if chunk["type"] == "http.disconnect":
                return
            read += len(chunk.get("body", b""))
            done = not chunk.get("more_body", False)
        response = error_response(status, message)
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


# -------------------------------------------------------------------------------- services ---
# The public service's calls to the scorer never renew their session: by default BentoML's client
# renews it every 100 calls or 300 s, which cuts the calls in flight (500s under load). These
# settings are read from the dependency's config (`_bentoml_impl/client/proxy2.py`, RemoteProxy).
@bentoml.service(
    traffic={"timeout": TIMEOUT_S},
    workers=WORKERS,
    runner_connection={"max_requests": 2**62, "max_age": 1e12},
)
class OntimeScorer:
    """Internal: the adaptively batched scoring step; reachable only through OntimeDelay."""

    model = MODEL_REF  # packed into the Bento with the service

    def __init__(self) -> None:
        self.scorer = SCORER
        log.info("ontime: scorer of %s ready, adaptive batching %s", SCORER.version, BATCHING)

    def __is_ready__(self) -> bool:
        return self.scorer is not None

    @bentoml.api(batchable=BATCHING, max_batch_size=max(2, MAX_BATCH), max_latency_ms=MAX_LATENCY_MS)
    def score_batch(self, flights: list[dict[str, Any]]) -> list[Scored]:
        """Validated records (rows of several requests, batched) -> one answer per record. (The
        parameter keeps its name whatever ``serve.records`` is: this API is internal.)"""
        return score_records(self.scorer, flights)


# BentoML's own 504 (its traffic timeout) is a backstop behind this service's TIMEOUT_S for scoring.
@bentoml.service(traffic={"timeout": TIMEOUT_S + 5}, workers=WORKERS)
class OntimeDelay:
    """The packaged champion: the probability of the positive class for each record it is sent."""

    scoring = bentoml.depends(OntimeScorer)

    def __init__(self) -> None:
        self.scorer = SCORER
        self.version = SCORER.version
        self.log = RequestLog()
        self.log.open()  # fail at start, not on the first request, when the log cannot be written
        card = read_json(MODEL_PATH / "model_card.json")
        lineage = card.get("lineage") or {}
        log.info(
            "ontime: serving %s (from %s): champion %s (runtime %s), data %s, source data %s, split %s, "
            "git %s; request log %s, batching %s",
            self.version,
            MODEL_SOURCE,
            card.get("champion"),
            SCORER.runtime,
            SCORER.data.name,
            lineage.get("collect", {}).get("outs"),
            lineage.get("split", {}).get("outs"),
            card.get("git", {}).get("commit"),
            self.log,
            BATCHING,
        )

    def __is_ready__(self) -> bool:
        return self.scorer is not None

    # BentoML calls each with one keyword argument per field of its input_spec: {RECORDS: [...]} and
    # {RECORD: {...}}, keys that come from params (see the module's docstring).
    @bentoml.api(route="/predict", input_spec=API.predict_request, output_spec=API.predictions)
    async def predict(self, **body: Any) -> Any:
        """Probability and decision for each record (1 to serve.max_batch_size per request)."""
        answer = await self._answer(body[RECORDS], loc=lambda i: [RECORDS, i])
        if isinstance(answer, JSONResponse):
            return answer
        request_id, predictions = answer
        return API.predictions(request_id=request_id, predictions=predictions)

    @bentoml.api(route="/predict_one", input_spec=API.predict_one_request, output_spec=API.one_prediction)
    async def predict_one(self, **body: Any) -> Any:
        """Probability and decision for one record."""
        answer = await self._answer([body[RECORD]], loc=lambda i: [RECORD])
        if isinstance(answer, JSONResponse):
            return answer
        request_id, predictions = answer
        return API.one_prediction(request_id=request_id, **predictions[0].model_dump())

    # -------------------------------------------------------------------------------------------
    async def _answer(
        self, records: list[Any], *, loc: Callable[[int], list[str | int]]
    ) -> tuple[str, list[BaseModel]] | JSONResponse:
        """Score, log and answer; ``loc(i)`` locates record ``i`` in the request for a 422."""
        try:
            return await self._scored(records, loc)
        except Exception:
            log.exception("answering %d %s failed", len(records), RECORDS)
            return error_response(500, SERVER_ERROR)

    async def _score(self, records: list[dict[str, Any]]) -> list[Scored] | JSONResponse:
        """The scorer's answers, or the error response when it did not answer in time or at all."""
        try:
            async with asyncio.timeout(TIMEOUT_S):
                try:
                    raw = await self.scoring.to_async.score_batch(flights=records)
                except (aiohttp.ClientError, OSError) as exc:
                    # A kept-alive connection the scorer closed while idle (its keep-alive timeout)
                    # fails on write ("Can not write request body"); scoring is pure, so one retry
                    # on a fresh connection is safe. A scorer that is really down fails again.
                    log.info("scoring %d record(s): retrying once after %s", len(records), exc)
                    raw = await self.scoring.to_async.score_batch(flights=records)
        except TimeoutError:
            log.warning("scoring %d record(s) took over %d s: answered 504", len(records), TIMEOUT_S)
            return error_response(504, f"scoring took over {TIMEOUT_S} s; retry later")
        except (aiohttp.ClientError, OSError) as exc:  # no connection: the scorer is down (restarting)
            log.warning(
                "scoring %d record(s): the scorer is unreachable (%s): answered 503", len(records), exc
            )
            return error_response(503, ERRORS[503])
        except BentoMLException as exc:  # the scorer's HTTP error, e.g. 503 from its batching queue
            status = 503 if exc.error_code == 503 else 500
            log.warning("scoring %d record(s): the scorer answered %d: answered %d", len(records),
                        exc.error_code, status)  # fmt: skip
            return error_response(status, ERRORS[503] if status == 503 else SERVER_ERROR)
        return [s if isinstance(s, Scored) else Scored.model_validate(s) for s in raw]

    async def _scored(
        self, records: list[Any], loc: Callable[[int], list[str | int]]
    ) -> tuple[str, list[BaseModel]] | JSONResponse:
        request_id = str(uuid.uuid4())
        dumped = [r.model_dump() for r in records]
        scored = await self._score(dumped)
        if isinstance(scored, JSONResponse):
            return scored
        failed = [(i, s) for i, s in enumerate(scored) if s.error is not None]
        if failed:
            if max(s.status for _, s in failed) >= 500:
                return error_response(500, SERVER_ERROR)  # the scorer logged the traceback, once
            detail = [{"loc": loc(i), "msg": s.error, "type": "unscorable"} for i, s in failed]
            return error_response(422, f"{len(failed)} {RECORD}(s) could not be scored", detail)
        predictions, entries = answers(
            self.scorer, API.prediction, dumped, scored, request_id=request_id, version=self.version,
            now=dt.datetime.now(dt.UTC),
        )  # fmt: skip
        self.log.write(entries)
        return request_id, predictions


OntimeDelay.add_asgi_middleware(  # type: ignore[attr-defined]
    RequestGuard, max_bytes=MAX_BODY_BYTES, drain_bytes=DRAIN_BYTES
)
