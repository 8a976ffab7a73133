"""The serving benchmark's peer: the packaged model behind a plain FastAPI app, as a user would write it.

It loads the same bundle the Bento packs (``$ONTIME_MODEL_DIR``: the model's folder in BentoML's
store, which ``bench/serving.py`` resolves from the Bento's ``model`` label) with the same
:class:`~ontime.serving.online.Scorer`, and answers ``POST /predict`` with the service's contract:

- the body is the scorer's own ``PredictRequest`` (``{"flights": [<flight>, ...]}``, the same
  pydantic models the service's bodies are made from: ``Scorer.api_models``, on pydantic's
  ``BaseModel`` rather than BentoML's IODescriptor), validated by FastAPI; a body that fails it
  (not JSON, missing field, out of range, unknown key, ...) answers 400 with
  ``{"error": ..., "detail": [...]}`` as the service does;
- the flights are scored by :func:`~ontime.serving.scoring.score_records` (featurization and the
  model in one call, as the service's inner step does); a flight with no finite probability answers
  422 naming it, a scoring bug 500;
- the answer is the scorer's ``Predictions`` (``request_id``, one prediction per flight), and every
  scored flight is appended to the request log (``$ONTIME_REQUEST_LOG``) as the service does:
  the same lines (:func:`~ontime.serving.scoring.answers`) through a :class:`RequestLog`.

The endpoint is a plain ``def``, so FastAPI runs it in its threadpool; no batching, one process::

    ONTIME_MODEL_DIR=~/bentoml/models/ontime-delay/<version> ONTIME_REQUEST_LOG=/tmp/requests.jsonl \\
        .venv/bin/uvicorn fastapi_app:app --app-dir bench --workers 1 --port 3001
"""

import datetime as dt
import os
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ontime.serving.online import Scorer
from ontime.serving.requestlog import RequestLog
from ontime.serving.scoring import answers, score_records

SCORER = Scorer(os.environ["ONTIME_MODEL_DIR"])
SCORER.check_servable()
API = SCORER.api_models()
PredictRequest = API.predict_request
Predictions = API.predictions
RECORDS, RECORD = SCORER.serve.records, SCORER.serve.record
LOG = RequestLog()
LOG.open()

app = FastAPI(title="ontime (plain FastAPI peer)")


def error(status: int, message: str, detail: list[dict[str, Any]] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "detail": detail or []}, status_code=status)


@app.exception_handler(RequestValidationError)
async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    # loc as the service writes it (["flights", 0, "distance"]): without FastAPI's leading "body"
    detail = [{"loc": list(e["loc"][1:]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return error(400, f"{len(detail)} problem(s) with the request body", detail)


@app.get("/readyz")
def readyz() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/predict", response_model=Predictions)
def predict(body: PredictRequest) -> Any:  # type: ignore[valid-type]
    request_id = str(uuid.uuid4())
    sent = [r.model_dump() for r in getattr(body, RECORDS)]
    scored = score_records(SCORER, sent)
    failed = [(i, s) for i, s in enumerate(scored) if s.error is not None]
    if failed:
        if max(s.status for _, s in failed) >= 500:
            return error(500, "An unexpected error has occurred, please check the server log.")
        detail = [{"loc": [RECORDS, i], "msg": s.error, "type": "unscorable"} for i, s in failed]
        return error(422, f"{len(failed)} {RECORD}(s) could not be scored", detail)
    predictions, entries = answers(
        SCORER, API.prediction, sent, scored, request_id=request_id, version=SCORER.version,
        now=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    LOG.write(entries)
    return Predictions(request_id=request_id, predictions=predictions)
