"""The feature spec written by featurize: the only thing later stages know about the data."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ontime.errors import DataError
from ontime.io import read_json

SPLIT_PARTS = ("train", "train_valid", "finetune", "finetune_valid", "test")
# The label's source values (e.g. the arrival delay or the rating a threshold turns into the label),
# carried beside the features when the label is derived from a numeric column, for the leakage
# audit only: never a feature (it is not in the spec's features), never read by a model.
LABEL_SOURCE = "_label_source"


@dataclass(frozen=True)
class FeatureSpec:
    target: str
    time_column: str | None
    numeric: list[str]
    categorical: list[str]
    features: list[dict[str, Any]]
    optional: dict[str, list[str]] = field(default_factory=dict)
    mask_rate: float = 0.0
    label_source: str | None = None  # the column LABEL_SOURCE holds (clean.label.column), if any

    @property
    def columns(self) -> list[str]:
        return [f["name"] for f in self.features]

    @classmethod
    def load(cls, path: str | Path) -> FeatureSpec:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: feature spec not found; run the featurize stage (dvc repro featurize)")
        raw = read_json(path)
        try:
            features = raw["features"]
            return cls(
                target=raw["target"],
                time_column=raw.get("time_column"),
                numeric=[f["name"] for f in features if f["kind"] == "numeric"],
                categorical=[f["name"] for f in features if f["kind"] == "categorical"],
                features=features,
                optional={str(g): list(cols) for g, cols in raw.get("optional", {}).items()},
                mask_rate=float(raw.get("mask_rate", 0.0)),
                label_source=raw.get("label_source"),
            )
        except (KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a feature spec (missing {exc}); re-run featurize") from exc

    def check(self, df: pl.DataFrame, *, where: str, target: bool = True) -> None:
        """Fail clearly when ``df`` does not carry the spec's columns with the right kinds."""
        needed = self.columns + ([self.target] if target else [])
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise DataError(
                f"{where}: column(s) {missing} of the feature spec are missing; the data and the spec "
                "come from different featurize runs: re-run `dvc repro`"
            )
        wrong = [c for c in self.numeric if not (df.schema[c].is_numeric() or df.schema[c] == pl.Null)]
        if wrong:
            raise DataError(
                f"{where}: numeric feature(s) {wrong} are not numeric in the data; re-run featurize"
            )


def read_part(split_dir: str | Path, part: str, spec: FeatureSpec) -> pl.DataFrame:
    """One split part (train, train_valid, finetune, finetune_valid, test), checked against the spec."""
    path = Path(split_dir) / f"{part}.parquet"
    if not path.is_file():
        raise DataError(f"{path}: split part not found; run the split stage (dvc repro split)")
    df = pl.read_parquet(path)
    if df.height == 0:
        raise DataError(f"{path}: the {part} part is empty; widen split.windows")
    spec.check(df, where=str(path))
    return df


def mask_optional(df: pl.DataFrame, spec: FeatureSpec, *, seed: int, part: str) -> pl.DataFrame:
    """Rows a model fits on, with each optional feature group blanked on ``spec.mask_rate`` of them.

    A client may leave an optional group out of a request (``featurize.optional``, e.g. the weather
    forecast); a model that never saw the group missing would score such a request as nothing it
    was trained on. Each group gets its own seeded draw (the same rows for the same ``seed``, part
    and data), so a row may lose several groups. Only fitting rows are masked: validation and test
    rows stay as they are, so early stopping, thresholds and test figures use the full input.
    """
    if spec.mask_rate <= 0 or not spec.optional or df.height == 0:
        return df
    rng = np.random.default_rng([seed, zlib.crc32(part.encode())])
    hit: dict[str, np.ndarray] = {}
    for group in sorted(spec.optional):
        drawn = rng.random(df.height) < spec.mask_rate
        for column in spec.optional[group]:
            hit[column] = hit.get(column, np.zeros(df.height, dtype=bool)) | drawn
    return df.with_columns(
        pl.when(pl.Series(hit[c])).then(None).otherwise(pl.col(c)).alias(c) for c in sorted(hit)
    )


def binary_labels(
    df: pl.DataFrame,
    target: str,
    where: str,
    *,
    needs: str = "a classifier",
    fix: str = "widen split.windows",
) -> np.ndarray:
    """The 0/1 label of ``df`` as float64; a DataError naming ``where`` (and ``fix``) when there are no
    rows, nulls or other values, or one class only (``needs`` says what needs both)."""
    if df.height == 0:
        raise DataError(f"{where}: no rows to train or validate on; widen split.windows")
    y = df.get_column(target)
    classes = y.drop_nulls().unique().sort().to_list()
    if y.null_count() or not set(classes) <= {0, 1}:
        raise DataError(f"{where}: label {target!r} must be 0/1 without nulls, got {classes}; re-run clean")
    if len(classes) < 2:
        raise DataError(f"{where}: every row has label {classes[0]}; {needs} needs both classes: {fix}")
    return y.cast(pl.Float64).to_numpy()
