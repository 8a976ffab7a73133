"""``ontime replay``: post real flights of a date range to a running service, in schedule order.

The flights of the local days ``--from`` .. ``--to`` (inclusive, params ``featurize.timezone``) are
read from the clean tables (``data/clean``) exactly as a client would hold them: the base table's
fields, the request tables' fields joined as featurize joins them (the weather forecast at the
origin), and the optional schedule counts (``origin_hour_departures``, ...) from the feature table.
Which fields are sent is what the service itself declares (its OpenAPI document, ``/docs.json``),
so a replay never sends a field the served model does not take.

They go out in time order, one scheduled hour (``featurize.time_column``) at a time, in requests of
at most ``--batch`` flights, pausing between hours for the schedule's gap divided by ``--speed``
(3600: an hour of schedule per second), never longer than ``--max-pause`` seconds; ``--speed 0``
does not pause. Only loopback services are accepted (localhost, 127.0.0.0/8, ::1): a replay is real
traffic and must never reach a service someone else depends on.

The service logs each flight with its key (params ``serve.key``), so ``ontime outcomes`` and
``ontime monitor --outcomes`` can later join the late labels to these very predictions. Requests the
service refuses (4xx) are counted with their first error and the replay goes on; a service that
cannot be reached stops it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import logging
import math
import time
import zoneinfo
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import polars as pl

from ontime import command
from ontime.config import load_params, section
from ontime.config.data import DataConfig
from ontime.config.featurize import FeaturizeConfig
from ontime.config.serve import ServeConfig
from ontime.errors import ConfigError, DataError
from ontime.live.outcomes import local_days
from ontime.serving.online import OPTIONAL_DERIVED

log = logging.getLogger(__name__)


def check_loopback(url: str) -> str:
    """``url`` without a trailing slash, if its host is a loopback address; else ConfigError."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(f"--url {url!r}: expected http://HOST:PORT, e.g. http://127.0.0.1:3000")
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise ConfigError(
            f"--url {url!r}: replay posts real traffic and only to a service on this machine "
            "(localhost, 127.0.0.1, ::1); start one with `ontime registry serve` or `bentoml serve`"
        )
    return url.rstrip("/")


def key_text(df: pl.DataFrame, columns: list[str]) -> pl.Expr:
    """One text key from ``columns`` of ``df`` (date-times in UTC), to join tables whose key columns
    differ in type (a flight number as an integer in one, as text in the other)."""
    parts = []
    for c in columns:
        dtype = df.schema[c]
        if isinstance(dtype, pl.Datetime):
            col = pl.col(c) if dtype.time_zone else pl.col(c).dt.replace_time_zone("UTC")
            parts.append(col.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        else:
            parts.append(pl.col(c).cast(pl.String))
    return pl.concat_str(parts, separator="|", ignore_nulls=False)


def flights(
    params: dict[str, Any], clean: Path, features: Path, first: dt.date, last: dt.date, fields: list[str]
) -> pl.DataFrame:
    """The request rows of the local days ``first`` .. ``last``, in time order, ``fields`` only
    (those the clean tables and the feature table can give; the others are left out)."""
    feat = section(params, "featurize", FeaturizeConfig)
    serve = section(params, "serve", ServeConfig)
    time_col, tz = feat.time_column, feat.timezone or "UTC"
    if time_col is None:
        raise ConfigError("featurize.time_column is not set: a replay needs the records' times to order them")
    path = clean / f"{feat.base}.parquet"
    if not path.is_file():
        raise DataError(f"{path}: not found; run `dvc repro clean` (or `dvc pull`)")
    base = pl.read_parquet(path)
    if time_col not in base.columns:
        raise DataError(f"{path}: no column {time_col!r} (featurize.time_column)")
    if not isinstance(base.schema[time_col], pl.Datetime):
        raise DataError(f"{path}: {time_col} is {base.schema[time_col]}, not a date-time")
    when = pl.col(time_col)
    if base.schema[time_col].time_zone is None:  # type: ignore[attr-defined]
        when = when.dt.replace_time_zone("UTC")
    rows = base.filter(when.dt.convert_time_zone(tz).dt.date().is_between(first, last))
    if rows.height == 0:
        raise DataError(f"{path}: no rows scheduled on {first} .. {last} ({tz}); pick days in the data")
    for join in feat.joins:
        if join.table not in serve.request_tables:
            continue
        table = pl.read_parquet(clean / f"{join.table}.parquet").select(*join.right_on, *join.columns)
        table = table.unique(subset=join.right_on, keep="first", maintain_order=True)
        rows = rows.join(
            table, left_on=join.left_on, right_on=join.right_on, how="left", maintain_order="left"
        )
    derived = [c for c in OPTIONAL_DERIVED if c in fields]
    key = [k for k in serve.key if k in rows.columns]
    if derived and features.is_file() and key:
        table = pl.read_parquet(features, columns=[*key, *derived])
        if all(k in table.columns for k in key):
            table = table.select(key_text(table, key).alias("_key"), *derived).unique("_key", keep="first")
            rows = rows.with_columns(key_text(rows, key).alias("_key")).join(
                table, on="_key", how="left", maintain_order="left"
            )
    order = [time_col, *(c for c in ("sched_dep_time", *key) if c in rows.columns and c != time_col)]
    rows = rows.sort(order, maintain_order=True)
    return rows.select([f for f in fields if f in rows.columns])


def jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return (value.astimezone(dt.UTC) if value.tzinfo else value).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def service_fields(client: httpx.Client, serve: ServeConfig) -> tuple[list[str], list[str]]:
    """The record fields the running service declares (its OpenAPI document), and the required ones."""
    try:
        r = client.get("/docs.json")
    except httpx.TransportError as exc:
        raise DataError(
            f"no service answers at {client.base_url} ({exc}); start one (`ontime registry serve`, or "
            "`bentoml serve` of the packaged Bento) and check --url"
        ) from None
    if r.status_code != 200:
        raise DataError(f"{client.base_url}/docs.json answered {r.status_code}: is it an ontime service?")
    schemas = r.json().get("components", {}).get("schemas", {})
    schema = schemas.get(serve.record.title())
    if not schema or "properties" not in schema:
        raise DataError(
            f"{client.base_url}: its API has no {serve.record.title()!r} schema; it serves another data "
            f"set than params serve.record={serve.record!r}: replay with that repository's params"
        )
    return list(schema["properties"]), list(schema.get("required", []))


@dataclass
class Replayed:
    url: str
    first_day: str
    last_day: str
    flights: int = 0
    requests: int = 0
    answered: int = 0
    refused: int = 0  # flights in requests answered 4xx
    failed: int = 0  # flights in requests answered 5xx
    errors: dict[str, int] = field(default_factory=dict)  # status -> requests
    first_error: str | None = None
    days: dict[str, int] = field(default_factory=dict)  # local day -> flights sent
    seconds: float = 0.0
    fields: list[str] = field(default_factory=list)


def replay(
    url: str,
    params_path: str,
    first: dt.date,
    last: dt.date,
    *,
    clean: Path,
    features: Path,
    speed: float,
    max_pause: float,
    batch: int,
    limit: int | None,
    timeout_s: float = 60.0,
) -> Replayed:
    url = check_loopback(url)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request: the summary counts
    if speed < 0 or max_pause < 0 or batch < 1 or (limit is not None and limit < 1):
        raise ConfigError(
            f"--speed {speed}, --max-pause {max_pause}: not negative; --batch {batch}, --limit {limit}: "
            "at least 1"
        )
    params = load_params(params_path)
    serve = section(params, "serve", ServeConfig, source=params_path)
    feat = section(params, "featurize", FeaturizeConfig, source=params_path)
    section(params, "data", DataConfig, source=params_path)
    batch = min(batch, serve.max_batch_size)
    out = Replayed(url, first.isoformat(), last.isoformat())
    with httpx.Client(base_url=url, timeout=timeout_s) as client:
        names, required = service_fields(client, serve)
        rows = flights(params, clean, features, first, last, names)
        missing = [f for f in required if f not in rows.columns]
        if missing:
            raise DataError(
                f"the service requires {missing}, which the clean tables ({clean}) do not hold; "
                "is the service serving a model of this repository's data?"
            )
        if limit is not None:
            rows = rows.head(limit)
        out.fields = rows.columns
        tz = feat.timezone or "UTC"
        hours = rows.get_column(str(feat.time_column)).to_list()
        records = [{k: jsonable(v) for k, v in r.items()} for r in rows.to_dicts()]
        errors: Counter[str] = Counter()
        started = time.monotonic()
        i, previous = 0, None
        while i < len(records):
            hour = hours[i]
            j = i
            while j < len(records) and hours[j] == hour:
                j += 1
            if previous is not None and speed > 0:
                gap = (hour - previous).total_seconds() / speed
                time.sleep(min(max(gap, 0.0), max_pause))
            previous = hour
            day = (
                hour.astimezone(zoneinfo.ZoneInfo(tz)).date().isoformat() if hour.tzinfo else str(hour.date())
            )
            for start in range(i, j, batch):
                chunk = records[start : min(start + batch, j)]
                status, text = post(client, serve.records, chunk)
                out.requests += 1
                out.flights += len(chunk)
                out.days[day] = out.days.get(day, 0) + len(chunk)
                if status == 200:
                    out.answered += len(chunk)
                    continue
                errors[str(status)] += 1
                out.first_error = out.first_error or f"{status}: {text[:300]}"
                if status >= 500:
                    out.failed += len(chunk)
                else:
                    out.refused += len(chunk)
            i = j
        out.errors = dict(sorted(errors.items()))
        out.seconds = round(time.monotonic() - started, 3)
    return out


def post(client: httpx.Client, records_name: str, chunk: list[dict[str, Any]]) -> tuple[int, str]:
    try:
        r = client.post("/predict", json={records_name: chunk})
    except httpx.TransportError as exc:
        raise DataError(
            f"the service at {client.base_url} stopped answering ({exc}); the flights before were sent"
        ) from None
    return r.status_code, r.text


def main(
    url: str,
    params_path: str,
    start: str,
    end: str,
    *,
    clean: str,
    features: str,
    speed: float,
    max_pause: float,
    batch: int,
    limit: int | None,
) -> int:
    """Replay, print the JSON summary; 0 when every flight was answered, 1 when any was refused or
    failed (the summary counts them and quotes the first error)."""
    first, last = local_days(start, end)
    out = replay(
        url, params_path, first, last, clean=Path(clean), features=Path(features),
        speed=speed, max_pause=max_pause, batch=batch, limit=limit,
    )  # fmt: skip
    print(json.dumps(asdict(out), indent=2))
    level = logging.WARNING if out.refused or out.failed else logging.INFO
    log.log(
        level,
        "replay: %d flights of %s .. %s in %d requests to %s in %.1f s: %d answered, %d refused (4xx), "
        "%d failed (5xx)%s",
        out.flights, out.first_day, out.last_day, out.requests, out.url, out.seconds, out.answered,
        out.refused, out.failed, f"; first error {out.first_error}" if out.first_error else "",
    )  # fmt: skip
    return 1 if out.refused or out.failed else 0


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Post some days' real flights to a running service."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime replay``: its description and options."""
    parser.description = (
        "Post the real flights of local days FROM..TO to a running service on this machine, in "
        "schedule order, hour by hour, as clients would (fields: those the service declares). "
        "Prints a JSON summary. Exit 0: every flight answered; 1: some refused (4xx) or failed "
        "(5xx); 2: error (no service, a non-loopback --url, bad days)."
    )
    command.add_params(parser)
    parser.add_argument("--url", default="http://127.0.0.1:3000", help="the service (default: %(default)s)")
    parser.add_argument("--from", dest="start", required=True, help="first local day, YYYY-MM-DD")
    parser.add_argument("--to", dest="end", required=True, help="last local day, YYYY-MM-DD (inclusive)")
    parser.add_argument(
        "--speed",
        type=float,
        default=8640.0,
        help="schedule seconds per real second (default: %(default)s: a day in 10 s; 0: no pauses)",
    )
    parser.add_argument(
        "--max-pause", type=float, default=2.0, help="longest pause between hours, s (default: %(default)s)"
    )
    parser.add_argument(
        "--batch", type=int, default=64, help="most flights per request (default: %(default)s)"
    )
    parser.add_argument("--limit", type=int, default=None, help="send at most this many flights")
    parser.add_argument("--clean", default="data/clean", help="clean tables (default: %(default)s)")
    parser.add_argument(
        "--features",
        default="data/features/features.parquet",
        help="feature table, for the optional schedule counts (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    """``main`` with the options of :func:`add_arguments`, each by its name; its result is the exit code."""
    return main(
        url=args.url,
        params_path=args.params,
        start=args.start,
        end=args.end,
        clean=args.clean,
        features=args.features,
        speed=args.speed,
        max_pause=args.max_pause,
        batch=args.batch,
        limit=args.limit,
    )
