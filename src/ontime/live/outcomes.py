"""``ontime outcomes``: the ground truth of the flights of some local days, as late labels arrive.

Stands in for the airline's feed of what happened: for every flight scheduled on the local days
``--from`` .. ``--to`` (inclusive, params ``featurize.timezone``; UTC when unset) of the feature table,
one JSON line ``{"key": ..., "scheduled": ..., "label": 0 or 1}``, sorted by ``scheduled`` then
``key``, written atomically (``ontime.io.atomic_outputs``: a failed run leaves no partial file).

``key`` is byte-identical to the key the service logs for the same flight
(``requestlog.flight_key`` over params ``serve.key``): the values are rendered by the same
``key_part``, so a flight number held as text ``"1545"`` here and sent as the integer ``1545`` gives
the same ``1545``, and a time, zoned in the table, becomes UTC ``YYYY-MM-DDTHH:MM:SSZ`` as the
request's. A naive time is taken as UTC, as ``key_part`` does. ``scheduled`` is the time column
(``featurize.time_column``) rendered the same way. ``label`` is the feature table's label (the
spec's ``target``). ``ontime monitor --outcomes`` joins these lines with the request log by key.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import polars as pl

from ontime import command
from ontime.config import load_params, section
from ontime.config.featurize import FeaturizeConfig
from ontime.config.serve import ServeConfig
from ontime.errors import ConfigError, DataError
from ontime.io import atomic_outputs
from ontime.serving.requestlog import flight_key, key_part
from ontime.spec import FeatureSpec

log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"  # beside the feature table (featurize writes both): names the label column
EXAMPLES = 3


def local_days(start: str, end: str) -> tuple[dt.date, dt.date]:
    """``--from`` and ``--to`` as days; a ConfigError for a bad day or a range that runs backwards."""
    try:
        first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except ValueError as exc:
        raise ConfigError(f"--from {start!r} / --to {end!r}: days as YYYY-MM-DD ({exc})") from None
    if first > last:
        raise ConfigError(f"--from {start} is after --to {end}; give the first day, then the last")
    return first, last


def default_out(first: dt.date, last: dt.date) -> str:
    return f"outcomes/{first.isoformat()}_{last.isoformat()}.jsonl"


def outcomes(
    features: pl.LazyFrame,
    *,
    key_fields: list[str],
    time_column: str,
    timezone: str | None,
    target: str,
    first: dt.date,
    last: dt.date,
    where: str,
) -> list[dict[str, Any]]:
    """The outcome lines of the flights scheduled on the local days ``first`` .. ``last``, sorted by
    ``scheduled`` then ``key``. ``where``: the table's name in errors."""
    if not key_fields:
        raise ConfigError(
            "params serve.key is empty: the service logs no key, so outcomes could never be joined "
            "with its predictions; set serve.key in conf/data/ (e.g. [carrier, flight, origin, "
            "time_hour]), run `ontime params` and package again"
        )
    schema = features.collect_schema()
    needed = list(dict.fromkeys([*key_fields, time_column, target]))
    missing = [c for c in needed if c not in schema]
    if missing:
        raise DataError(
            f"{where}: no column(s) {missing} (params serve.key {key_fields}, featurize.time_column "
            f"{time_column!r}, label {target!r}); a key field must be a column of the feature table: fix "
            "serve.key or re-run featurize"
        )
    dtype = schema[time_column]
    if not isinstance(dtype, pl.Datetime | pl.Date):
        raise DataError(f"{where}: {time_column} (featurize.time_column) is {dtype}, not a date or date-time")
    tz = timezone or "UTC"
    when = pl.col(time_column)
    if isinstance(dtype, pl.Datetime):
        zoned = when if dtype.time_zone else when.dt.replace_time_zone("UTC")
        day = zoned.dt.convert_time_zone(tz).dt.date()
    else:
        day = when
    rows = features.filter(day.is_between(first, last)).select(needed).collect()
    if rows.height == 0:
        span = features.select(day.min().alias("a"), day.max().alias("b")).collect().row(0)
        raise DataError(
            f"{where}: no flights scheduled on the local days {first} .. {last} ({tz}); the table "
            f"covers {span[0]} .. {span[1]}"
        )
    bad = rows.filter(~pl.col(target).cast(pl.Int64, strict=False).is_in([0, 1]) | pl.col(target).is_null())
    if bad.height:
        raise DataError(
            f"{where}: {bad.height} flight(s) have a label {target!r} that is not 0 or 1, e.g. "
            f"{bad.get_column(target).head(EXAMPLES).to_list()}; re-run clean and featurize"
        )
    # Keys by the service's own function (one definition of a key), on the table's Python values:
    # a row loop, a few thousand flights a day.
    lines = sorted(
        (
            {
                "key": flight_key(row, key_fields),
                "scheduled": key_part(row[time_column]),
                "label": int(row[target]),
            }
            for row in rows.iter_rows(named=True)
        ),
        key=lambda line: (line["scheduled"], line["key"]),
    )
    return unique_keys(lines, where)


def unique_keys(lines: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """``lines`` with each key once; the same key with two labels is a DataError (serve.key does not
    identify a flight)."""
    seen: dict[str, int] = {}
    kept: list[dict[str, Any]] = []
    conflicts: list[str] = []
    for line in lines:
        label = seen.get(line["key"])
        if label is None:
            seen[line["key"]] = line["label"]
            kept.append(line)
        elif label != line["label"]:
            conflicts.append(line["key"])
    if conflicts:
        raise DataError(
            f"{where}: {len(conflicts)} key(s) name flights with different labels, e.g. "
            f"{conflicts[:EXAMPLES]}: params serve.key does not identify a flight; add fields to it"
        )
    return kept


def main(params_path: str, start: str, end: str, features: str, out: str | None) -> int:
    """Write the outcomes of the local days ``start`` .. ``end`` to ``out`` (default
    ``outcomes/<start>_<end>.jsonl``) and print a JSON summary; 0 on success (errors: 2)."""
    first, last = local_days(start, end)
    params = load_params(params_path)
    serve = section(params, "serve", ServeConfig, source=params_path)
    feat = section(params, "featurize", FeaturizeConfig, source=params_path)
    if feat.time_column is None:
        raise ConfigError(f"{params_path}: featurize.time_column is not set: outcomes are chosen by day")
    table = Path(features)
    if not table.is_file():
        raise DataError(f"{table}: feature table not found; run `dvc repro featurize` (or `dvc pull`)")
    spec = FeatureSpec.load(table.with_name(SPEC_FILE))
    lines = outcomes(
        pl.scan_parquet(table),
        key_fields=list(serve.key),
        time_column=feat.time_column,
        timezone=feat.timezone,
        target=spec.target,
        first=first,
        last=last,
        where=str(table),
    )
    target = Path(out) if out else Path(default_out(first, last))
    with atomic_outputs(target) as (tmp,), tmp.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    positives = sum(line["label"] for line in lines)
    summary = {
        "out": str(target),
        "from": first.isoformat(),
        "to": last.isoformat(),
        "timezone": feat.timezone or "UTC",
        "flights": len(lines),
        "positives": positives,
        "first_scheduled": lines[0]["scheduled"],
        "last_scheduled": lines[-1]["scheduled"],
    }
    print(json.dumps(summary, indent=2))
    log.info(
        "outcomes: %d flight(s) of %s .. %s (%s), %d positive, written to %s",
        len(lines),
        first,
        last,
        summary["timezone"],
        positives,
        target,
    )
    return 0


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Late labels of some local days' flights, for monitor."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime outcomes``: its description and options."""
    parser.description = (
        "Write the ground truth (late labels) of the flights scheduled on local days FROM..TO "
        "(params featurize.timezone) from the feature table: JSON Lines {key, scheduled, label} with "
        "the key the service logs (params serve.key), for `ontime monitor --outcomes`. Exit 0; 2: "
        "error (bad days, empty serve.key, a key field not in the table, no flights on those days)."
    )
    command.add_params(parser)
    parser.add_argument("--from", dest="start", required=True, help="first local day, YYYY-MM-DD")
    parser.add_argument("--to", dest="end", required=True, help="last local day, YYYY-MM-DD (inclusive)")
    parser.add_argument(
        "--features",
        default="data/features/features.parquet",
        help="feature table with labels, spec.json beside it (default: %(default)s)",
    )
    parser.add_argument(
        "--out", default=None, help="JSON Lines file to write (default: outcomes/FROM_TO.jsonl)"
    )


def run(args: argparse.Namespace) -> int:
    """``main`` with the options of :func:`add_arguments`, each by its name; its result is the exit code."""
    return main(params_path=args.params, start=args.start, end=args.end, features=args.features, out=args.out)
