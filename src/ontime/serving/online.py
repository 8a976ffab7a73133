"""Online scoring: raw records in the data's own fields -> validated -> features -> probabilities.

The service and ``ontime predict`` share this path, so they give the same numbers. A *bundle* folder
(made by the package stage) holds the champion candidate, its ``params.yaml`` (data, clean and
featurize sections), ``feature_spec.json``, ``model_card.json`` (threshold) and ``lookups/``: the
cleaned tables that featurize joins and the request does not carry (planes, airports).

The request schema is derived from the data and the config, not written by hand: the base table's
columns that features need (directly, through a derived group, as a join key or as the time column),
plus the columns of joins listed in ``serve.request_tables`` (weather at the origin). The columns and
their types come from the schema the clean stage recorded (``data/clean/schema.json``, in the bundle
as ``schema.json``): a column's type is its ``data.dtypes`` entry when declared, else the recorded
one, so a table with no dtypes declared is served as well as one with all of them. (A bundle without
``schema.json``, packaged before it existed, falls back to the declared columns.) Never a field: the
label (``clean.label.column`` and the derived label) and ``featurize.exclude`` columns that nothing
needs. Each field's description also says what training saw (its range, or its values), for
information only. Every rule of the clean stage holds for a request as it holds for the data:

- an integer lies within its column type (Int32, Int64) and ``clean.tables.<table>.ranges``, and a
  number within ``ranges``; outside, the request is rejected (the clean stage would fail);
- a number outside ``clean.tables.<table>.outliers`` is accepted and treated as missing (the clean
  stage nulls it), by :func:`~ontime.data.clean.apply_value_rules`, which scoring runs;
- a column with a ``clean.tables.<table>.formats`` rule (hhmm) must have that format, else rejected;
- text with a ``clean.tables.<table>.normalize`` rule is stripped and case-folded (``" ua "`` is
  ``UA``) by ``apply_value_rules``; a blank value is missing, and rejected for a required field;
- a date or date-time is an ISO 8601 string (numbers are rejected: no unix times), taken as UTC when
  it has no offset, inside ``serve.time_window`` ([start, end) in UTC), else rejected.

Each field's description in ``/docs.json`` starts with what the field is and its unit, when
``serve.fields`` says (``distance: distance between the airports, miles``), then says which of
these rules apply. Each field has an example from what training saw (:func:`example_of`: the middle
of a number's recorded range, the first recorded value of text, a noon on the last recorded day,
each inside the field's rules), and each request body a complete valid record of them
(:func:`record_example`), which Swagger UI's "Try it out" sends. A field is optional only when
the model saw its feature missing in training: missing in the data (weather gaps), or blanked on a
share of the fitting rows because it is in a ``featurize.optional`` group (the aircraft, the
schedule counts, the weather); a field left out is then missing exactly as training saw it. Every
other field is required: the time column, the join keys and ``drop_missing`` columns (unless in an
optional group), and any feature that was never missing (e.g. ``flight``). Schedule counts of the
``traffic`` group may be sent (they need the whole schedule); the service cannot derive them.

Names come from ``serve`` (:class:`~ontime.config.serve.ServeConfig`): the request's list of
records (``flights``), one record (``flight``, and the schema's name ``Flight``), and the answer's
``probability`` and ``positive`` fields (``delay_probability``, ``delayed``); :func:`api_models`
builds the HTTP bodies with them, :meth:`Scorer.predict` answers with them and ``ontime predict``
writes them as columns.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticCustomError

from ontime.candidates import Candidate, load_candidate
from ontime.config import DType, section
from ontime.config.clean import LABEL, CleanConfig, LabelConfig, TableRules
from ontime.config.data import DataConfig
from ontime.config.featurize import FeaturizeConfig
from ontime.config.serve import ServeConfig
from ontime.config.split import Window
from ontime.data.clean import apply_value_rules, hhmm_violation, is_blank
from ontime.data.collect import POLARS_DTYPES
from ontime.data.featurize import GROUPS, featurize
from ontime.errors import DataError
from ontime.io import read_json
from ontime.spec import LABEL_SOURCE, FeatureSpec

PY_TYPES: dict[str, Any] = {
    "Int64": int,
    "Int32": int,
    "Float64": float,
    "String": str,
    "Boolean": bool,
    "Date": dt.date,
    "Datetime": dt.datetime,
}
OPTIONAL_DERIVED = ("origin_hour_departures", "tail_leg_of_day", "tail_legs_of_day")
# What an integer column can hold: a request value outside would overflow it when scored.
INT_BOUNDS: dict[str, tuple[int, int]] = {"Int32": (-(2**31), 2**31 - 1), "Int64": (-(2**63), 2**63 - 1)}
MAX_TEXT = 64  # characters of a text field
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")  # how an ISO 8601 date or date-time starts
KINDS = {
    "Int64": "Integer",
    "Int32": "Integer",
    "Float64": "Number",
    "String": "Text",
    "Boolean": "true or false",
    "Date": "Date",
    "Datetime": "Date-time",
}
# Recorded types a request carries as a wider one of the same kind (the frame it scores has that type).
WIDER: dict[str, DType] = {
    "Int8": "Int64",
    "Int16": "Int64",
    "UInt8": "Int64",
    "UInt16": "Int64",
    "UInt32": "Int64",
    "Float32": "Float64",
    "Categorical": "String",
}
MAX_SEEN = 20  # categories a field's description lists; the rest are counted
SCHEMA_FILE = "schema.json"  # the clean stage's recorded schema, in the bundle


# ---------------------------------------------------------------------------- recorded schema ---
class RecordedColumn(BaseModel):
    """One column as the clean stage recorded it (``schema.json``); unknown keys are ignored."""

    model_config = ConfigDict(frozen=True)
    dtype: str  # a config type (Int64, String, ...) or polars' name of another (Int8: the label)
    declared: bool = False
    nulls: int = 0
    min: bool | int | float | str | None = None
    max: bool | int | float | str | None = None
    distinct: int | None = None
    categories: list[str] | None = None  # sorted, not by frequency
    # Read when a schema records them (collect does not yet): the median of a number or date, the
    # most frequent value; they make a field's example typical rather than the middle of its range.
    median: int | float | str | None = None
    mode: bool | int | float | str | None = None


class RecordedTable(BaseModel):
    model_config = ConfigDict(frozen=True)
    rows: int
    columns: dict[str, RecordedColumn]


class RecordedSchema(BaseModel):
    """The cleaned tables' columns, types and what they held (``data/clean/schema.json``)."""

    model_config = ConfigDict(frozen=True)
    version: Literal[1]
    tables: dict[str, RecordedTable]

    @classmethod
    def load(cls, path: str | Path) -> RecordedSchema:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: the recorded schema is missing; re-run `dvc repro clean`")
        try:
            return cls.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            raise DataError(
                f"{path}: not a recorded schema the service reads ({exc.error_count()} problem(s), first: "
                f"{'.'.join(map(str, exc.errors()[0]['loc']))}: {exc.errors()[0]['msg']}); "
                "re-run `dvc repro clean` and `dvc repro package`"
            ) from None


def seen_text(column: RecordedColumn) -> str | None:
    """What training saw in a column, in a few words: its range, or its values (the first
    ``MAX_SEEN``), or how many distinct values; None when the schema says nothing useful."""
    if column.categories:
        shown = ", ".join(column.categories[:MAX_SEEN])
        more = len(column.categories) - MAX_SEEN
        return shown + (f" and {more} more" if more > 0 else "")
    if column.dtype != "Boolean" and column.min is not None and column.max is not None:
        return f"{_seen(column.min)} to {_seen(column.max)}"
    if column.dtype == "String" and column.distinct:
        return f"{column.distinct} distinct values"
    return None


def _seen(value: bool | int | float | str) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.6g}"
    return _num(value) if isinstance(value, int | float) else str(value)


def table_columns(
    table: str, data: DataConfig, schema: RecordedSchema | None
) -> dict[str, tuple[str, RecordedColumn | None]]:
    """``table``'s columns: name -> (type, what clean recorded). The type is the declared one
    (``data.dtypes``) if any, else the recorded one; with no schema, only the declared columns.
    Declared columns come first, in their order, then the others as recorded."""
    declared = data.dtypes.get(table, {})
    if schema is None:
        return {column: (dtype, None) for column, dtype in declared.items()}
    if table not in schema.tables:
        raise DataError(
            f"the recorded schema has no table {table!r} (it has {sorted(schema.tables)}); re-run "
            "`dvc repro clean` and `dvc repro package`"
        )
    recorded = schema.tables[table].columns
    order = [c for c in declared if c in recorded] + [c for c in recorded if c not in declared]
    return {column: (declared.get(column, recorded[column].dtype), recorded[column]) for column in order}


def field_dtype(table: str, column: str, dtype: str) -> DType:
    """The request type of a column: its own when a request can carry it, a wider one of the same
    kind for a narrower number type a source may hold (Int16, Float32), else a clear error."""
    if dtype in PY_TYPES:
        return dtype  # type: ignore[return-value]
    if dtype in WIDER:
        return WIDER[dtype]
    raise DataError(
        f"column {table}.{column} is {dtype}, which a request cannot carry; declare its type in "
        f"data.dtypes.{table}.{column} (one of {sorted(PY_TYPES)}) or add it to featurize.exclude, "
        "then re-run `dvc repro`"
    )


class RequestField(BaseModel):
    """One request field: where it goes, its type and the clean stage's rules for it."""

    model_config = ConfigDict(frozen=True)
    name: str
    table: str
    column: str
    dtype: str
    required: bool
    # valid [lo, hi]: the column type's bounds and clean.tables.<table>.ranges; outside: rejected
    lo: int | float | None = None
    hi: int | float | None = None
    ranged: bool = False  # whether lo/hi come from clean.tables.<table>.ranges
    outliers: tuple[float, float] | None = None  # plausible range (clean outliers); outside: missing
    format: Literal["hhmm"] | None = None  # clean.tables.<table>.formats
    normalize: Literal["upper", "lower", "strip"] | None = None  # clean.tables.<table>.normalize
    window: Window | None = None  # Date and Datetime fields: serve.time_window
    feature: str | None = None  # the model input it becomes as it is (None: it feeds derived ones)
    seen: str | None = None  # what training saw (recorded schema): a range or values; informational
    meaning: str | None = None  # what it is, with its unit (serve.fields); its description starts with it
    # a typical valid value from what training saw (:func:`example_of`), as JSON; None: nothing recorded
    example: bool | int | float | str | None = None


def make_field(
    name: str,
    *,
    table: str,
    column: str,
    dtype: str,
    required: bool,
    rules: TableRules | None,
    serve: ServeConfig,
    feature: str | None,
    recorded: RecordedColumn | None = None,
) -> RequestField:
    """A request field with the clean stage's rules for ``table.column``, its type's bounds and,
    from the ``recorded`` column, what training saw."""
    lo: int | float | None = None
    hi: int | float | None = None
    valid = rules.ranges.get(column) if rules else None
    if dtype in INT_BOUNDS:
        lo, hi = INT_BOUNDS[dtype]
        if valid is not None:  # the range, in integers, within the type's bounds
            lo = max(lo, math.ceil(valid[0])) if math.isfinite(valid[0]) else lo
            hi = min(hi, math.floor(valid[1])) if math.isfinite(valid[1]) else hi
    elif valid is not None:
        lo, hi = valid
    field = RequestField(
        name=name,
        table=table,
        column=column,
        dtype=dtype,
        required=required,
        lo=lo,
        hi=hi,
        ranged=valid is not None,
        outliers=rules.outliers.get(column) if rules else None,
        format=rules.formats.get(column) if rules else None,
        normalize=rules.normalize.get(column) if rules and dtype == "String" else None,
        window=serve.time_window if dtype in ("Date", "Datetime") else None,
        feature=feature,
        seen=seen_text(recorded) if recorded is not None else None,
        meaning=serve.fields.get(name),
    )
    return field.model_copy(update={"example": example_of(field, recorded)}) if recorded else field


def request_fields(
    data: DataConfig,
    clean: CleanConfig,
    feat: FeaturizeConfig,
    serve: ServeConfig,
    spec: FeatureSpec | None = None,
    schema: RecordedSchema | None = None,
) -> list[RequestField]:
    """The raw fields a client sends, derived from the pipeline's config and the clean stage's
    recorded ``schema`` (without it: the columns ``data.dtypes`` declares); with the model's
    ``spec``, optional only where training saw the field's feature missing (see :func:`honest`)."""
    base = feat.base
    columns = table_columns(base, data, schema)
    never = {clean.label.column, LABEL, LABEL_SOURCE}
    base_cols = [c for c in columns if c not in never]
    needed = {c for c in base_cols if c not in feat.exclude}
    for group in feat.derived:
        if group in GROUPS:
            needed.update(c for c in GROUPS[group][1] if c in base_cols)
    for join in feat.joins:
        needed.update(join.left_on)
    if feat.time_column:
        needed.add(feat.time_column)
    needed -= never
    rules = clean.tables.get(base)
    required = set(rules.drop_missing if rules else []) | {
        k for j in feat.joins for k in j.left_on if j.table in serve.request_tables
    }
    if feat.time_column:
        required.add(feat.time_column)
    fields = [
        make_field(
            column,
            table=base,
            column=column,
            dtype=field_dtype(base, column, columns[column][0]),
            required=column in required,
            rules=rules,
            serve=serve,
            feature=column,
            recorded=columns[column][1],
        )
        for column in base_cols
        if column in needed
    ]
    for join in feat.joins:
        if join.table not in serve.request_tables:
            continue
        joined = table_columns(join.table, data, schema)
        absent = [c for c in join.columns if c not in joined and schema is not None]
        if absent:
            raise DataError(
                f"featurize.joins: column(s) {absent} of {join.table!r} are not in the recorded schema "
                f"(it has {sorted(joined)}); re-run `dvc repro clean` and `dvc repro package`"
            )
        fields.extend(
            make_field(
                column if column not in columns else f"{join.prefix}{column}",
                table=join.table,
                column=column,
                dtype=field_dtype(join.table, column, joined[column][0]) if column in joined else "Float64",
                required=False,
                rules=clean.tables.get(join.table),
                serve=serve,
                feature=f"{join.prefix}{column}",
                recorded=joined[column][1] if column in joined else None,
            )
            for column in join.columns
        )
    if "traffic" in feat.derived:
        fields.extend(
            RequestField(
                name=c,
                table=base,
                column=c,
                dtype="Int32",
                required=False,
                lo=0,
                hi=10_000,
                feature=c,
                meaning=serve.fields.get(c),
            )
            for c in OPTIONAL_DERIVED
        )
    return fields if spec is None else honest(fields, spec)


def honest(fields: list[RequestField], spec: FeatureSpec) -> list[RequestField]:
    """Optional only what the model saw missing in training; everything else required.

    A field that becomes a model input as it is may be left out when that input was missing in
    the training data or is in an optional group the training masked (``featurize.optional``),
    which also makes a ``drop_missing`` column optional (tailnum: rows without one are dropped in
    clean, and the aircraft group is masked). A field the model never saw missing is required, or
    a client leaving it out would get a score from inputs no training row had. Fields that only
    feed derived features keep the config's rule.
    """
    inputs = set(spec.columns)
    nullable = {f["name"] for f in spec.features if f.get("nullable")}
    masked = {c for cols in spec.optional.values() for c in cols} if spec.mask_rate > 0 else set()
    out = []
    for f in fields:
        if f.feature is None or f.feature not in inputs:
            out.append(f)
            continue
        optional = f.feature in nullable and (not f.required or f.feature in masked)
        out.append(f.model_copy(update={"required": not optional}))
    return out


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(value)


def describe(f: RequestField) -> str:
    """What the field is (``serve.fields``), its type, valid values and what happens outside them,
    for ``/docs.json``."""
    rules = f"clean.tables.{f.table}"
    kind = KINDS[f.dtype] + (f" ({f.dtype})" if f.dtype in INT_BOUNDS or f.dtype == "Float64" else "")
    parts = [kind]
    if f.format == "hhmm":
        parts[0] += (
            ", a clock time as hhmm: hours 0-23, then minutes 00-59 (1530 is 15:30, 5 is 00:05, 0 is "
            "midnight; 2400 is not one)"
        )
    elif f.dtype in ("Date", "Datetime"):
        example = "2013-12-01" if f.dtype == "Date" else "2013-12-01T13:00:00Z"
        parts[0] += f" as an ISO 8601 string (e.g. {example}); numbers (unix times) are rejected"
        if f.dtype == "Datetime":
            parts.append("without a UTC offset it is taken as UTC")
    elif f.dtype == "String":
        parts[0] += f", 1 to {MAX_TEXT} characters" + (", not blank" if f.required else "")
    elif f.dtype == "Float64":
        parts[0] += ", finite (NaN and Infinity are rejected)"
    if f.lo is not None and f.hi is not None:
        whole_type = (f.lo, f.hi) == INT_BOUNDS.get(f.dtype)
        source = [f"{rules}.ranges"] if f.ranged else ([f"what an {f.dtype} holds"] if whole_type else [])
        what = "outside"
        if f.format is not None:
            what, source = f"outside or not {f.format}", [*source, f"{rules}.formats"]
        why = f" ({', '.join(source)})" if source else ""
        clean = ", as the clean stage fails on it" if f.ranged or f.format else ""
        parts.append(f"valid from {_num(f.lo)} to {_num(f.hi)}; {what}: rejected{clean}{why}")
    elif f.format is not None:
        parts.append(f"not {f.format}: rejected, as the clean stage fails on it ({rules}.formats)")
    if f.outliers is not None:
        lo, hi = f.outliers
        parts.append(
            f"plausible from {_num(lo)} to {_num(hi)}; outside: treated as missing, as the clean "
            f"stage does ({rules}.outliers)"
        )
    if f.normalize is not None:
        how = {"upper": " and upper-cased", "lower": " and lower-cased", "strip": ""}[f.normalize]
        blank = "" if f.required else "; blank: treated as missing"
        parts.append(
            f"surrounding whitespace is stripped{how}, as the clean stage does ({rules}.normalize)" + blank
        )
    if f.window is not None:
        parts.append(
            f"from {f.window.start} (inclusive) to {f.window.end} (exclusive) UTC; outside: rejected "
            "(serve.time_window)"
        )
    if f.seen is not None:
        parts.append(f"seen in training: {f.seen} (for information; not a rule)")
    need = (
        "Required."
        if f.required
        else "Optional: leave it out (or null) when unknown; it is then missing, as training saw it."
    )
    meaning = f"{f.meaning.rstrip('.')}. " if f.meaning else ""
    return meaning + "; ".join(parts) + ". " + need


# -------------------------------------------------------------------------------- examples ---
Example = bool | int | float | str  # a field's example, as JSON (dates as ISO 8601 text)


def example_of(f: RequestField, recorded: RecordedColumn) -> Example | None:
    """A typical valid value of the field from what training saw (``recorded``), for ``/docs.json``;
    None when the schema recorded nothing to take one from.

    Text and true/false: the most frequent value when recorded, else the first category (the
    schema lists them sorted). Numbers: the median when recorded, else the middle of the recorded
    range, integers rounded, then moved inside the field's rules (valid and plausible range, hhmm).
    Dates: the last recorded day (a date-time at 12:00 UTC on it, or the day before when that is
    past the recorded maximum), inside ``serve.time_window``."""
    if f.dtype == "String":
        texts = [recorded.mode] if isinstance(recorded.mode, str) else []
        fits = [t for t in [*texts, *(recorded.categories or [])] if len(t) <= MAX_TEXT and not is_blank(t)]
        return fits[0] if fits else None
    if f.dtype == "Boolean":
        truth = {"true": True, "false": False}
        flags = [
            v if isinstance(v, bool) else truth.get(str(v).lower())
            for v in (recorded.mode, *(recorded.categories or []))
        ]
        return next((v for v in flags if v is not None), None)
    if f.dtype in ("Date", "Datetime"):
        return _time_example(f, _instant(recorded.median) or _instant(recorded.max), _instant(recorded.min))
    lo, hi = (_number(recorded.min), _number(recorded.max))
    middle = _number(recorded.median)
    if middle is None and lo is not None and hi is not None:
        middle = (lo + hi) / 2
    return None if middle is None else _fit(f, middle)


def placeholder(f: RequestField) -> Example:
    """A valid example for a field whose recorded schema says nothing of its values (no schema, an
    all-missing column, text with too many values to list, a field derived in training): the
    nearest valid value to 0, the window's first noon, false, or the field's name in angle brackets
    (text that reads as a placeholder, not as data)."""
    if f.dtype == "String":
        return f"<{f.name}>"[:MAX_TEXT]
    if f.dtype == "Boolean":
        return False
    if f.dtype in ("Date", "Datetime"):
        return _time_example(f, None, None)
    return _fit(f, 0)


def field_example(f: RequestField) -> Example:
    """The example ``/docs.json`` shows for the field: from what training saw, else a placeholder."""
    return f.example if f.example is not None else placeholder(f)


def record_example(fields: list[RequestField]) -> dict[str, Example]:
    """A complete valid record of the fields' examples: every required field, and each optional
    one with an example from what training saw (one without is left out, so it is missing, as
    training saw it, rather than a made-up value)."""
    return {f.name: field_example(f) for f in fields if f.required or f.example is not None}


def lookup_examples(
    fields: list[RequestField], feat: FeaturizeConfig, lookups: dict[str, pl.DataFrame]
) -> list[RequestField]:
    """Examples for text join keys the schema lists no values of (too many to list): the first key
    of the table they join (a bundle's lookup), so that the example record finds its row there."""
    keys: dict[str, pl.Series] = {}
    for join in feat.joins:
        table = lookups.get(join.table)
        for left, right in zip(join.left_on, join.right_on, strict=True):
            if table is not None and right in table.columns and table.schema[right] == pl.String:
                keys.setdefault(left, table.get_column(right))
    out = []
    for f in fields:
        if f.example is None and f.dtype == "String" and f.table == feat.base and f.name in keys:
            texts = keys[f.name].drop_nulls()
            fits = texts.filter((texts.str.len_chars() <= MAX_TEXT) & (texts.str.strip_chars() != ""))
            f = f.model_copy(update={"example": fits[0]}) if fits.len() else f
        out.append(f)
    return out


def _number(value: bool | int | float | str | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _fit(f: RequestField, value: float) -> int | float:
    """``value`` moved inside the field's valid and plausible ranges; an integer rounded (half up),
    an hhmm clock time with its minutes at most 59; a number to 6 significant digits."""
    lo = max(b for b in (f.lo, f.outliers[0] if f.outliers else None, -math.inf) if b is not None)
    hi = min(b for b in (f.hi, f.outliers[1] if f.outliers else None, math.inf) if b is not None)
    if f.dtype not in INT_BOUNDS:
        return min(max(float(f"{value:.6g}"), lo), hi)
    whole = min(max(math.floor(value + 0.5), math.ceil(lo)), math.floor(hi))
    if f.format == "hhmm":
        hours, minutes = divmod(min(max(whole, 0), 2359), 100)
        whole = hours * 100 + min(minutes, 59)
    return whole


def _instant(value: bool | int | float | str | None) -> dt.datetime | None:
    """A recorded date or date-time (ISO 8601 text) as a UTC date-time; None if it is none."""
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _time_example(f: RequestField, last: dt.datetime | None, first: dt.datetime | None) -> str:
    """A date (or a date-time at 12:00 UTC) on or before ``last`` and not before ``first``, inside
    the field's window ([start, end) in UTC); the window's first day without ``last``."""
    window = f.window or Window(start=dt.date(2000, 1, 1), end=dt.date(2100, 1, 1))
    start = dt.datetime.combine(window.start, dt.time(12), dt.UTC)
    end = dt.datetime.combine(window.end - dt.timedelta(days=1), dt.time(12), dt.UTC)
    moment = start
    if last is not None:
        moment = dt.datetime.combine(last.date(), dt.time(12), dt.UTC)
        if moment > last and f.dtype == "Datetime":
            moment -= dt.timedelta(days=1)
        if first is not None and moment < first:
            moment = last
    moment = min(max(moment, start), end)
    if f.dtype == "Date":
        return moment.date().isoformat()
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _hhmm(name: str) -> Callable[[int], int]:
    def check(value: int) -> int:
        problem = hhmm_violation(value)
        if problem is not None:
            raise PydanticCustomError(
                "hhmm_format", "{field}: {problem}", {"field": name, "problem": problem}
            )
        return value

    return check


def _not_blank(name: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if is_blank(value):
            raise PydanticCustomError("blank", "{field}: must not be blank (it is required)", {"field": name})
        return value

    return check


def _iso_text(name: str, dtype: str) -> Callable[[Any], Any]:
    """Only an ISO 8601 string (or a date/datetime object, e.g. from a Parquet file) reaches pydantic's
    parser, which in lax mode would also take numbers, and digit strings, as unix times."""
    example = "2013-12-01" if dtype == "Date" else "2013-12-01T13:00:00Z"

    def check(value: Any) -> Any:
        if isinstance(value, dt.date) or (isinstance(value, str) and ISO_DATE.match(value)):
            return value
        raise PydanticCustomError(
            "iso_8601",
            "{field}: {value} is not an ISO 8601 {what} string (e.g. {example})",
            {"field": name, "value": repr(value), "what": KINDS[dtype].lower(), "example": example},
        )

    return check


def _in_window(name: str, window: Window) -> Callable[[Any], Any]:
    start = dt.datetime.combine(window.start, dt.time(), dt.UTC)
    end = dt.datetime.combine(window.end, dt.time(), dt.UTC)

    def check(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            try:
                utc = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
                inside = start <= utc < end
            except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00: past year 9999 in UTC
                inside = False
        else:
            inside = window.start <= value < window.end
        if not inside:
            raise PydanticCustomError(
                "time_window",
                "{field}: {value} is outside [{start}, {end}) UTC, the plausible window (serve.time_window)",
                {"field": name, "value": value.isoformat(), "start": window.start, "end": window.end},
            )
        return value

    return check


def request_model(fields: list[RequestField], name: str = "Record") -> type[BaseModel]:
    """A pydantic model of one record: types, bounds, formats, time window, required vs optional, a
    description and an example of each (``/docs.json``); unknown fields rejected."""
    definitions: dict[str, Any] = {}
    for f in fields:
        kind = PY_TYPES[f.dtype]
        constraints: dict[str, Any] = {}
        validators: list[Any] = []
        if f.lo is not None:
            constraints["ge"] = f.lo
        if f.hi is not None:
            constraints["le"] = f.hi
        if kind is float:
            constraints["allow_inf_nan"] = False
        if kind is str:
            constraints["min_length"] = 1
            constraints["max_length"] = MAX_TEXT
            if f.required:
                validators.append(AfterValidator(_not_blank(f.name)))
        if f.format == "hhmm":
            validators.append(AfterValidator(_hhmm(f.name)))
        if kind in (dt.date, dt.datetime):
            validators.append(BeforeValidator(_iso_text(f.name, f.dtype)))
        if f.window is not None:
            validators.append(AfterValidator(_in_window(f.name, f.window)))
        annotated = Annotated[(kind, Field(**constraints), *validators)]  # type: ignore[valid-type]
        # the description on the field itself, so /docs.json shows it beside the field, optional or not
        text, examples = describe(f), [field_example(f)]
        definitions[f.name] = (
            (annotated, Field(description=text, examples=examples))
            if f.required
            else (annotated | None, Field(None, description=text, examples=examples))
        )
    config = ConfigDict(extra="forbid", strict=False, ser_json_inf_nan="strings")
    return create_model(name, __config__=config, **definitions)


# ------------------------------------------------------------------------------ API models ---
class Body(BaseModel):
    """A request body: unknown top-level keys are rejected."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ApiModels:
    """The service's request and answer bodies, their keys named by ``serve``."""

    predict_request: type[BaseModel]  # POST /predict {<records>: [<Record>, ...]}
    predict_one_request: type[BaseModel]  # POST /predict_one {<record>: <Record>}
    prediction: type[BaseModel]  # {<probability>, <positive>, model_version}
    predictions: type[BaseModel]  # {request_id, predictions: [<prediction>, ...]}
    one_prediction: type[BaseModel]  # <prediction> and request_id


def api_models(
    serve: ServeConfig,
    record: type[BaseModel],
    label: LabelConfig,
    *,
    body: type[BaseModel] = Body,
    example: dict[str, Any] | None = None,
) -> ApiModels:
    """The HTTP bodies with the names of ``serve``: ``record`` is one record's model
    (:func:`request_model`); ``body`` the base of both request bodies (the service passes one
    that is also a BentoML IODescriptor); it must reject unknown keys. ``example``: the record the
    request bodies show as their example (:func:`record_example`; default: every field's example)."""
    assert body.model_config.get("extra") == "forbid", f"{body.__name__} must forbid extra keys"
    one, many = serve.record, serve.records
    if example is None:
        example = {name: info.examples[0] for name, info in record.model_fields.items() if info.examples}
    # Swagger UI's "Try it out" sends these bodies as they are: a complete valid record
    shown_one: dict[str, Any] = {"examples": [example]} if example else {}
    shown_many: dict[str, Any] = {"examples": [[example]]} if example else {}
    predict_request = create_model(
        "PredictRequest",
        __base__=body,
        __doc__="The body of POST /predict; unknown top-level keys are rejected.",
        **{  # type: ignore[call-overload]
            many: (
                list[record],  # type: ignore[valid-type]
                Field(
                    min_length=1,
                    max_length=serve.max_batch_size,
                    description=f"the {many} to score",
                    **shown_many,
                ),
            )
        },
    )
    predict_one_request = create_model(
        "PredictOneRequest",
        __base__=body,
        __doc__="The body of POST /predict_one; unknown top-level keys are rejected.",
        **{one: (record, Field(description=f"the {one} to score", **shown_one))},  # type: ignore[call-overload]
    )
    probability = f"probability of the positive class: {label.describe(LABEL)}"
    prediction = create_model(
        "Prediction",
        **{  # type: ignore[call-overload]
            serve.probability: (float, Field(ge=0, le=1, description=probability)),
            serve.positive: (
                bool,
                Field(description=f"{serve.probability} >= the model's decision threshold"),
            ),
            "model_version": (str, Field(description=f"the BentoML model tag that scored the {one}")),
        },
    )
    request_id = (str, Field(description="uuid4 of this request, as in the request log"))
    answers = list[prediction]  # type: ignore[valid-type]
    predictions = create_model(
        "Predictions",
        request_id=request_id,
        predictions=(answers, Field(description=f"one per {one}, in the request's order")),
    )
    one_prediction = create_model("OnePrediction", __base__=prediction, request_id=request_id)
    return ApiModels(predict_request, predict_one_request, prediction, predictions, one_prediction)


def openapi_examples(spec: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.0 spec (what BentoML declares, and how Swagger UI reads ``/docs.json``) shows
    the examples pydantic writes: 3.0 has no JSON Schema ``examples`` list, a schema has one
    ``example``, so each list becomes its first value; and each POST's JSON body gets the example
    of its properties, the body Swagger UI's "Try it out" sends. Changes ``spec`` and returns it."""

    def schema(node: Any) -> None:
        if not isinstance(node, dict):
            return
        examples = node.pop("examples", None) if isinstance(node.get("examples"), list) else None
        if examples:
            node.setdefault("example", examples[0])
        for key in ("properties", "$defs"):
            for sub in (node.get(key) or {}).values():
                schema(sub)
        for key in ("items", "additionalProperties", "not"):
            schema(node.get(key))
        for key in ("anyOf", "allOf", "oneOf", "prefixItems"):
            for sub in node.get(key) or []:
                schema(sub)

    components = spec.get("components", {}).get("schemas", {})
    for component in components.values():
        schema(component)
    for item in spec.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            media = (operation.get("requestBody") or {}).get("content", {}).get("application/json")
            if not isinstance(media, dict):
                continue
            body = media.get("schema") or {}
            schema(body)
            ref = body.get("$ref", "")
            body = components.get(ref.rsplit("/", 1)[-1], {}) if ref.startswith("#/components/") else body
            props = body.get("properties") or {}
            if props and all("example" in props[k] for k in body.get("required", props)):
                media.setdefault("example", {k: p["example"] for k, p in props.items() if "example" in p})
    return spec


class Scorer:
    """Loads a bundle; scores validated records or a frame of raw rows."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        for part in ("params.yaml", "feature_spec.json", "model_card.json"):
            if not (folder / part).is_file():
                raise DataError(f"{folder}: {part} is missing; package the champion with `dvc repro package`")
        params = yaml.safe_load((folder / "params.yaml").read_text())
        self.data = section(params, "data", DataConfig)
        self.clean = section(params, "clean", CleanConfig)
        self.feat = section(params, "featurize", FeaturizeConfig)
        self.serve = section(params, "serve", ServeConfig)
        self.spec = FeatureSpec.load(folder / "feature_spec.json")
        card = read_json(folder / "model_card.json")
        self.threshold: float = float(card["threshold"])
        bundle = read_json(folder / "bundle.json") if (folder / "bundle.json").is_file() else None
        self.version: str = bundle["version"] if bundle is not None else card["champion"]
        self.runtime: Literal["native", "onnx"] = self._runtime(folder, bundle or {})
        self.candidate: Candidate = load_candidate(folder, self.runtime)
        self.lookups = {p.stem: pl.read_parquet(p) for p in sorted((folder / "lookups").glob("*.parquet"))}
        # Bundles packaged before the schema was recorded have none: their fields are the declared columns.
        self.schema = RecordedSchema.load(folder / SCHEMA_FILE) if (folder / SCHEMA_FILE).is_file() else None
        fields = request_fields(self.data, self.clean, self.feat, self.serve, self.spec, self.schema)
        self.fields = lookup_examples(fields, self.feat, self.lookups)
        # The lookup tables never change: clean them once, as the clean stage did, not per request.
        self.clean_lookups = {
            table: apply_value_rules(df, self.clean.tables[table])[0] if table in self.clean.tables else df
            for table, df in self.lookups.items()
        }
        unknown = [k for k in self.serve.key if k not in {f.name for f in self.fields}]
        if unknown:
            raise DataError(
                f"{folder}: serve.key names {unknown}, which are not request fields of this model "
                f"({[f.name for f in self.fields]}); fix serve.key in conf/ and package again"
            )
        self.Record = request_model(self.fields, name=self.serve.record.title())

    RUNTIME_ENV = "ONTIME_RUNTIME"  # native|onnx: score with this runtime instead of the bundle's

    def _runtime(self, folder: Path, bundle: dict[str, Any]) -> Literal["native", "onnx"]:
        """How the champion's networks run: as packaged (``bundle.json``'s ``runtime``; native for a
        bundle packaged before it was recorded), or as ``$ONTIME_RUNTIME`` asks, for comparisons."""
        import os

        from ontime.candidates import ONNX_FILE
        from ontime.errors import ConfigError

        packaged = bundle.get("runtime", "native")
        if packaged not in ("native", "onnx"):
            raise DataError(
                f"{folder / 'bundle.json'}: unknown runtime {packaged!r} (native or onnx); package "
                "the champion again with `dvc repro package`"
            )
        asked = os.environ.get(self.RUNTIME_ENV, "").strip()
        if not asked:
            return "onnx" if packaged == "onnx" else "native"
        if asked == "native":
            return "native"
        if asked != "onnx":
            raise ConfigError(
                f"{self.RUNTIME_ENV}={asked!r}: use native or onnx, or unset it to score with the "
                f"runtime the model was packaged with ({packaged})"
            )
        if not any(folder.rglob(ONNX_FILE)):
            raise DataError(
                f"{self.RUNTIME_ENV}=onnx, but model {self.version} was packaged with runtime {packaged} "
                f"and holds no {ONNX_FILE}; package it with serve.runtime onnx (or auto, for a champion "
                f"with a PyTorch network), or unset {self.RUNTIME_ENV}"
            )
        return "onnx"

    def check_servable(self) -> None:
        """A clear error when no request could be scored: the request schema has no fields."""
        if not self.fields:
            why = (
                "the recorded schema has no column the model needs"
                if self.schema is not None
                else f"the bundle has no {SCHEMA_FILE} and data.dtypes declares no columns"
            )
            raise DataError(
                f"model {self.version}: its request schema has no fields ({why}), so nothing can be "
                "scored; re-run `dvc repro` (clean records the schema, package puts it in the bundle)"
            )

    def api_models(self, body: type[BaseModel] = Body) -> ApiModels:
        """The service's request and answer bodies for this bundle (see :func:`api_models`)."""
        example = record_example(self.fields)
        return api_models(self.serve, self.Record, self.clean.label, body=body, example=example)

    # ---------------------------------------------------------------------------------------------
    def frame(self, records: list[dict[str, Any]]) -> pl.DataFrame:
        """Validated records (dicts of the request model) as one typed frame, one column per field."""
        columns = {}
        for f in self.fields:
            values = [r.get(f.name) for r in records]
            dtype = POLARS_DTYPES[f.dtype]
            if f.dtype == "Datetime":
                values = [
                    v.astimezone(dt.UTC).replace(tzinfo=None) if v is not None and v.tzinfo else v
                    for v in values
                ]
                columns[f.name] = pl.Series(f.name, values, dtype=pl.Datetime("us")).dt.replace_time_zone(
                    "UTC"
                )
            else:
                columns[f.name] = pl.Series(f.name, values, dtype=dtype)
        return pl.DataFrame(columns)

    def features(self, raw: pl.DataFrame) -> pl.DataFrame:
        """Raw rows (the request fields) -> the model's feature columns, as featurize computes them."""
        if raw.height == 0:
            raise DataError("no rows to score")
        base_cols = [f.name for f in self.fields if f.table == self.feat.base]
        base = raw.select(base_cols).with_columns(
            pl.lit(0, dtype=pl.Int8).alias(LABEL), pl.int_range(pl.len()).alias("_row")
        )
        tables = dict(self.clean_lookups)
        joins = []
        for join in self.feat.joins:
            if join.table not in self.serve.request_tables:
                joins.append(join)
                continue
            # Each row brings its own values (its weather forecast): join them by row, never by the
            # table's key, so rows sharing a key (e.g. two requests batched together) cannot mix.
            names = {f.column: f.name for f in self.fields if f.table == join.table}
            tables[join.table] = raw.select(
                pl.int_range(pl.len()).alias("_row"), *(pl.col(names[c]).alias(c) for c in join.columns)
            )
            joins.append(join.model_copy(update={"left_on": ["_row"], "right_on": ["_row"]}))
        for table in self.serve.request_tables:  # the request's own values: cleaned per request
            if table in tables and table in self.clean.tables:
                tables[table] = apply_value_rules(tables[table], self.clean.tables[table])[0]
        tables[self.feat.base] = (
            apply_value_rules(base, self.clean.tables[self.feat.base])[0]
            if self.feat.base in self.clean.tables
            else base
        )
        # featurize sorts by time; `_row` (kept as an extra column) restores the request's order.
        label = LabelConfig(
            table=self.feat.base, column=LABEL, threshold=None, positive_value=None, missing_positive=False
        )
        df, _ = featurize(tables, self.feat.model_copy(update={"joins": joins}), label)
        return df.sort("_row").select(self.spec.columns)

    def predict_frame(self, raw: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
        features = self.features(raw)
        return features, self.candidate.predict_proba(features)

    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Scores for validated records: probability, decision at the threshold, model version, under
        the names of ``serve`` (``probability``, ``positive``)."""
        _, p = self.predict_frame(self.frame(records))
        return [
            {
                self.serve.probability: float(prob),
                self.serve.positive: bool(prob >= self.threshold),
                "model_version": self.version,
            }
            for prob in p
        ]

    def validate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validate raw rows (e.g. from a file) with the same model as the service."""
        out = []
        for i, row in enumerate(rows):
            clean = {
                k: v
                for k, v in row.items()
                if not (isinstance(v, float) and math.isnan(v) and k in self.Record.model_fields)
            }
            try:
                out.append(self.Record.model_validate(clean).model_dump())
            except ValidationError as exc:
                raise DataError(f"row {i}: {exc}") from exc
        return out
