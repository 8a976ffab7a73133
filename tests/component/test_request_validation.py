"""The request schema holds every value the clean stage holds, and nothing it accepts fails scoring.

Most tests build the request model straight from the composed default config (no model needed):
integer bounds from the column types, ISO 8601 times inside ``serve.time_window``, hhmm clock times,
blank required text, and a description of each field. The clean stage enforces the same rules
offline (formats, normalize), and ``apply_value_rules`` normalizes text the same way on both sides.
One end-to-end test scores through a packaged bundle (the session's smoke pipeline).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from pydantic import BaseModel, ValidationError

from ontime.config import section
from ontime.config.clean import CleanConfig, TableRules
from ontime.config.data import DataConfig
from ontime.config.featurize import FeaturizeConfig
from ontime.config.serve import ServeConfig
from ontime.data import clean
from ontime.data.clean import WHITESPACE, apply_value_rules, hhmm_violation, is_blank, not_hhmm
from ontime.errors import ConfigError, DataError
from ontime.io import read_json
from ontime.serving.online import (
    INT_BOUNDS,
    OPTIONAL_DERIVED,
    RequestField,
    make_field,
    request_fields,
    request_model,
)
from tests.conftest import compose_params, write_params

GOOD: dict[str, Any] = {  # the README's curl example
    "carrier": "UA",
    "flight": 1545,
    "tailnum": "N14228",
    "origin": "EWR",
    "dest": "IAH",
    "distance": 1400,
    "sched_dep_time": 900,
    "sched_arr_time": 1200,
    "time_hour": "2013-12-01T14:00:00Z",
    "temp": 39.0,
    "visib": 10,
}
I32_MIN, I32_MAX = INT_BOUNDS["Int32"]


# ------------------------------------------------------------------------------------ helpers ---
@pytest.fixture(scope="module")
def params() -> dict[str, Any]:
    return compose_params()


@pytest.fixture(scope="module")
def fields(params: dict[str, Any]) -> list[RequestField]:
    return request_fields(
        section(params, "data", DataConfig),
        section(params, "clean", CleanConfig),
        section(params, "featurize", FeaturizeConfig),
        section(params, "serve", ServeConfig),
    )


@pytest.fixture(scope="module")
def model(fields: list[RequestField]) -> type[BaseModel]:
    return request_model(fields)


@pytest.fixture(scope="module")
def schema(model: type[BaseModel]) -> dict[str, Any]:
    props: dict[str, Any] = model.model_json_schema()["properties"]
    return props


def check(model: type[BaseModel], flight: dict[str, Any]) -> dict[str, Any]:
    """Validate as the service does (JSON, BentoML) and as ``ontime predict`` does (Python objects);
    both must agree. Returns the validated record."""
    from_json = model.model_validate_json(json.dumps(flight)).model_dump()
    from_python = model.model_validate(flight).model_dump()
    assert from_json == from_python
    return from_json


def rejected(model: type[BaseModel], field: str, value: Any) -> str:
    """The message a flight with ``field=value`` is rejected with, in both modes; it names the field."""
    flight = {**GOOD, field: value}
    messages = []
    for validate in (
        lambda: model.model_validate_json(json.dumps(flight)),
        lambda: model.model_validate(flight),
    ):
        with pytest.raises(ValidationError) as info:
            validate()
        errors = info.value.errors()
        assert [e["loc"] for e in errors] == [(field,)], errors
        messages.append(errors[0]["msg"])
    assert messages[0] == messages[1]
    return messages[0]


def test_good_flight_is_accepted(model: type[BaseModel]) -> None:
    record = check(model, GOOD)
    assert record["time_hour"] == dt.datetime(2013, 12, 1, 14, tzinfo=dt.UTC)


# ---------------------------------------------------------------------- 1. integer column types ---
@pytest.mark.parametrize("value", [2**31, 2**63, -(2**31) - 1, 10**30, -(2**63) - 1])
def test_integer_outside_its_column_type_is_rejected(model: type[BaseModel], value: int) -> None:
    msg = rejected(model, "flight", value)
    assert str(I32_MAX if value > 0 else I32_MIN) in msg


@pytest.mark.parametrize("value", [I32_MAX, I32_MIN, 0])
def test_integer_at_its_type_bounds_is_accepted(model: type[BaseModel], value: int) -> None:
    assert check(model, {**GOOD, "flight": value})["flight"] == value


def test_every_integer_field_shows_its_bounds(fields: list[RequestField], schema: dict[str, Any]) -> None:
    ints = [f for f in fields if f.dtype in INT_BOUNDS]
    assert {f.name for f in ints} >= {"flight", "sched_dep_time", "sched_arr_time", *OPTIONAL_DERIVED}
    shown = {}
    for f in ints:
        lo, hi = INT_BOUNDS[f.dtype]
        prop = schema[f.name]  # optional fields: {"anyOf": [{"type": "integer", ...}, {"type": "null"}]}
        bounds = next(p for p in prop.get("anyOf", [prop]) if p.get("type") == "integer")
        shown[f.name] = (bounds["minimum"], bounds["maximum"])
        assert lo <= bounds["minimum"] <= bounds["maximum"] <= hi, f.name
        assert all(isinstance(b, int) for b in shown[f.name]), f.name
    assert shown["flight"] == (I32_MIN, I32_MAX)
    assert shown["sched_dep_time"] == shown["sched_arr_time"] == (0, 2359)


def test_int64_bounds_combine_with_the_clean_range() -> None:
    serve = ServeConfig.model_validate(
        {
            "request_tables": [],
            "time_window": {"start": "2000-01-01", "end": "2001-01-01"},
            "max_batch_size": 1,
            "records": "rows",
            "record": "row",
            "probability": "probability",
            "positive": "positive",
            "model_name": "ontime-rows",
        }
    )
    rules = TableRules.model_validate(
        {
            "key": [],
            "drop_missing": [],
            "fill": {},
            "ranges": {"n": [0.5, 100.7], "big": [-1e300, 1e300], "open": [float("-inf"), 5]},
            "outliers": {},
            "references": {},
            "formats": {},
            "normalize": {},
        }
    )

    def field(column: str) -> RequestField:
        return make_field(
            column,
            table="t",
            column=column,
            dtype="Int64",
            required=True,
            rules=rules,
            serve=serve,
            feature=column,
        )

    i64 = INT_BOUNDS["Int64"]
    assert (field("n").lo, field("n").hi) == (1, 100)  # whole numbers inside the range
    assert (field("big").lo, field("big").hi) == i64  # the type is narrower than the range
    assert (field("open").lo, field("open").hi) == (i64[0], 5)
    assert (field("free").lo, field("free").hi) == i64  # no range: the type's bounds
    model = request_model([field("n"), field("free")], name="Row")
    row = {"n": 1, "free": i64[1]}
    assert model.model_validate_json(json.dumps(row)).model_dump() == row
    for bad in (i64[1] + 1, i64[0] - 1):
        with pytest.raises(ValidationError, match="free"):
            model.model_validate_json(json.dumps({**row, "free": bad}))


# ------------------------------------------------------------------------- 2. date-time fields ---
@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1386000000, "is not an ISO 8601 date-time string"),  # a unix time (2013-12-02)
        ("1386000000", "is not an ISO 8601 date-time string"),  # the same as text
        (-999999, "is not an ISO 8601 date-time string"),
        (1386000000.5, "is not an ISO 8601 date-time string"),
        (True, "is not an ISO 8601 date-time string"),
        ("0001-01-01T00:00:00Z", "outside [2013-01-01, 2040-01-01) UTC"),
        ("9999-12-31T23:00:00Z", "outside [2013-01-01, 2040-01-01) UTC"),
        ("9999-12-31T23:00:00-05:00", "outside [2013-01-01, 2040-01-01) UTC"),  # past 9999 in UTC
        ("0001-01-01T00:00:00+05:00", "outside [2013-01-01, 2040-01-01) UTC"),  # before year 1 in UTC
        ("2012-12-31T23:59:59Z", "outside [2013-01-01, 2040-01-01) UTC"),
        ("2040-01-01T00:00:00Z", "outside [2013-01-01, 2040-01-01) UTC"),
        ("2039-12-31T20:00:00-05:00", "outside [2013-01-01, 2040-01-01) UTC"),  # 2040-01-01 01:00 UTC
        ("2013-13-01T10:00:00Z", "month value is outside"),
        ("tomorrow", "is not an ISO 8601 date-time string"),
    ],
)
def test_time_must_be_iso_8601_inside_the_window(model: type[BaseModel], value: Any, text: str) -> None:
    msg = rejected(model, "time_hour", value)
    assert text in msg
    if "ISO" in text or "window" in text:
        assert msg.startswith("time_hour: ")


@pytest.mark.parametrize(
    ("value", "utc"),
    [
        ("2013-01-01T00:00:00Z", dt.datetime(2013, 1, 1, tzinfo=dt.UTC)),  # the window's first instant
        ("2039-12-31T23:59:59.999999Z", dt.datetime(2039, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)),
        ("2012-12-31T19:00:00-05:00", dt.datetime(2013, 1, 1, tzinfo=dt.UTC)),  # local New York time
        ("2013-12-01T14:00:00", dt.datetime(2013, 12, 1, 14, tzinfo=dt.UTC)),  # no offset: UTC
        ("2013-12-01", dt.datetime(2013, 12, 1, tzinfo=dt.UTC)),  # an ISO date: midnight
    ],
)
def test_time_window_edges_and_offsets(model: type[BaseModel], value: str, utc: dt.datetime) -> None:
    got = check(model, {**GOOD, "time_hour": value})["time_hour"]
    assert (got.replace(tzinfo=dt.UTC) if got.tzinfo is None else got.astimezone(dt.UTC)) == utc


def test_time_window_is_the_configured_one(params: dict[str, Any]) -> None:
    narrow = copy.deepcopy(params)
    narrow["serve"]["time_window"] = {"start": "2013-12-01", "end": "2013-12-02"}
    fields = request_fields(
        section(narrow, "data", DataConfig),
        section(narrow, "clean", CleanConfig),
        section(narrow, "featurize", FeaturizeConfig),
        section(narrow, "serve", ServeConfig),
    )
    model = request_model(fields)
    check(model, GOOD)
    assert "outside [2013-12-01, 2013-12-02) UTC" in rejected(model, "time_hour", "2013-12-02T00:00:00Z")
    narrow["serve"]["time_window"] = {"start": "2014-01-01", "end": "2013-01-01"}
    with pytest.raises(ConfigError, match=r"serve\.time_window: .*must be after start"):
        section(narrow, "serve", ServeConfig)


def test_a_python_datetime_is_accepted_and_still_windowed(model: type[BaseModel]) -> None:
    # `ontime predict` reads Parquet: time_hour arrives as a datetime object, not as text
    naive = dt.datetime(2013, 12, 1, 14)
    assert model.model_validate({**GOOD, "time_hour": naive}).model_dump()["time_hour"] == naive
    with pytest.raises(ValidationError, match="time_hour: 2050-01-01T00:00:00"):
        model.model_validate({**GOOD, "time_hour": dt.datetime(2050, 1, 1, tzinfo=dt.UTC)})


# -------------------------------------------------------------------------------- 3. hhmm times ---
@pytest.mark.parametrize(
    ("value", "text"),
    [
        (960, "sched_dep_time: 960 is not a valid hhmm time (minutes must be 00-59)"),
        (1999, "sched_dep_time: 1999 is not a valid hhmm time (minutes must be 00-59)"),
        (60, "sched_dep_time: 60 is not a valid hhmm time (minutes must be 00-59)"),
        (2400, "less than or equal to 2359"),  # midnight is 0, as in the data
        (2500, "less than or equal to 2359"),
        (-1, "greater than or equal to 0"),
    ],
)
def test_schedule_times_must_be_hhmm(model: type[BaseModel], value: int, text: str) -> None:
    assert text in rejected(model, "sched_dep_time", value)
    assert text.replace("sched_dep_time", "sched_arr_time") in rejected(model, "sched_arr_time", value)


@pytest.mark.parametrize("value", [0, 1, 59, 100, 1259, 2359])
def test_hhmm_edges_are_accepted(model: type[BaseModel], value: int) -> None:
    record = check(model, {**GOOD, "sched_dep_time": value, "sched_arr_time": value})
    assert record["sched_dep_time"] == record["sched_arr_time"] == value


def test_hhmm_rule_is_the_same_offline_and_online() -> None:
    values = list(range(-120, 2600))
    offline = pl.DataFrame({"t": values}).select(not_hhmm("t")).to_series().to_list()
    online = [hhmm_violation(v) is not None for v in values]
    assert offline == online
    assert sum(not bad for bad in online) == 24 * 60


def test_clean_stage_fails_on_a_planted_non_hhmm_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.test_bad_input import good_rows, run_stage, write_table

    rows = good_rows()
    rows[5] = ("2013-01-06", 2.5, 960, "a", 1)
    rows[9] = ("2013-01-10", 4.5, 1999, "b", 0)
    write_table(tmp_path / "data/external/table.csv", rows)
    params = write_params(
        tmp_path / "params.yaml",
        [
            "data=table",
            "+data.dtypes.table.n=Int64",
            "+data.dtypes.table.day=Date",
            "+clean.tables.table.formats.n=hhmm",
        ],
    )
    run_stage(tmp_path, "collect", params, monkeypatch)
    with pytest.raises(
        DataError,
        match=r"table table: column 'n' has 2 value\(s\) that are not hhmm clock times \(an integer 0 to "
        r"2359: hours 0-23, then minutes 00-59\), for example 960\. Fix the source data or drop "
        r"clean\.tables\.table\.formats\.n",
    ):
        run_stage(tmp_path, "clean", params, monkeypatch)
    assert not (tmp_path / "data/clean").exists()
    assert not (tmp_path / "metrics/clean.json").exists()


def rules(**change: Any) -> TableRules:
    base: dict[str, Any] = {
        "key": [],
        "drop_missing": [],
        "fill": {},
        "ranges": {},
        "outliers": {},
        "references": {},
        "formats": {},
        "normalize": {},
    }
    return TableRules.model_validate(base | change)


def test_format_and_normalize_need_the_right_column_type() -> None:
    df = pl.DataFrame({"t": ["0900"], "code": [1]})
    with pytest.raises(
        DataError, match=r"column 't' is String, but clean\.tables\.x\.formats\.t \(hhmm\) needs an integer"
    ):
        clean.clean_table(df, rules(formats={"t": "hhmm"}), table="x")
    with pytest.raises(
        DataError, match=r"column 'code' is Int64, but clean\.tables\.x\.normalize needs text"
    ):
        clean.clean_table(df, rules(normalize={"code": "upper"}), table="x")
    with pytest.raises(
        DataError, match=r"column\(s\) \['nope'\] named in clean\.tables\.x\.normalize do not exist"
    ):
        clean.clean_table(df, rules(normalize={"nope": "upper"}), table="x")


# --------------------------------------------------------------------------- 4. normalization ---
def test_normalize_strips_and_case_folds_blank_becomes_missing() -> None:
    df = pl.DataFrame(
        {
            "up": [" ua ", "UA", "Ua\t", "  ", None, "\u3000b6\xa0"],
            "low": [" EWR", "ewr", "Ewr ", "", None, "JFK"],
            "strip": [" N14228 ", "n14228", "\n", "a b", None, "x"],
            "other": [" keep ", " ", "x", "y", None, "z"],
        }
    )
    out, counts = apply_value_rules(df, rules(normalize={"up": "upper", "low": "lower", "strip": "strip"}))
    assert out.get_column("up").to_list() == ["UA", "UA", "UA", None, None, "B6"]
    assert out.get_column("low").to_list() == ["ewr", "ewr", "ewr", None, None, "jfk"]
    assert out.get_column("strip").to_list() == ["N14228", "n14228", None, "a b", None, "x"]
    assert_frame_equal(out.select("other"), df.select("other"))  # no rule: left as it is
    assert counts == {"normalized_low": 4, "normalized_strip": 2, "normalized_up": 4}
    again, recount = apply_value_rules(
        out, rules(normalize={"up": "upper", "low": "lower", "strip": "strip"})
    )
    assert_frame_equal(again, out)  # idempotent
    assert set(recount.values()) == {0}


def test_blank_means_the_same_online_and_offline() -> None:
    # The schema's blank check and polars' strip_chars agree on every whitespace character
    spaces = [chr(i) for i in range(sys.maxunicode + 1) if chr(i).isspace()]
    stripped = pl.Series(spaces).str.strip_chars().to_list()
    assert [is_blank(c) for c in spaces] == [s == "" for s in stripped]
    assert all(is_blank(c) for c in WHITESPACE)


@pytest.mark.parametrize("name", ["carrier", "origin", "dest"])
@pytest.mark.parametrize("value", [" ", "\t\n", "\u3000"])
def test_required_text_must_not_be_blank(model: type[BaseModel], name: str, value: str) -> None:
    assert rejected(model, name, value) == f"{name}: must not be blank (it is required)"


def test_optional_text_may_be_blank_and_is_then_missing(fields: list[RequestField]) -> None:
    optional = [f.model_copy(update={"required": False}) if f.name == "tailnum" else f for f in fields]
    model = request_model(optional)
    assert check(model, {**GOOD, "tailnum": "  "})["tailnum"] == "  "  # missing once normalized
    rules_ = CleanConfig.model_validate(compose_params()["clean"]).tables["flights"]
    assert apply_value_rules(pl.DataFrame({"tailnum": ["  "]}), rules_)[0].item() is None


def test_unknown_normalize_mode_or_format_is_a_clear_config_error(params: dict[str, Any]) -> None:
    bad = copy.deepcopy(params)
    bad["clean"]["tables"]["flights"]["normalize"]["carrier"] = "title"
    with pytest.raises(
        ConfigError,
        match=r"clean\.tables\.flights\.normalize\.carrier: Input should be 'upper', 'lower' or 'strip' "
        r"\(got 'title'\)",
    ):
        section(bad, "clean", CleanConfig)
    bad = copy.deepcopy(params)
    bad["clean"]["tables"]["flights"]["formats"]["sched_dep_time"] = "hh:mm"
    with pytest.raises(
        ConfigError, match=r"clean\.tables\.flights\.formats\.sched_dep_time: Input should be 'hhmm'"
    ):
        section(bad, "clean", CleanConfig)
    bad = copy.deepcopy(params)
    del bad["clean"]["tables"]["weather"]["normalize"]
    with pytest.raises(ConfigError, match=r"clean\.tables\.weather\.normalize: missing key"):
        section(bad, "clean", CleanConfig)


def test_join_keys_are_normalized_on_both_sides(params: dict[str, Any]) -> None:
    # A normalized key would never match an unnormalized one: each join's two sides share the rule.
    tables = CleanConfig.model_validate(params["clean"]).tables
    for join in FeaturizeConfig.model_validate(params["featurize"]).joins:
        for left, right in zip(join.left_on, join.right_on, strict=True):
            left_rule = tables["flights"].normalize.get(left)
            right_rule = tables[join.table].normalize.get(right)
            if left_rule or right_rule:
                assert left_rule == right_rule, (join.table, left, right)


def test_normalize_and_hhmm_change_nothing_in_the_real_data(data_run: Path) -> None:
    # The clean stage ran on the real tables with the formats rule (no sched_* value fails it) and
    # normalized no value: the cleaned tables are what they were before these rules.
    metrics = read_json(data_run / "metrics/clean.json")["tables"]
    counts = {f"{t}.{k}": v for t, m in metrics.items() for k, v in m.items() if k.startswith("normalized_")}
    assert set(counts) == {
        "flights.normalized_carrier",
        "flights.normalized_origin",
        "flights.normalized_dest",
        "flights.normalized_tailnum",
        "weather.normalized_origin",
        "planes.normalized_tailnum",
        "airports.normalized_faa",
        "airlines.normalized_carrier",
    }
    assert set(counts.values()) == {0}, counts


# -------------------------------------------------------------------- 5. out-of-range, described ---
def test_outliers_are_accepted_ranges_rejected(model: type[BaseModel]) -> None:
    # clean nulls an implausible temperature but fails on a humidity over 100%: so does the service
    for name, value in (("temp", 1e308), ("temp", -41.0), ("wind_speed", 1048.0), ("wind_gust", -1.0)):
        assert check(model, {**GOOD, name: value})[name] == value  # then missing, by apply_value_rules
    assert "less than or equal to 100" in rejected(model, "humid", 100.5)
    assert "greater than or equal to 0" in rejected(model, "visib", -0.1)
    assert "finite number" in rejected(model, "pressure", float("nan"))


def test_every_field_describes_its_type_range_and_fate(
    fields: list[RequestField], schema: dict[str, Any]
) -> None:
    for f in fields:
        text = schema[f.name]["description"]
        assert text.endswith("Required." if f.required else "as training saw it."), f.name
        if f.lo is not None:
            assert "outside" in text, f.name
            assert "rejected" in text, f.name
    d = {name: prop["description"] for name, prop in schema.items()}
    assert (
        "valid from 0 to 100; outside: rejected, as the clean stage fails on it (clean.tables.weather.ranges)"
        in d["humid"]
    )
    assert "plausible from -40 to 120; outside: treated as missing, as the clean stage does" in d["temp"]
    assert "plausible from 0 to 150; outside: treated as missing" in d["wind_speed"]
    # the meaning (serve.fields) first, then the type and its rules
    assert d["flight"].startswith("flight number")
    assert f"Integer (Int32); valid from {I32_MIN} to {I32_MAX}; outside: rejected" in d["flight"]
    assert "a clock time as hhmm" in d["sched_dep_time"]
    assert "outside or not hhmm: rejected" in d["sched_dep_time"]
    assert "ISO 8601" in d["time_hour"]
    assert "numbers (unix times) are rejected" in d["time_hour"]
    assert "without a UTC offset it is taken as UTC" in d["time_hour"]
    assert "from 2013-01-01 (inclusive) to 2040-01-01 (exclusive) UTC" in d["time_hour"]
    assert "stripped and upper-cased" in d["carrier"]
    assert "not blank" in d["carrier"]
    assert d["pressure"].startswith("sea level pressure")
    assert "Number (Float64), finite (NaN and Infinity are rejected)." in d["pressure"]
