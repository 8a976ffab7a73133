"""The ``serve`` section: the API's names, batch size, time window, request key and runtime."""

from __future__ import annotations

import keyword
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ontime.config import StrictModel
from ontime.config.split import Window

# Names an API model may not take: BentoML passes a body field named args or kwargs as *args or
# **kwargs (``_bentoml_impl/server/app.py``, api_endpoint), and the answer's own keys.
BENTOML_RESERVED = ("args", "kwargs", "ctx", "context")
ANSWER_KEYS = ("request_id", "predictions", "model_version")

# The service's other schemas in /docs.json, which the record's schema (``record`` title-cased) must
# not replace.
API_SCHEMAS = (
    "PredictRequest",
    "PredictOneRequest",
    "Prediction",
    "Predictions",
    "OnePrediction",
    "ErrorBody",
    "ErrorDetail",
)


class ServeConfig(StrictModel):
    request_tables: list[str] = Field(description="joined tables whose columns come in the request")
    time_window: Window = Field(
        description="[start, end) in UTC: the dates and times a request may carry (every Date or "
        "Datetime field); outside, it is rejected as implausible (a typo, a unix time, a placeholder)"
    )
    max_batch_size: int = Field(ge=1)
    records: str = Field(description="the request's list of records: POST /predict {records: [...]}")
    record: str = Field(description="POST /predict_one {record: {...}}; also the schema's name")
    probability: str = Field(description="the answer's probability field")
    positive: str = Field(description="the answer's decision field: probability >= threshold")
    model_name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]*$",
        description="the model's name in BentoML's store (lower-case letters, digits, -, _, .)",
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="request field -> what it means, with its unit (distance: miles); its description "
        "in /docs.json starts with this. A name that is no request field (a column this model does "
        "not need) is ignored",
    )
    key: list[str] = Field(
        default_factory=list,
        description="request fields that together identify a record (a flight: carrier, flight, "
        "origin, time_hour): the request log keeps them as its key, and late labels (`ontime "
        "outcomes`) are joined to served predictions by it; empty: the log keeps no key",
    )
    runtime: Literal["auto", "native", "onnx"] = Field(
        default="auto",
        description="how the service runs the champion's networks: onnx (ONNX Runtime; packaging "
        "fails when the champion holds no network), native (PyTorch, LightGBM, numpy as trained), "
        "auto (ONNX Runtime when the champion holds a network, else native)",
    )

    @field_validator("records", "record", "probability", "positive")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.isidentifier() or keyword.iskeyword(value) or value.startswith("_"):
            raise ValueError(
                f"{value!r} is not a usable name: use letters, digits and _ (not first), e.g. records"
            )
        if value in BENTOML_RESERVED or value in ANSWER_KEYS:
            raise ValueError(
                f"{value!r} is reserved (BentoML or the answer uses it: {BENTOML_RESERVED + ANSWER_KEYS}); "
                "pick another name"
            )
        return value

    @field_validator("fields")
    @classmethod
    def _meanings(cls, value: dict[str, str]) -> dict[str, str]:
        blank = sorted(name for name, meaning in value.items() if not meaning.strip())
        if blank:
            raise ValueError(f"{blank}: a blank meaning; say what the field is and its unit, or remove it")
        return {name: meaning.strip() for name, meaning in value.items()}

    @model_validator(mode="after")
    def _distinct(self) -> ServeConfig:
        if self.probability == self.positive:
            raise ValueError(f"probability and positive are both {self.positive!r}; give them two names")
        if self.record.title() in API_SCHEMAS:
            raise ValueError(
                f"record {self.record!r} would name its schema {self.record.title()!r}, which the "
                f"service's {API_SCHEMAS} already use; pick another name"
            )
        return self
