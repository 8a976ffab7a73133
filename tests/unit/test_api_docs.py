"""What ``/docs.json`` (and Swagger UI, which reads it) tells a client about each field: what it is
and its unit (``serve.fields``), then its type and rules, and an example taken from what training
saw; and request bodies whose example is a complete valid record, so "Try it out" scores.

Fast, no server: the default data's fields come from the committed ``params.yaml`` and a schema
recorded here with the clean stage's own :func:`~ontime.data.collect.record_schema` on a few
flights; one's own table scores its example through a bundle made in-process
(``tests/unit/test_serving_names.py``); BentoML writes the OpenAPI spec of a service defined here.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import polars as pl
import pytest
import yaml
from pydantic import BaseModel

from ontime.config import section
from ontime.config.clean import LABEL, CleanConfig
from ontime.config.data import DataConfig
from ontime.config.featurize import FeaturizeConfig
from ontime.config.serve import ServeConfig
from ontime.data.clean import hhmm_violation
from ontime.data.collect import POLARS_DTYPES, record_schema
from ontime.errors import ConfigError
from ontime.serving.online import (
    Body,
    RecordedSchema,
    RequestField,
    Scorer,
    api_models,
    openapi_examples,
    record_example,
    request_fields,
    request_model,
)
from tests.conftest import REPO
from tests.unit import test_serving_names
from tests.unit.test_serving_names import own_fields

own_bundle = test_serving_names.own_bundle  # the fixture: a bundle of one's own table (module-wide)
TODAY = {dt.date.today().isoformat(), dt.datetime.now(dt.UTC).date().isoformat()}


# ------------------------------------------------------------------------------------ helpers ---
@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    """The committed params.yaml: what `dvc repro` packages and the service serves."""
    loaded: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text())
    return loaded


def flight_tables(data: DataConfig) -> dict[str, pl.DataFrame]:
    """Four cleaned flights and their weather, in the declared types (and clean's ``label``)."""
    utc = [dt.datetime(2013, 12, d, h, tzinfo=dt.UTC) for d, h in ((1, 11), (1, 14), (2, 22), (3, 4))]
    flights = {
        "year": [2013] * 4,
        "month": [12] * 4,
        "day": [1, 1, 2, 2],
        "dep_time": [607, 905, None, 2310],
        "sched_dep_time": [600, 900, 1730, 2305],
        "dep_delay": [7.0, 5.0, None, 5.0],
        "arr_time": [845, 1210, None, 135],
        "sched_arr_time": [830, 1200, 2015, 145],
        "arr_delay": [15.0, 10.0, None, -10.0],
        "carrier": ["UA", "B6", "UA", "DL"],
        "flight": [1545, 725, 1714, 461],
        "tailnum": ["N14228", "N804JB", "N24211", "N668DN"],
        "origin": ["EWR", "JFK", "LGA", "LGA"],
        "dest": ["IAH", "BQN", "IAH", "ATL"],
        "air_time": [227.0, 183.0, None, 116.0],
        "distance": [1400.0, 1576.0, 1416.0, 762.0],
        "hour": [6, 9, 17, 23],
        "minute": [0, 0, 30, 5],
        "time_hour": utc,
    }
    weather = {
        "origin": ["EWR", "JFK", "LGA", "LGA"],
        "year": [2013] * 4,
        "month": [12] * 4,
        "day": [1, 1, 2, 2],
        "hour": [6, 9, 17, 23],
        "temp": [39.02, 39.92, 41.0, None],
        "dewp": [26.06, 26.96, 28.04, 30.0],
        "humid": [59.37, 59.5, 60.1, 70.0],
        "wind_dir": [270.0, 250.0, None, 240.0],
        "wind_speed": [10.36, 8.06, 11.5, 0.0],
        "wind_gust": [None, None, 21.86, None],
        "precip": [0.0, 0.0, 0.02, 0.0],
        "pressure": [1012.0, 1012.3, None, 1011.9],
        "visib": [10.0, 10.0, 1.5, 10.0],
        "time_hour": utc,
    }

    def typed(table: str, columns: dict[str, list[Any]]) -> pl.DataFrame:
        dtypes = data.dtypes[table]
        schema = {c: POLARS_DTYPES[dtypes[c]] for c in columns}
        schema["time_hour"] = pl.Datetime("us", "UTC")
        return pl.DataFrame(columns, schema=schema)

    return {
        "flights": typed("flights", flights).with_columns(pl.lit(1, pl.Int8).alias(LABEL)),
        "weather": typed("weather", weather),
    }


def recorded(
    tables: dict[str, pl.DataFrame], data: DataConfig, extra: dict[str, dict[str, Any]] | None = None
) -> RecordedSchema:
    """The schema clean records for ``tables``, without its medians and modes (so the fallbacks
    are what is tested); ``extra``: ``table.column`` -> keys to add to it."""
    raw = json.loads(json.dumps(record_schema(tables, data.dtypes)))
    for table in raw["tables"].values():
        for column in table["columns"].values():
            column.pop("median", None)
            column.pop("mode", None)
    for name, keys in (extra or {}).items():
        table, column = name.split(".")
        raw["tables"][table]["columns"][column].update(keys)
    return RecordedSchema.model_validate(raw)


def flight_fields(params: dict[str, Any], schema: RecordedSchema | None) -> list[RequestField]:
    return request_fields(
        section(params, "data", DataConfig),
        section(params, "clean", CleanConfig),
        section(params, "featurize", FeaturizeConfig),
        section(params, "serve", ServeConfig),
        schema=schema,
    )


@pytest.fixture(scope="module")
def fields(params: dict[str, Any]) -> list[RequestField]:
    data = section(params, "data", DataConfig)
    return flight_fields(params, recorded(flight_tables(data), data))


@pytest.fixture(scope="module")
def flight(fields: list[RequestField]) -> type[BaseModel]:
    return request_model(fields, name="Flight")


def properties(model: type[BaseModel]) -> dict[str, Any]:
    props: dict[str, Any] = model.model_json_schema()["properties"]
    return props


def assert_documented(model: type[BaseModel], example: dict[str, Any]) -> None:
    """Every field has a description and an example; each example is valid in the record
    ``example`` (itself valid), none is Swagger's ``"string"`` or today's date."""
    model.model_validate_json(json.dumps(example))
    for name, prop in properties(model).items():
        assert prop.get("description"), name
        (value,) = prop["examples"]
        assert value != "string", name
        assert str(value)[:10] not in TODAY, (name, value)
        model.model_validate_json(json.dumps({**example, name: value}))


# ------------------------------------------------------------------------------ the examples ---
def test_every_flight_field_is_described_with_an_example(
    fields: list[RequestField], flight: type[BaseModel]
) -> None:
    example = record_example(fields)
    assert set(example) >= {f.name for f in fields if f.required}
    assert_documented(flight, example)


def test_examples_are_what_training_saw(fields: list[RequestField], flight: type[BaseModel]) -> None:
    ex = {name: prop["examples"][0] for name, prop in properties(flight).items()}
    assert ex["carrier"] == "B6"  # the first recorded category (the schema records no counts)
    assert ex["origin"] == "EWR"
    assert ex["distance"] == 1169.0  # the middle of 762 to 1576
    assert ex["flight"] == 1088  # the middle of 461 to 1714 (1087.5), rounded half up
    assert ex["sched_dep_time"] == 1453  # the middle of 600 to 2305, rounded half up
    assert ex["sched_arr_time"] == 1059  # 145 to 2015 -> 1080, minutes past 59 -> 10:59 (hhmm)
    assert hhmm_violation(ex["sched_arr_time"]) is None
    # 12:00 UTC on the last recorded day, or the day before when that is past the last time recorded
    # (2013-12-03T04:00), inside serve.time_window
    assert ex["time_hour"] == "2013-12-02T12:00:00Z"
    assert ex["temp"] == 40.01  # the middle of 39.02 to 41.0 (one missing)
    assert ex["wind_gust"] == 21.86  # one value seen: it
    # the traffic counts, derived in training, have no recorded values: a valid placeholder, left
    # out of the body (then missing, as training saw it), not a made-up count
    derived = {"origin_hour_departures", "tail_leg_of_day", "tail_legs_of_day"}
    assert all(ex[name] == 0 for name in derived)
    assert not derived & set(record_example(fields))


def test_a_recorded_median_and_mode_are_used(params: dict[str, Any]) -> None:
    data = section(params, "data", DataConfig)
    extra = {
        "flights.carrier": {"mode": "UA"},
        "flights.distance": {"median": 1408.0},
        "flights.sched_dep_time": {"median": 1317.5},  # rounded half up: 13:18
        "flights.time_hour": {"median": "2013-12-01T14:00:00+00:00"},
        "weather.temp": {"median": 150.0},  # past the plausible range (clean.outliers): moved inside
    }
    schema = recorded(flight_tables(data), data, extra)
    ex = {f.name: f.example for f in flight_fields(params, schema)}
    assert (ex["carrier"], ex["distance"], ex["sched_dep_time"]) == ("UA", 1408.0, 1318)
    assert ex["time_hour"] == "2013-12-01T12:00:00Z"
    assert ex["temp"] == 120.0


def test_without_a_recorded_schema_examples_are_placeholders_that_validate(params: dict[str, Any]) -> None:
    fields = flight_fields(params, None)  # a bundle packaged before schema.json: declared columns
    example = record_example(fields)
    assert set(example) == {f.name for f in fields if f.required}
    assert example["carrier"] == "<carrier>"  # text that reads as a placeholder, not as data
    assert example["time_hour"] == "2013-01-01T12:00:00Z"  # the window's first noon
    assert_documented(request_model(fields, name="Flight"), example)


# ----------------------------------------------------------------------------- the meanings ---
def test_the_configured_meaning_starts_each_description(
    params: dict[str, Any], flight: type[BaseModel]
) -> None:
    meanings = section(params, "serve", ServeConfig).fields
    props = properties(flight)
    assert set(props) <= set(meanings), "every flight field says what it is"
    for name, prop in props.items():
        assert prop["description"].startswith(meanings[name].rstrip(".") + ". "), name
    d = {name: prop["description"] for name, prop in props.items()}
    assert d["sched_dep_time"].startswith("scheduled departure, local time at the origin (hhmm). Integer")
    assert d["time_hour"].startswith("scheduled departure hour, UTC (ISO 8601). Date-time")
    assert d["distance"].startswith("distance between the airports, miles. Number (Float64)")
    assert "°F" in d["temp"]
    assert "millibars" in d["pressure"]
    # one's own table describes nothing yet (serve.fields: {}): the type comes first
    own = {f.name: f for f in own_fields()}
    assert own["age"].meaning is None
    meant = own_fields([*test_serving_names.OWN, "+serve.fields.age=age at sign-up in years"])
    model = request_model(meant)
    assert properties(model)["age"]["description"].startswith("age at sign-up in years. Integer (Int64)")


def test_a_blank_meaning_is_a_config_error(params: dict[str, Any]) -> None:
    bad = {**params["serve"], "fields": {"distance": " "}}
    with pytest.raises(ConfigError, match=r"serve\.fields: .*\['distance'\]: a blank meaning"):
        section({"serve": bad}, "serve", ServeConfig)


# ---------------------------------------------------------------------------- request bodies ---
def body_examples(api: Any) -> list[tuple[type[BaseModel], dict[str, Any]]]:
    """Each request body with the example its schema shows."""
    out = []
    for model in (api.predict_request, api.predict_one_request):
        ((key, prop),) = model.model_json_schema()["properties"].items()
        out.append((model, {key: prop["examples"][0]}))
    return out


def test_request_bodies_show_a_valid_example(
    params: dict[str, Any], fields: list[RequestField], flight: type[BaseModel]
) -> None:
    serve = section(params, "serve", ServeConfig)
    api = api_models(
        serve, flight, section(params, "clean", CleanConfig).label, example=record_example(fields)
    )
    (many, batch), (one, single) = body_examples(api)
    assert batch == {"flights": [record_example(fields)]}
    assert single == {"flight": record_example(fields)}
    many.model_validate_json(json.dumps(batch))
    one.model_validate_json(json.dumps(single))


def test_the_example_scores_through_a_bundle(own_bundle: Any) -> None:
    scorer = Scorer(own_bundle)
    api = scorer.api_models()
    (many, batch), (one, single) = body_examples(api)
    # what training saw, as collect recorded it: age's median (an integer: rounded half up), plan's
    # most frequent value, spend within its range
    table = test_serving_names.own_table()
    age, spend, record = table.get_column("age"), table.get_column("spend"), single["record"]
    assert set(record) == {"age", "plan", "spend"}
    assert record["age"] == math.floor(float(age.median()) + 0.5)  # type: ignore[arg-type]
    counts = table.get_column("plan").value_counts(name="n").sort(["n", "plan"], descending=[True, False])
    assert record["plan"] == counts.get_column("plan")[0]
    assert spend.min() <= record["spend"] <= spend.max()
    records = [*many.model_validate_json(json.dumps(batch)).records, one.model_validate(single).record]
    answers = scorer.predict([r.model_dump() for r in records])
    assert len(answers) == 2
    assert answers[0] == answers[1]
    assert 0 <= answers[0]["probability"] <= 1


# ------------------------------------------------------------------------------ OpenAPI 3.0 ---
def test_docs_json_shows_each_example_as_openapi_3_0_does(
    params: dict[str, Any], fields: list[RequestField], flight: type[BaseModel]
) -> None:
    """BentoML writes an OpenAPI 3.0 spec, whose schemas have one ``example`` (no ``examples``
    list): each field's shows there, and each POST body's example is the record example."""
    import bentoml

    class RequestBody(Body, bentoml.IODescriptor):
        pass

    serve = section(params, "serve", ServeConfig)
    example = record_example(fields)
    api = api_models(
        serve, flight, section(params, "clean", CleanConfig).label, body=RequestBody, example=example
    )

    @bentoml.service
    class Docs:
        @bentoml.api(route="/predict", input_spec=api.predict_request, output_spec=api.predictions)
        def predict(self, **body: Any) -> Any:
            raise NotImplementedError

        @bentoml.api(route="/predict_one", input_spec=api.predict_one_request, output_spec=api.one_prediction)
        def predict_one(self, **body: Any) -> Any:
            raise NotImplementedError

    spec = openapi_examples(Docs.openapi_spec.asdict())  # type: ignore[attr-defined]
    assert '"examples"' not in json.dumps(spec)
    props = spec["components"]["schemas"]["Flight"]["properties"]
    assert {name: prop["example"] for name, prop in props.items() if name in example} == example
    assert props["sched_dep_time"]["description"].startswith("scheduled departure, local time")
    for path, key, body in (("/predict", "flights", [example]), ("/predict_one", "flight", example)):
        media = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert media["example"] == {key: body}, path
