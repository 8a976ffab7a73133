"""split: cut the feature table into train / fine-tune / test parts, each window with a validation part.

``time`` (default): half-open date windows in the time column's own time zone; the last
``valid_days`` days of the train and fine-tune windows are their validation parts, so validation is
always later than what the model trains on. ``random`` / ``stratified``: seeded shuffles for data
without time (stratified keeps the label rate equal across parts).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ontime.config import SplitConfig, load_params, section
from ontime.config import seed as read_seed
from ontime.errors import DataError
from ontime.io import atomic_outputs, read_json, write_json, write_parquet

log = logging.getLogger(__name__)

PARTS = ("train", "train_valid", "finetune", "finetune_valid", "test")


def _at(day: dt.date, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.Datetime):
        moment = pl.lit(dt.datetime(day.year, day.month, day.day)).dt.cast_time_unit(dtype.time_unit)
        return moment.dt.replace_time_zone(dtype.time_zone) if dtype.time_zone else moment
    return pl.lit(day)


def time_split(df: pl.DataFrame, cfg: SplitConfig, time_column: str) -> dict[str, pl.DataFrame]:
    """Date windows; the last ``valid_days`` of train and fine-tune windows are validation."""
    dtype = df.schema[time_column]
    t = pl.col(time_column)
    parts: dict[str, pl.DataFrame] = {}
    for name in ("train", "finetune", "test"):
        window = cfg.windows[name]
        inside = df.filter((t >= _at(window.start, dtype)) & (t < _at(window.end, dtype)))
        if name == "test":
            parts["test"] = inside
            continue
        cut = _at(window.end - dt.timedelta(days=cfg.valid_days), dtype)
        parts[name] = inside.filter(t < cut)
        parts[f"{name}_valid"] = inside.filter(t >= cut)
    return parts


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
        parts = time_split(df, cfg, time_column)
    else:
        parts = random_split(df, cfg, seed, stratify=cfg.method == "stratified")
    for name in PARTS:
        if parts[name].height == 0:
            where = ""
            if cfg.method == "time":
                t = df.get_column(spec["time_column"])
                span = f"{t.min()!s} to {t.max()!s}"
                where = f" (the data spans {span}); fix split.windows or split.valid_days"
            raise DataError(f"split part {name!r} has no rows{where}")
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
