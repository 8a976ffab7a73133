"""The service's inner step: score a batch of validated records in one call, answer per record.

Under adaptive batching the rows of several requests arrive together, so a batch must never fail
its batch mates for one row. A record whose probability is not finite gets a 422 of its own (the
model scored the batch; that row's answer is NaN). Scoring itself does not raise for a record the
request schema accepts (every value fits its column type, range and format); if it raises all the
same, that is a bug: every record of the batch gets a 500, the traceback is logged once, and
nothing is scored again (re-scoring row by row took seconds per request, so the batching queue shed
the batch mates' requests with 503s).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from ontime.serving.online import Scorer
from ontime.serving.requestlog import flight_key, record

# A child of BentoML's logger, so `bentoml serve` prints it with its own (worker-tagged) lines.
log = logging.getLogger("bentoml.ontime")

F32_MAX = float(np.finfo(np.float32).max)
INTERNAL = "internal error while scoring; the server log has the traceback"


class Scored(BaseModel):
    """The inner step's answer for one record."""

    probability: float | None = Field(description="null when the record could not be scored")
    features: dict[str, Any] = Field(description="the model's feature columns for the record")
    error: str | None = None
    status: int = 200


def score_records(scorer: Scorer, records: list[dict[str, Any]]) -> list[Scored]:
    """One answer per record, in order, from ONE scoring call: a probability and the features, a
    422 for a row whose probability is not finite, or a 500 for every row when the call raises."""
    if not records:
        return []
    try:
        features, probs = scorer.predict_frame(scorer.frame(records))
    except Exception:
        log.exception(
            "scoring a batch of %d %s failed: all answered 500, none re-scored",
            len(records),
            scorer.serve.records,
        )
        return [Scored(probability=None, features={}, error=INTERNAL, status=500) for _ in records]
    noun = scorer.serve.record
    return [_scored(row, float(p), noun) for row, p in zip(features.to_dicts(), probs, strict=True)]


def _scored(features: dict[str, Any], p: float, noun: str) -> Scored:
    if math.isfinite(p):
        return Scored(probability=p, features=features)
    bad = {k for k, v in features.items() if isinstance(v, float) and not abs(v) <= F32_MAX}
    huge = [f"{k}={features[k]!r}" for k in sorted(bad)]
    hint = f" ({', '.join(huge)} is outside the range the model computes in)" if huge else ""
    return Scored(
        probability=None,
        features={k: None if k in bad else v for k, v in features.items()},
        error=f"the model gives no finite probability for this {noun}{hint}; check its numeric fields",
        status=422,
    )


def answers(
    scorer: Scorer,
    prediction: type[BaseModel],
    sent: list[dict[str, Any]],
    scored: list[Scored],
    *,
    request_id: str,
    version: str,
    now: dt.datetime,
) -> tuple[list[BaseModel], list[dict[str, Any]]]:
    """The answers (``prediction``: the API's model, fields named by params ``serve``) and the
    request-log entries for records ``sent`` that were all scored, in order; each entry keyed by
    the record's ``serve.key`` fields (``requestlog.flight_key``)."""
    names = scorer.serve
    predictions, entries = [], []
    for s, values in zip(scored, sent, strict=True):
        if s.probability is None:
            raise ValueError(f"answers: a record was not scored ({s.error}); answer its error instead")
        positive = s.probability >= scorer.threshold
        predictions.append(
            prediction(
                **{names.probability: s.probability, names.positive: positive, "model_version": version}
            )
        )
        entries.append(
            record(
                ts=now,
                request_id=request_id,
                model_version=version,
                key=flight_key(values, names.key),
                features=s.features,
                probability=s.probability,
                decision=int(positive),
            )
        )
    return predictions, entries
