"""clean: validate each raw table, apply the cleaning rules, derive the label, count what each rule did.

Rules per table (``clean.tables.<name>``), in this order: ranges (a value outside fails the stage),
formats (a value not in its format, e.g. hhmm, fails the stage), normalize (text stripped and
case-folded; blank becomes null), outliers (implausible values become null), fill, drop_missing,
de-duplication (exact rows, then key), references (orphan keys counted). The label table then gets
``label`` (0/1) from ``clean.label``.

The row-wise rules (normalize, outliers, fill: :func:`apply_value_rules`) also run on every request
the service scores; the failing ones (ranges, formats) are the request schema's bounds and formats.
"""

from __future__ import annotations

import argparse
import difflib
import logging
from pathlib import Path
from typing import Any

import polars as pl

from ontime import command
from ontime.config import load_params, section
from ontime.config.clean import LABEL, CleanConfig, LabelConfig, TableRules
from ontime.data.collect import SCHEMA_FILE, record_schema
from ontime.errors import DataError
from ontime.io import atomic_outputs, read_json, write_json, write_parquet

log = logging.getLogger(__name__)


def _require(df: pl.DataFrame, columns: list[str], *, table: str, rule: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"table {table}: column(s) {missing} named in clean.tables.{table}.{rule} do not "
            f"exist (columns: {df.columns}); fix the rule or the source"
        )


def _numeric(df: pl.DataFrame, column: str, *, table: str, rule: str) -> None:
    if not df.schema[column].is_numeric():
        raise DataError(
            f"table {table}: column {column!r} is {df.schema[column]}, but clean.tables.{table}."
            f"{rule} needs a number; declare it numeric in data.dtypes or drop the rule"
        )


def _text(df: pl.DataFrame, column: str, *, table: str, rule: str) -> None:
    if df.schema[column] != pl.String:
        raise DataError(
            f"table {table}: column {column!r} is {df.schema[column]}, but clean.tables.{table}."
            f"{rule} needs text; declare it String in data.dtypes or drop the rule"
        )


def hhmm_violation(value: int) -> str | None:
    """Why ``value`` is not an hhmm clock time (hours 0-23, minutes 00-59), or None when it is one."""
    if value < 0 or value > 2359:
        return f"{value} is not a valid hhmm time (must be 0 to 2359: hours 0-23, minutes 00-59)"
    if value % 100 > 59:
        return f"{value} is not a valid hhmm time (minutes must be 00-59)"
    return None


def not_hhmm(column: str) -> pl.Expr:
    """True where ``column`` holds a value that is not an hhmm clock time (nulls are not checked)."""
    c = pl.col(column)
    return (c < 0) | (c > 2359) | (c % 100 > 59)


FORMATS = {"hhmm": not_hhmm}
FORMAT_HELP = {"hhmm": "hhmm clock times (an integer 0 to 2359: hours 0-23, then minutes 00-59)"}


# The characters polars' ``str.strip_chars()`` strips (Unicode White_Space): Python's ``str.strip()``
# would also strip the separators \x1c-\x1f, so the request schema uses this set to agree with clean.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)


def is_blank(value: str) -> bool:
    """Empty or only whitespace: what :func:`normalized` turns into a missing value."""
    return not value.strip(WHITESPACE)


def normalized(column: str, mode: str) -> pl.Expr:
    """``column`` stripped of surrounding whitespace and case-folded per ``mode``; blank -> null."""
    text = pl.col(column).str.strip_chars()
    if mode == "upper":
        text = text.str.to_uppercase()
    elif mode == "lower":
        text = text.str.to_lowercase()
    return pl.when(text == "").then(None).otherwise(text).alias(column)


def apply_value_rules(df: pl.DataFrame, rules: TableRules) -> tuple[pl.DataFrame, dict[str, int]]:
    """Normalize text, outliers to null, then fills: the row-wise rules, shared with online scoring."""
    counts: dict[str, int] = {}
    norms = {c: m for c, m in rules.normalize.items() if c in df.columns}
    if norms:
        exprs = [normalized(c, m) for c, m in sorted(norms.items())]
        changed = df.select(
            pl.col(c).ne_missing(e).sum().alias(c) for c, e in zip(sorted(norms), exprs, strict=True)
        ).row(0, named=True)
        counts.update({f"normalized_{c}": int(n) for c, n in changed.items()})
        df = df.with_columns(exprs)
    nulled = []
    for column, (lo, hi) in sorted(rules.outliers.items()):
        if column not in df.columns:
            continue
        outside = (pl.col(column) < lo) | (pl.col(column) > hi)
        counts[f"outliers_nulled_{column}"] = df.select(outside.sum()).item()
        nulled.append(pl.when(outside).then(None).otherwise(pl.col(column)).alias(column))
    df = df.with_columns(nulled)
    fills = {c: v for c, v in rules.fill.items() if c in df.columns}
    for column in sorted(fills):
        counts[f"filled_{column}"] = df.get_column(column).null_count()
    return df.with_columns(pl.col(c).fill_null(v) for c, v in fills.items()), counts


def clean_table(df: pl.DataFrame, rules: TableRules, *, table: str) -> tuple[pl.DataFrame, dict[str, int]]:
    """Apply ``rules`` to one table; return the cleaned frame and per-rule counts."""
    counts: dict[str, int] = {"rows_in": df.height}
    if df.height == 0:
        raise DataError(f"table {table}: no rows; check the collect stage's source")
    for rule, cols in (
        ("key", rules.key),
        ("drop_missing", rules.drop_missing),
        ("fill", list(rules.fill)),
        ("ranges", list(rules.ranges)),
        ("outliers", list(rules.outliers)),
        ("references", list(rules.references)),
        ("formats", list(rules.formats)),
        ("normalize", list(rules.normalize)),
    ):
        _require(df, cols, table=table, rule=rule)

    for column, (lo, hi) in sorted(rules.ranges.items()):
        _numeric(df, column, table=table, rule="ranges")
        bad = df.filter((pl.col(column) < lo) | (pl.col(column) > hi))
        if bad.height:
            raise DataError(
                f"table {table}: column {column!r} has {bad.height} value(s) outside "
                f"[{lo}, {hi}], for example {bad.get_column(column)[0]!r}. Fix the source data "
                f"or widen clean.tables.{table}.ranges.{column}"
            )

    for column, fmt in sorted(rules.formats.items()):
        if not df.schema[column].is_integer():
            raise DataError(
                f"table {table}: column {column!r} is {df.schema[column]}, but clean.tables.{table}."
                f"formats.{column} ({fmt}) needs an integer; declare it Int32 or Int64 in data.dtypes"
            )
        bad = df.filter(FORMATS[fmt](column))
        if bad.height:
            raise DataError(
                f"table {table}: column {column!r} has {bad.height} value(s) that are not "
                f"{FORMAT_HELP[fmt]}, for example {bad.get_column(column)[0]!r}. Fix the source data "
                f"or drop clean.tables.{table}.formats.{column}"
            )

    for column in sorted(rules.outliers):
        _numeric(df, column, table=table, rule="outliers")
    for column in sorted(rules.normalize):
        _text(df, column, table=table, rule="normalize")
    df, changed = apply_value_rules(df, rules)
    counts.update(changed)

    before = df.height
    df = df.drop_nulls(rules.drop_missing) if rules.drop_missing else df
    counts["dropped_missing"] = before - df.height

    before = df.height
    df = df.unique(maintain_order=True)
    counts["dropped_duplicate_rows"] = before - df.height
    before = df.height
    if rules.key:
        df = df.unique(subset=rules.key, keep="first", maintain_order=True).sort(rules.key)
    counts["dropped_duplicate_key"] = before - df.height
    if df.height == 0:
        raise DataError(f"table {table}: every row was dropped by the cleaning rules; relax them")
    counts["rows_out"] = df.height
    return df, counts


def count_orphans(tables: dict[str, pl.DataFrame], rules: dict[str, TableRules]) -> dict[str, int]:
    """Rows whose reference (``column -> table.column``) has no match: counted, not dropped."""
    orphans: dict[str, int] = {}
    for table, rule in sorted(rules.items()):
        for column, target in sorted(rule.references.items()):
            ref_table, _, ref_column = target.partition(".")
            if ref_table not in tables or ref_column not in tables[ref_table].columns:
                raise DataError(
                    f"clean.tables.{table}.references.{column}: {target!r} is not a known "
                    f"table.column; use one of the cleaned tables {sorted(tables)}"
                )
            keys = tables[ref_table].get_column(ref_column).unique()
            values = tables[table].get_column(column)
            orphans[f"{table}.{column}"] = int((values.is_not_null() & ~values.is_in(keys)).sum())
    return orphans


def add_label(df: pl.DataFrame, cfg: LabelConfig) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Add the 0/1 ``label`` column; rows without a target are positive or dropped per config."""
    table, column = cfg.table, cfg.column
    if column not in df.columns:
        close = difflib.get_close_matches(column, df.columns, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        raise DataError(
            f"table {table}: the label column {column!r} (clean.label.column) does not exist; its "
            f"columns are {df.columns}{hint} Set clean.label.column to the target column, e.g. "
            f"`-S clean.label.column={close[0] if close else '<column>'}` (or clean.label.table "
            "when the target is in another table)"
        )
    target = pl.col(column)
    if cfg.threshold is not None:
        if not df.schema[column].is_numeric():
            raise DataError(
                f"table {table}: label column {column!r} is {df.schema[column]}, but "
                "clean.label.threshold needs a number; set clean.label.positive_value instead, or "
                f"declare data.dtypes.{table}.{column} numeric"
            )
        positive = target >= cfg.threshold
    elif cfg.positive_value is not None:
        positive = target == cfg.positive_value
    else:
        values = df.get_column(column).drop_nulls().unique().sort().to_list()
        if not set(values) <= {0, 1}:
            raise DataError(
                f"table {table}: label column {column!r} is not binary (values such as "
                f"{values[:5]}); set clean.label.threshold or clean.label.positive_value"
            )
        positive = target.cast(pl.Boolean)
    missing = df.get_column(column).null_count()
    if not cfg.missing_positive:
        df = df.filter(target.is_not_null())
    df = df.with_columns(positive.fill_null(True).cast(pl.Int8).alias(LABEL))
    n_pos = int(df.get_column(LABEL).sum())
    if df.height == 0 or n_pos in (0, df.height):
        raise DataError(
            f"table {table}: the label from column {column!r} has one class ({n_pos} positive of "
            f"{df.height} rows); a classifier needs both. Check clean.label (threshold, "
            "positive_value) and the data"
        )
    stats = {
        "rows": df.height,
        "positive": n_pos,
        "positive_rate": round(n_pos / df.height, 6),
        "missing_target": missing,
        "missing_target_policy": "positive" if cfg.missing_positive else "dropped",
    }
    return df, stats


def clean(
    tables: dict[str, pl.DataFrame], cfg: CleanConfig
) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """Clean every configured table and label the label table; return tables and metrics."""
    unknown = sorted(set(cfg.tables) - set(tables))
    if unknown:
        raise DataError(
            f"clean.tables names {unknown}, which the collect stage did not produce "
            f"(have {sorted(tables)}); fix clean.tables or data.tables"
        )
    out: dict[str, pl.DataFrame] = {}
    metrics: dict[str, Any] = {"tables": {}}
    for table in sorted(cfg.tables):
        out[table], metrics["tables"][table] = clean_table(tables[table], cfg.tables[table], table=table)
        log.info("clean: %s: %s", table, metrics["tables"][table])
    metrics["orphans"] = count_orphans(out, cfg.tables)
    out[cfg.label.table], metrics["label"] = add_label(out[cfg.label.table], cfg.label)
    return out, metrics


def raw_schema(raw_dir: Path) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """From collect's ``schema.json``: the declared columns (table -> column -> type) and the
    dropped ones (table -> column -> why). Empty when the file is absent (an older data/raw)."""
    path = raw_dir / SCHEMA_FILE
    if not path.is_file():
        log.info("clean: %s not found; the cleaned schema marks no column as declared", path)
        return {}, {}
    schema = read_json(path)
    declared = {
        table: {c: col["dtype"] for c, col in info["columns"].items() if col["declared"]}
        for table, info in schema["tables"].items()
    }
    return declared, schema["dropped"]


def main(params_path: str, raw_dir: str, out_dir: str, metrics_path: str) -> None:
    cfg = section(load_params(params_path), "clean", CleanConfig, source=params_path)
    raw = Path(raw_dir)
    # Tables are the Parquet files only: schema.json beside them describes them.
    tables = {p.stem: pl.read_parquet(p) for p in sorted(raw.glob("*.parquet"))}
    declared, dropped = raw_schema(raw)
    cleaned, metrics = clean(tables, cfg)
    with atomic_outputs(out_dir, metrics_path) as (tmp_dir, tmp_metrics):
        tmp_dir.mkdir()
        for table, df in cleaned.items():
            write_parquet(df, tmp_dir / f"{table}.parquet")
        write_json(tmp_dir / SCHEMA_FILE, record_schema(cleaned, declared, dropped))
        write_json(tmp_metrics, metrics)


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Validate and clean the tables, derive the label."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime clean``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "Validate ranges, formats (hhmm), columns and keys, normalise codes, null outliers, fill or drop "
        "missing values, de-duplicate, derive the 0/1 label (params `clean`), and count what each rule did."
    )
    command.add_params(parser)
    parser.add_argument("--raw", required=True, help="folder of raw tables (from collect)")
    parser.add_argument("--out", required=True, help="output folder for cleaned tables")
    parser.add_argument("--metrics", required=True, help="JSON metrics file with per-rule counts")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(params_path=args.params, raw_dir=args.raw, out_dir=args.out, metrics_path=args.metrics)
