"""split: cut the feature table into train / fine-tune / test parts, each window with a validation part.

``time`` (default): half-open date windows in the time column's own time zone. The end of the
train and fine-tune windows is their validation part, so validation is always later than what the
model trains on: the last ``valid_days`` days, or the last ``valid_rows`` rows, or the last
``valid_share`` of the window's rows (rounded; at least one row, and one left to train on) in time
order. Rows and shares suit coarse time (a year or a month per row), where the last days of a
window hold no rows. Rows at the same time have no order between them: where the cut falls inside
such a tie (every row of a yearly table), the validation rows among the tied ones are a seeded
random draw, never the file's order (a file sorted by species would validate on one species).
``random`` / ``stratified``: seeded shuffles for data without time (stratified keeps the label rate
equal across parts); ``fractions`` and ``valid_fraction`` size the parts, and
``valid_days`` / ``valid_rows`` / ``valid_share`` do not apply.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ontime import command
from ontime.config import load_params, section
from ontime.config import seed as read_seed
from ontime.config.split import SplitConfig
from ontime.errors import DataError
from ontime.io import atomic_outputs, read_json, write_json, write_parquet

log = logging.getLogger(__name__)

PARTS = ("train", "train_valid", "finetune", "finetune_valid", "test")


def _at(day: dt.date, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.Datetime):
        moment = pl.lit(dt.datetime(day.year, day.month, day.day)).dt.cast_time_unit(dtype.time_unit)
        return moment.dt.replace_time_zone(dtype.time_zone) if dtype.time_zone else moment
    return pl.lit(day)


def _n_valid(n: int, cfg: SplitConfig) -> int:
    """Rows of an ``n``-row window that validate, by ``valid_rows`` or ``valid_share``."""
    if cfg.valid_rows is not None:
        return min(cfg.valid_rows, n)
    assert cfg.valid_share is not None
    return max(min(max(round(cfg.valid_share * n), 1), n - 1), 0)


def time_split(
    df: pl.DataFrame, cfg: SplitConfig, time_column: str, seed: int = 0
) -> dict[str, pl.DataFrame]:
    """Date windows; the end of the train and fine-tune windows (days, rows or share) validates."""
    dtype = df.schema[time_column]
    t = pl.col(time_column)
    parts: dict[str, pl.DataFrame] = {}
    for name in ("train", "finetune", "test"):
        window = cfg.windows[name]
        inside = df.filter((t >= _at(window.start, dtype)) & (t < _at(window.end, dtype)))
        if name == "test":
            parts["test"] = inside
            continue
        if cfg.valid_days is not None:
            cut = _at(window.end - dt.timedelta(days=cfg.valid_days), dtype)
            parts[name] = inside.filter(t < cut)
            parts[f"{name}_valid"] = inside.filter(t >= cut)
            continue
        # In time order; rows at the same time in a seeded random order (ties have none of their
        # own), then back in the table's order within each part.
        draw = np.random.default_rng([seed, len(name)]).permutation(inside.height)
        ordered = inside.with_row_index("_row").with_columns(pl.Series("_draw", draw))
        ordered = ordered.sort(time_column, "_draw")
        n_train = inside.height - _n_valid(inside.height, cfg)
        parts[name] = ordered.head(n_train).sort("_row").drop("_row", "_draw")
        parts[f"{name}_valid"] = ordered.slice(n_train).sort("_row").drop("_row", "_draw")
    return parts


def coarse_time(values: pl.Series) -> str | None:
    """``yearly`` when every value is Jan 1 at midnight, ``monthly`` when every one is a 1st at
    midnight (a year or a month read as a time), else None."""
    present = values.drop_nulls()
    if present.len() == 0:
        return None
    midnight = (
        (present.dt.hour() == 0) & (present.dt.minute() == 0) & (present.dt.second() == 0)
        if isinstance(present.dtype, pl.Datetime)
        else pl.Series([True] * present.len())
    )
    first = midnight & (present.dt.day() == 1)
    if (first & (present.dt.month() == 1)).all():
        return "yearly"
    return "monthly" if first.all() else None


def _time_hint(name: str, parts: dict[str, pl.DataFrame], values: pl.Series, cfg: SplitConfig) -> str:
    """Why part ``name`` of a time split is empty, and the setting that fixes it."""
    window = name.removesuffix("_valid")
    w = cfg.windows[window]  # type: ignore[index]
    rows = parts[window].height + (parts[f"{window}_valid"].height if window != "test" else 0)
    span = f"the data spans {values.min()!s} to {values.max()!s}"
    if rows == 0:
        where = f"split.windows.{window} [{w.start}, {w.end})"
        return f" ({where} holds no rows; {span}); fix split.windows.{window}"
    if cfg.valid_days is not None:
        coarse = coarse_time(values)
        if coarse:
            return (
                f" ({span}); the time column is coarse ({coarse}): set split.valid_days=null and "
                "split.valid_share=0.2 (or valid_rows)"
            )
        if name.endswith("_valid"):
            return (
                f" (the last split.valid_days={cfg.valid_days} days of split.windows.{window} "
                f"[{w.start}, {w.end}) hold no rows; {span}); raise split.valid_days, or set it null "
                "and split.valid_share=0.2"
            )
        return (
            f" (split.valid_days={cfg.valid_days} covers all {rows} rows of split.windows.{window} "
            f"[{w.start}, {w.end})); lower split.valid_days or widen the window"
        )
    if cfg.valid_rows is not None and cfg.valid_rows >= rows:
        return (
            f" (split.windows.{window} holds {rows} rows and split.valid_rows={cfg.valid_rows} takes "
            f"them all); lower split.valid_rows below {rows} or widen split.windows.{window}"
        )
    return (
        f" (split.windows.{window} holds {rows} row(s): too few for a validation part and a part to "
        f"train on); widen split.windows.{window}"
    )


def random_split(df: pl.DataFrame, cfg: SplitConfig, seed: int, *, stratify: bool) -> dict[str, pl.DataFrame]:
    """Seeded random parts by ``fractions``; ``stratify`` keeps each part's label rate."""
    rng = np.random.default_rng(seed)
    codes = np.empty(df.height, dtype=np.int8)
    labels = df.get_column("label").to_numpy()
    groups = [np.flatnonzero(labels == v) for v in np.unique(labels)] if stratify else [np.arange(df.height)]
    fractions = np.array([cfg.fractions["train"], cfg.fractions["finetune"], cfg.fractions["test"]])
    for rows in groups:
        rows = rng.permutation(rows)
        bounds = np.round(np.cumsum(fractions) * len(rows)).astype(int)
        for code, part in enumerate(np.split(rows, bounds[:-1])):
            # Validation: a seeded slice of each of train (code 0) and fine-tune (code 2).
            n_valid = round(cfg.valid_fraction * len(part)) if code < 2 else 0
            codes[part] = 2 * code
            codes[part[:n_valid]] = 2 * code + 1
    mapping = {0: "train", 1: "train_valid", 2: "finetune", 3: "finetune_valid", 4: "test"}
    coded = df.with_columns(pl.Series("_part", codes))
    return {name: coded.filter(pl.col("_part") == c).drop("_part") for c, name in mapping.items()}


def split(df: pl.DataFrame, spec: dict[str, Any], cfg: SplitConfig, seed: int) -> dict[str, pl.DataFrame]:
    if cfg.method == "time":
        time_column = spec.get("time_column")
        if not time_column:
            raise DataError(
                "split.method is time, but the data has no time column (featurize.time_column "
                "is null); set split.method to random or stratified"
            )
        parts = time_split(df, cfg, time_column, seed)
    else:
        parts = random_split(df, cfg, seed, stratify=cfg.method == "stratified")
    for name in PARTS:
        if parts[name].height == 0:
            if cfg.method == "time":
                hint = _time_hint(name, parts, df.get_column(spec["time_column"]), cfg)
            else:
                hint = (
                    f" (the data has {df.height} rows); use more rows, or raise split.fractions or "
                    "split.valid_fraction"
                )
            raise DataError(f"split part {name!r} has no rows{hint}")
    return parts


def summary(parts: dict[str, pl.DataFrame], time_column: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, part in parts.items():
        entry: dict[str, Any] = {
            "rows": part.height,
            "positive_rate": round(int(part.get_column("label").sum()) / max(part.height, 1), 6),
        }
        if time_column:
            entry["first"] = str(part.get_column(time_column).min())
            entry["last"] = str(part.get_column(time_column).max())
        out[name] = entry
    return out


def main(params_path: str, features_dir: str, out_dir: str, metrics_path: str) -> None:
    params = load_params(params_path)
    cfg = section(params, "split", SplitConfig, source=params_path)
    features = Path(features_dir)
    spec = read_json(features / "spec.json")
    df = pl.read_parquet(features / "features.parquet")
    parts = split(df, spec, cfg, read_seed(params))
    with atomic_outputs(out_dir, metrics_path) as (tmp_dir, tmp_metrics):
        tmp_dir.mkdir()
        for name, part in parts.items():
            write_parquet(part, tmp_dir / f"{name}.parquet")
        write_json(tmp_metrics, summary(parts, spec.get("time_column")))
    log.info("split: %s", {k: v.height for k, v in parts.items()})


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Cut the features into train, fine-tune and test parts."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime split``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "Cut the features into train, train_valid, finetune, finetune_valid and test parts by time windows "
        "(or randomly, params `split`) and summarise rows and label rate per part."
    )
    command.add_params(parser)
    parser.add_argument("--features", required=True, help=command.FEATURES)
    parser.add_argument("--out", required=True, help="output folder for the parts")
    parser.add_argument("--metrics", required=True, help="JSON summary of the parts")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(params_path=args.params, features_dir=args.features, out_dir=args.out, metrics_path=args.metrics)
