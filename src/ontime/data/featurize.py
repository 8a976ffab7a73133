"""featurize: join the cleaned tables and derive features known before the prediction moment.

Writes the feature table and a feature spec (JSON: target, time column, and per feature its name,
kind, dtype and whether it may be missing). Every later stage reads the spec, so nothing after this
stage knows the data is about flights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import holidays as holidays_lib
import polars as pl

from ontime.config import FeaturizeConfig, LabelConfig, load_params, section
from ontime.data.clean import LABEL
from ontime.errors import DataError
from ontime.io import atomic_outputs, write_json, write_parquet

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


def holiday_distance(lf: pl.LazyFrame, cfg: FeaturizeConfig, years: list[int]) -> pl.LazyFrame:
    """Days until the next and since the previous public holiday of ``holidays_country``."""
    try:
        calendar_ = holidays_lib.country_holidays(cfg.holidays_country, years=years)
    except NotImplementedError as exc:
        raise DataError(
            f"featurize.holidays_country {cfg.holidays_country!r} is not known to the holidays "
            "package; use an ISO code such as US"
        ) from exc
    dates = sorted(calendar_)
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
    lf = base.lazy()
    if cfg.time_column is not None:
        _check_columns(base.columns, [cfg.time_column], what="featurize.time_column")
        if not isinstance(base.schema[cfg.time_column], pl.Datetime | pl.Date):
            raise DataError(
                f"featurize.time_column {cfg.time_column!r} is {base.schema[cfg.time_column]}; "
                "declare it as Datetime or Date in data.dtypes"
            )

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
    never = {LABEL, label.column, *cfg.exclude, *([cfg.time_column] if cfg.time_column else [])}
    schema = lf.collect_schema()
    features = [c for c in schema.names() if c not in never]
    unknown_cat = [c for c in cfg.categorical if c not in schema]
    if unknown_cat:
        raise DataError(f"featurize.categorical names unknown column(s) {unknown_cat}")
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
    unknown_optional = {g: [c for c in cols if c not in features] for g, cols in cfg.optional.items()}
    unknown_optional = {g: cols for g, cols in unknown_optional.items() if cols}
    if unknown_optional:
        raise DataError(
            f"featurize.optional names column(s) that are not features: {unknown_optional}; "
            f"use feature names (have {features})"
        )
    keep = ([cfg.time_column] if cfg.time_column else []) + features + [LABEL]
    lf = lf.select(*(pl.col(c).cast(pl.String) if c in categorical else pl.col(c) for c in keep))
    if cfg.time_column:
        lf = lf.sort(cfg.time_column, maintain_order=True)
    df = lf.collect()

    masked = {c for cols in cfg.optional.values() for c in cols} if cfg.mask_rate > 0 else set()
    spec = {
        "version": SPEC_VERSION,
        "target": LABEL,
        "time_column": cfg.time_column,
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
    df, spec = featurize(tables, cfg, label)
    with atomic_outputs(out_dir) as (tmp,):
        tmp.mkdir()
        write_parquet(df, tmp / "features.parquet")
        write_json(tmp / "spec.json", spec)
