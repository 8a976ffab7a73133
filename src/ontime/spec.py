"""The feature spec written by featurize: the only thing later stages know about the data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from ontime.errors import DataError
from ontime.io import read_json

SPLIT_PARTS = ("train", "train_valid", "finetune", "finetune_valid", "test")


@dataclass(frozen=True)
class FeatureSpec:
    target: str
    time_column: str | None
    numeric: list[str]
    categorical: list[str]
    features: list[dict[str, Any]]

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
