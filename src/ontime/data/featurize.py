"""featurize: join the cleaned tables and derive features known before the prediction moment.

Writes the feature table and a feature spec (JSON: target, time column, the label's source column,
and per feature its name, kind, dtype and whether it may be missing). Every later stage reads the
spec, so nothing after this stage knows the data is about flights.

The time column may be a Date/Datetime, or (``featurize.time_format``) an integer year, a year and
month, a unix time or text in a strftime pattern: :func:`parse_time` turns it into a UTC Datetime
first, offline and on every request the service scores alike. When the label is a threshold on a
numeric column, that column's values travel beside the features as ``LABEL_SOURCE`` for the leakage
audit; they are never a feature.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import functools
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import holidays as holidays_lib
import numpy as np
import polars as pl

from ontime import command
from ontime.config import load_params, section
from ontime.config.clean import LABEL, LabelConfig
from ontime.config.featurize import FeaturizeConfig
from ontime.errors import DataError
from ontime.io import atomic_outputs, write_json, write_parquet
from ontime.spec import LABEL_SOURCE

log = logging.getLogger(__name__)

SPEC_VERSION = 1


# ----------------------------------------------------------------------------- derived groups ---
# Each group is a function of the config returning polars expressions, all evaluated in one
# `with_columns` so polars runs them in parallel. GROUPS below names the columns each one reads.
def _time(cfg: FeaturizeConfig) -> pl.Expr:
    """The time column, already converted to ``featurize.timezone`` before the derived groups."""
    assert cfg.time_column is not None
    return pl.col(cfg.time_column)


def calendar(cfg: FeaturizeConfig) -> list[pl.Expr]:
    """Month, day of month, day of week (1 = Monday), day of year and hour of the time column."""
    t = _time(cfg)
    return [
        t.dt.month().cast(pl.Int32).alias("cal_month"),
        t.dt.day().cast(pl.Int32).alias("cal_day"),
        t.dt.weekday().cast(pl.Int32).alias("cal_weekday"),
        t.dt.ordinal_day().cast(pl.Int32).alias("cal_day_of_year"),
        t.dt.hour().cast(pl.Int32).alias("cal_hour"),
    ]


def schedule(cfg: FeaturizeConfig) -> list[pl.Expr]:
    """Scheduled departure/arrival as minutes of the day (hhmm integers) and the block time."""

    def minutes(col: str) -> pl.Expr:
        return (pl.col(col) // 100 * 60 + pl.col(col) % 100).cast(pl.Int32)

    dep, arr = minutes("sched_dep_time"), minutes("sched_arr_time")
    return [
        dep.alias("sched_dep_minute"),
        arr.alias("sched_arr_minute"),
        # Local clock times at both ends: the difference mixes flight time and time-zone offset,
        # which the destination's tz feature can separate.
        ((arr - dep) % 1440).alias("sched_block_minutes"),
    ]


def aircraft_age(cfg: FeaturizeConfig) -> list[pl.Expr]:
    """Aircraft age in years at the flight (null when the plane or its build year is unknown)."""
    return [(_time(cfg).dt.year() - pl.col("plane_year")).cast(pl.Int32).alias("plane_age")]


def traffic(cfg: FeaturizeConfig) -> list[pl.Expr]:
    """Schedule congestion, known in advance: departures from the origin in the same hour, and the
    aircraft's leg number that day (later legs inherit earlier delays)."""
    day = _time(cfg).dt.date()
    leg = pl.col("sched_dep_time").rank("ordinal").over("tailnum", day).cast(pl.Int32)
    legs = pl.len().over("tailnum", day).cast(pl.Int32)
    has_tail = pl.col("tailnum").is_not_null()
    return [
        pl.len().over("origin", cfg.time_column).cast(pl.Int32).alias("origin_hour_departures"),
        pl.when(has_tail).then(leg).alias("tail_leg_of_day"),
        pl.when(has_tail).then(legs).alias("tail_legs_of_day"),
    ]


def route(cfg: FeaturizeConfig) -> list[pl.Expr]:
    """Origin-destination pair as one categorical."""
    return [pl.concat_str("origin", pl.lit("-"), "dest").alias("route")]


GROUPS: dict[str, tuple[Callable[[FeaturizeConfig], list[pl.Expr]], list[str], bool]] = {
    # name: (function, columns it reads, needs the time column)
    "calendar": (calendar, [], True),
    "schedule": (schedule, ["sched_dep_time", "sched_arr_time"], False),
    "aircraft_age": (aircraft_age, ["plane_year"], True),
    "traffic": (traffic, ["origin", "tailnum", "sched_dep_time"], True),
    "route": (route, ["origin", "dest"], False),
}


@functools.lru_cache(maxsize=64)
def holiday_dates(country: str, years: tuple[int, ...]) -> tuple[dt.date, ...]:
    """The public holidays of ``country`` in ``years``, sorted; cached (the service featurizes
    every request, and building the calendar costs more than the rest of the calendar features)."""
    try:
        return tuple(sorted(holidays_lib.country_holidays(country, years=list(years))))
    except NotImplementedError as exc:
        raise DataError(
            f"featurize.holidays_country {country!r} is not known to the holidays "
            "package; use an ISO code such as US"
        ) from exc


def holiday_distance(lf: pl.LazyFrame, cfg: FeaturizeConfig, years: list[int]) -> pl.LazyFrame:
    """Days until the next and since the previous public holiday of ``holidays_country``."""
    dates = list(holiday_dates(str(cfg.holidays_country), tuple(sorted(years))))
    days = pl.DataFrame({"_holiday": dates}, schema={"_holiday": pl.Date}).lazy()
    day = _time(cfg).dt.date().alias("_date")
    keyed = lf.with_columns(day)
    by_date = keyed.select("_date").unique().sort("_date")
    nxt = by_date.join_asof(days, left_on="_date", right_on="_holiday", strategy="forward")
    prev = by_date.join_asof(days, left_on="_date", right_on="_holiday", strategy="backward")
    dist = nxt.join(prev, on="_date", suffix="_prev").select(
        "_date",
        (pl.col("_holiday") - pl.col("_date")).dt.total_days().cast(pl.Int32).alias("days_to_holiday"),
        (pl.col("_date") - pl.col("_holiday_prev"))
        .dt.total_days()
        .cast(pl.Int32)
        .alias("days_since_holiday"),
    )
    return keyed.join(dist, on="_date", how="left", maintain_order="left").drop("_date")


# -------------------------------------------------------------------------------- time formats ---
# A time column that is not a Date/Datetime is read with featurize.time_format into a UTC Datetime.
# A year, a month or a date without a zone is a wall-clock time: it is read in featurize.timezone
# (UTC when null), so that after the conversion to local time below 1995 is still Jan 1 00:00.
# Unix times are instants, read in UTC.
TIME_FORMATS: dict[str, str] = {
    "year": "an integer year from 1 to 9999 (1995, or the text '1995')",
    "year_month": "a year and month: text 1995-07 or 1995/07, or an integer 199507 (months 1-12)",
    "unix_s": "seconds since 1970-01-01 UTC (years 1 to 9999)",
    "unix_ms": "milliseconds since 1970-01-01 UTC (years 1 to 9999)",
}
# Unix seconds of 0001-01-01 and 9999-12-31 23:59:59: beyond them a Datetime makes no sense.
_UNIX_S_RANGE = (-62_135_596_800, 253_402_300_799)
# Text patterns tried, in this order, to suggest a time_format for a text column.
_COMMON_PATTERNS = (
    "%Y-%m-%d",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y/%m/%d",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%d.%m.%Y",
    "%Y%m%d",
)


def _as_int(values: pl.Series) -> pl.Series:
    """Whole numbers as Int64 (integers; floats without a fraction; text of digits); else null."""
    dtype = values.dtype
    if dtype.is_float():
        whole = values.to_frame("v").select(pl.when(pl.col("v") == pl.col("v").floor()).then("v"))
        return whole.to_series().cast(pl.Int64, strict=False)
    if dtype == pl.String:
        return values.str.strip_chars().cast(pl.Int64, strict=False)
    return values.cast(pl.Int64, strict=False)


def _localize(naive: pl.Series, timezone: str | None) -> pl.Series:
    """A wall-clock Datetime read in ``timezone`` (UTC when None), as a UTC Datetime."""
    if timezone is None:
        return naive.dt.replace_time_zone("UTC")
    local = naive.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    return local.dt.convert_time_zone("UTC")


def _parse(values: pl.Series, fmt: str, timezone: str | None) -> pl.Series:
    """``values`` read with ``fmt`` as Datetime("us", "UTC"); a value that does not convert is null."""
    if fmt in ("year", "year_month"):
        if values.dtype == pl.String and fmt == "year_month":
            # 1995-07, 1995/07, 1995-7 and 199507 as text
            text = values.str.strip_chars().str.replace(r"^(\d{4})(\d{2})$", "$1-$2")
            year = text.str.extract(r"^(\d{4})[-/](\d{1,2})$", 1).cast(pl.Int64)
            month = text.str.extract(r"^(\d{4})[-/](\d{1,2})$", 2).cast(pl.Int64)
        elif fmt == "year_month":
            number = _as_int(values)
            year, month = number // 100, number % 100
        else:
            year, month = _as_int(values), pl.Series([1] * len(values), dtype=pl.Int64)
        frame = pl.DataFrame({"y": year, "m": month})
        ok = pl.col("y").is_between(1, 9999) & pl.col("m").is_between(1, 12)
        naive = frame.select(
            pl.datetime(pl.when(ok).then("y"), pl.when(ok).then("m"), 1, time_unit="us")
        ).to_series()
        return _localize(naive, timezone)
    if fmt in ("unix_s", "unix_ms"):
        per_us = 1_000_000 if fmt == "unix_s" else 1_000
        lo, hi = (b * 1_000_000 // per_us for b in _UNIX_S_RANGE)
        number = values if values.dtype.is_float() else _as_int(values)
        v = pl.col("v")
        inside = pl.when(v.is_between(lo, hi)).then(v)  # before scaling: no integer overflow
        micros = (inside * per_us).round() if number.dtype.is_float() else inside * per_us
        stamps = number.to_frame("v").select(micros.cast(pl.Int64, strict=False)).to_series()
        return pl.from_epoch(stamps, time_unit="us").dt.replace_time_zone("UTC")
    # a strftime pattern, for text (integers such as 20130701 are read as their digits)
    text = values.cast(pl.String) if values.dtype.is_integer() else values
    parsed = text.str.to_datetime(fmt, strict=False, time_unit="us")
    if isinstance(parsed.dtype, pl.Datetime) and parsed.dtype.time_zone is not None:
        return parsed.dt.convert_time_zone("UTC")  # the pattern reads a zone (%z): an instant
    return _localize(parsed, timezone)


def _format_help(fmt: str) -> str:
    if fmt in TIME_FORMATS:
        return TIME_FORMATS[fmt]
    hint = ""
    if "%" not in fmt:
        hint = (
            f" (it has no % directive; the named formats are {sorted(TIME_FORMATS)}: "
            f"{_did_you_mean(fmt, list(TIME_FORMATS))}?)"
        )
    return f"text in the strftime pattern {fmt!r}{hint}"


def _examples(values: pl.Series, n: int = 5) -> list[Any]:
    return values.drop_nulls().unique(maintain_order=True).head(n).to_list()


def parse_time(values: pl.Series, fmt: str, *, timezone: str | None, what: str) -> pl.Series:
    """Read a time column with ``featurize.time_format``; fail naming the values that do not convert.

    Args:
        values: the raw column (integers, floats or text).
        fmt: ``year``, ``year_month``, ``unix_s``, ``unix_ms`` or a strftime pattern.
        timezone: the zone a wall-clock value (a year, a month, a date without zone) is read in.
        what: the column, as the error names it.

    Returns:
        The column as Datetime("us", "UTC"), same name; nulls stay null.
    """
    if isinstance(values.dtype, pl.Datetime | pl.Date):
        raise DataError(
            f"{what} is already {values.dtype}, so featurize.time_format={fmt!r} does not apply; "
            "set featurize.time_format=null"
        )
    if values.dtype == pl.Null:
        values = values.cast(pl.String)
    integer_or_text = values.dtype.is_integer() or values.dtype == pl.String
    if not (integer_or_text or (values.dtype.is_numeric() and fmt in TIME_FORMATS)):
        raise DataError(
            f"{what} is {values.dtype}, which featurize.time_format={fmt!r} cannot read "
            f"({_format_help(fmt)}); declare the column as text or an integer in data.dtypes"
        )
    parsed = _parse(values, fmt, timezone)
    bad = values.is_not_null() & parsed.is_null()
    n_bad = int(bad.sum())
    if n_bad:
        raise DataError(
            f"{what}: {n_bad} of {values.len()} value(s) are not {_format_help(fmt)} "
            f"(featurize.time_format={fmt!r}), for example {_examples(values.filter(bad))}; fix them in "
            "the source (numbers out of range can be nulled with clean.tables.<table>.outliers), or set "
            "featurize.time_format to the format the column has"
        )
    return parsed.alias(values.name)


def suggest_time_format(values: pl.Series) -> str:
    """What a time column that is not a Date/Datetime holds, and the time_format that reads it."""
    present = values.drop_nulls()
    if present.len() == 0:
        return "it holds no values; check the column or set featurize.time_column=null"
    examples = _examples(present, 3)
    if present.dtype.is_numeric():
        numbers = present.cast(pl.Float64).to_numpy()
        lo, hi = float(numbers.min()), float(numbers.max())
        whole = bool((numbers == np.floor(numbers)).all())
        span = f"{int(lo)} to {int(hi)}" if whole else f"{lo:g} to {hi:g}"
        held = f"it holds numbers from {span} (e.g. {examples})"
        if whole and 1000 <= lo <= hi <= 2999:
            return f"{held}, which look like years: set featurize.time_format=year"
        months = numbers % 100
        if whole and 100_001 <= lo <= hi <= 999_912 and bool(((months >= 1) & (months <= 12)).all()):
            return f"{held}, which look like years and months: set featurize.time_format=year_month"
        if max(abs(lo), abs(hi)) >= 1e11:
            return (
                f"{held}, which look like unix milliseconds: set featurize.time_format=unix_ms "
                "(or unix_s for seconds)"
            )
        if max(abs(lo), abs(hi)) >= 1e7:
            return (
                f"{held}, which look like unix seconds: set featurize.time_format=unix_s "
                "(or unix_ms for milliseconds)"
            )
        return (
            f"{held}; set featurize.time_format to year, year_month, unix_s or unix_ms, or declare "
            "the column Date or Datetime in data.dtypes"
        )
    if present.dtype == pl.String:
        held = f"it holds text such as {examples}"
        text = present.str.strip_chars()
        if text.str.contains(r"^\d{4}$").all():
            return f"{held}, which look like years: set featurize.time_format=year"
        if text.str.contains(r"^\d{4}[-/]?\d{1,2}$").all():
            return f"{held}, which look like years and months: set featurize.time_format=year_month"
        fits = [p for p in _COMMON_PATTERNS if text.str.to_datetime(p, strict=False).null_count() == 0]
        pattern = " or ".join(repr(p) for p in fits[:2]) if fits else "'%d/%m/%Y'"
        return (
            f"{held}: set featurize.time_format to the strftime pattern they are written in, e.g. "
            f"{pattern}, or declare the column Date or Datetime in data.dtypes"
        )
    return f"it holds {present.dtype} values; declare the column Date or Datetime in data.dtypes"


def read_time(df: pl.DataFrame, column: str, cfg: FeaturizeConfig, *, what: str) -> pl.DataFrame:
    """``df`` with its time ``column`` a Date/Datetime: read with ``featurize.time_format`` if set."""
    dtype = df.schema[column]
    if cfg.time_format is not None:
        values = parse_time(df.get_column(column), cfg.time_format, timezone=cfg.timezone, what=what)
        return df.with_columns(values)
    if not isinstance(dtype, pl.Datetime | pl.Date):
        raise DataError(
            f"{what} is {dtype}, not a Date or Datetime: {suggest_time_format(df.get_column(column))}"
        )
    return df


# ------------------------------------------------------------------------------------- names ---
def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}" if close else "no similar name"


def _unknown(setting: str, names: Iterable[str], known: Iterable[str], *, what: str) -> list[str]:
    """One sentence per name in ``setting`` that is not in ``known``, with the closest known name."""
    known = list(known)
    return [
        f"{setting} names {name!r}, which is not {what} ({_did_you_mean(name, known)}?); fix the "
        "spelling or remove it"
        for name in names
        if name not in known
    ]


def _fail(problems: list[str]) -> None:
    if len(problems) == 1:
        raise DataError(problems[0])
    if problems:
        raise DataError(f"{len(problems)} unknown column names:\n  " + "\n  ".join(problems))


def derived_names(cfg: FeaturizeConfig) -> list[str]:
    """The columns ``featurize.derived`` adds (groups that need a missing time column add none)."""
    names: list[str] = []
    for group in cfg.derived:
        if group == "holidays":
            names += ["days_to_holiday", "days_since_holiday"] if cfg.time_column else []
            continue
        fn, _, needs_time = GROUPS[group]
        if not needs_time or cfg.time_column is not None:
            names += [str(e.meta.output_name()) for e in fn(cfg)]
    return names


def check_names(tables: dict[str, pl.DataFrame], cfg: FeaturizeConfig, label: LabelConfig) -> None:
    """Fail when ``featurize.exclude``, ``categorical`` or ``optional`` names a column the data lacks.

    The data's columns are the base table's, the joined ones (with their prefix), the derived
    features and the label. Run by the offline stage only: a request to the service need not carry
    the excluded columns. Every unknown name is listed at once, each with the closest known name.
    """
    if cfg.base not in tables:
        return  # featurize names the missing table
    known = [
        *tables[cfg.base].columns,
        *(f"{join.prefix}{c}" for join in cfg.joins for c in join.columns),
        *derived_names(cfg),
        LABEL,
        label.column,
    ]
    what = "a column of the data"
    problems = _unknown("featurize.exclude", cfg.exclude, known, what=what)
    problems += _unknown("featurize.categorical", cfg.categorical, known, what=what)
    for group, cols in sorted(cfg.optional.items()):
        problems += _unknown(f"featurize.optional group {group!r}", cols, known, what=what)
    _fail(problems)


# ------------------------------------------------------------------------------------- stage ---
def _check_columns(columns: list[str], needed: list[str], *, what: str) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(f"{what} needs column(s) {missing}, which the data lacks (have {columns})")


def featurize(
    tables: dict[str, pl.DataFrame], cfg: FeaturizeConfig, label: LabelConfig
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Build the feature table and its spec from the cleaned tables."""
    if cfg.base not in tables:
        raise DataError(f"featurize.base {cfg.base!r} is not a cleaned table (have {sorted(tables)})")
    base = tables[cfg.base]
    _check_columns(base.columns, [LABEL], what=f"featurize.base {cfg.base!r} (the labelled table)")
    if cfg.time_column is not None:
        _check_columns(base.columns, [cfg.time_column], what="featurize.time_column")
        base = read_time(base, cfg.time_column, cfg, what=f"featurize.time_column {cfg.time_column!r}")
        tables = {**tables, cfg.base: base}
        # A table joined on the time column has it in the same format: read it the same way.
        for join in cfg.joins:
            right = tables.get(join.table)
            if cfg.time_column not in join.left_on or right is None or cfg.time_format is None:
                continue
            key = join.right_on[join.left_on.index(cfg.time_column)]
            if key in right.columns and not isinstance(right.schema[key], pl.Datetime | pl.Date):
                what = f"column {key!r} of {join.table} (joined on featurize.time_column)"
                tables[join.table] = read_time(right, key, cfg, what=what)
    lf = base.lazy()

    for join in cfg.joins:
        if join.table not in tables:
            raise DataError(f"featurize.joins: table {join.table!r} is not a cleaned table")
        right = tables[join.table]
        _check_columns(base.columns, join.left_on, what=f"join with {join.table} (left_on)")
        _check_columns(right.columns, join.right_on + join.columns, what=f"join with {join.table}")
        renamed = right.lazy().select(
            *(pl.col(r).alias(f"_key{i}") for i, r in enumerate(join.right_on)),
            *(pl.col(c).alias(f"{join.prefix}{c}") for c in join.columns),
        )
        lf = lf.join(
            renamed,
            left_on=join.left_on,
            right_on=[f"_key{i}" for i in range(len(join.right_on))],
            how="left",
            validate="m:1",
            maintain_order="left",
            coalesce=True,
        )

    # Local time after the joins (join keys keep the source's zone), before calendar features.
    if cfg.timezone and cfg.time_column and isinstance(base.schema[cfg.time_column], pl.Datetime):
        lf = lf.with_columns(pl.col(cfg.time_column).dt.convert_time_zone(cfg.timezone))
    columns = lf.collect_schema().names()
    exprs: list[pl.Expr] = []
    for group in cfg.derived:
        if group == "holidays":
            continue
        fn, needed, needs_time = GROUPS[group]
        if needs_time and cfg.time_column is None:
            raise DataError(f"featurize.derived {group!r} needs featurize.time_column; set it")
        _check_columns(columns, needed, what=f"featurize.derived {group!r}")
        # A derived value already in the input (e.g. schedule counts sent to the online service)
        # is kept as given, not recomputed.
        exprs.extend(e for e in fn(cfg) if e.meta.output_name() not in columns)
    lf = lf.with_columns(exprs)
    if "holidays" in cfg.derived:
        if cfg.time_column is None:
            raise DataError("featurize.derived 'holidays' needs featurize.time_column; set it")
        bounds = base.select(
            pl.col(cfg.time_column).dt.year().min().alias("lo"),
            pl.col(cfg.time_column).dt.year().max().alias("hi"),
        )
        lo, hi = bounds.row(0)
        lf = holiday_distance(lf, cfg, list(range(lo - 1, hi + 2)))

    # Never features: the label, its source column (the outcome itself), the time column, and
    # the configured exclusions (everything measured after departure, identifiers).
    never = {LABEL, LABEL_SOURCE, label.column, *cfg.exclude, *([cfg.time_column] if cfg.time_column else [])}
    schema = lf.collect_schema()
    features = [c for c in schema.names() if c not in never]
    _fail(_unknown("featurize.categorical", cfg.categorical, schema.names(), what="a column of the data"))
    categorical = [
        c
        for c in features
        if c in cfg.categorical
        or schema[c] in (pl.String, pl.Boolean)
        or isinstance(schema[c], pl.Categorical)
    ]
    unsupported = [c for c in features if c not in categorical and not schema[c].is_numeric()]
    if unsupported:
        raise DataError(
            f"feature column(s) {unsupported} are neither numeric nor text; add them to "
            "featurize.exclude or featurize.categorical"
        )
    # optional groups name model inputs: not the label, the time column or an excluded column
    _fail(
        [
            problem
            for group, cols in sorted(cfg.optional.items())
            for problem in _unknown(
                f"featurize.optional group {group!r}",
                cols,
                features,
                what="a feature (the excluded columns, the label and the time column are not)",
            )
        ]
    )
    # The label's source values, for the leakage audit (a feature that predicts them leaks).
    label_source = (
        label.column
        if label.threshold is not None
        and label.column in base.columns
        and base.schema[label.column].is_numeric()
        else None
    )
    keep = ([cfg.time_column] if cfg.time_column else []) + features + [LABEL]
    lf = lf.select(
        *(pl.col(c).cast(pl.String) if c in categorical else pl.col(c) for c in keep),
        *([pl.col(label_source).cast(pl.Float64).alias(LABEL_SOURCE)] if label_source else []),
    )
    if cfg.time_column:
        lf = lf.sort(cfg.time_column, maintain_order=True)
    df = lf.collect()

    masked = {c for cols in cfg.optional.values() for c in cols} if cfg.mask_rate > 0 else set()
    spec = {
        "version": SPEC_VERSION,
        "target": LABEL,
        "time_column": cfg.time_column,
        "label_source": label_source,
        "features": [
            {
                "name": c,
                "kind": "categorical" if c in categorical else "numeric",
                "dtype": str(df.schema[c]),
                # missing in the data, or blanked in training (an optional group): either way the
                # model sees it missing, so a request may leave it out
                "nullable": c in masked or df.get_column(c).null_count() > 0,
            }
            for c in features
        ],
        "optional": {g: list(cols) for g, cols in sorted(cfg.optional.items())},
        "mask_rate": cfg.mask_rate,
    }
    log.info("featurize: %d rows, %d features", df.height, len(features))
    return df, spec


def main(params_path: str, clean_dir: str, out_dir: str) -> None:
    params = load_params(params_path)
    cfg = section(params, "featurize", FeaturizeConfig, source=params_path)
    label = section(params.get("clean", {}), "label", LabelConfig, source=f"{params_path}: clean")
    tables = {p.stem: pl.read_parquet(p) for p in sorted(Path(clean_dir).glob("*.parquet"))}
    check_names(tables, cfg, label)
    df, spec = featurize(tables, cfg, label)
    with atomic_outputs(out_dir) as (tmp,):
        tmp.mkdir()
        write_parquet(df, tmp / "features.parquet")
        write_json(tmp / "spec.json", spec)


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Join the tables, derive features, write the feature spec."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime featurize``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "Join the cleaned tables and derive pre-departure features (params `featurize`); write the feature "
        "table and the feature spec that later stages read."
    )
    command.add_params(parser)
    parser.add_argument("--clean", required=True, help=command.CLEAN)
    parser.add_argument("--out", required=True, help="output folder: features.parquet + spec.json")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(params_path=args.params, clean_dir=args.clean, out_dir=args.out)
