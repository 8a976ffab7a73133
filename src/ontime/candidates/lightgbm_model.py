"""LightGBM candidates on disk: the booster in LightGBM's text format, the encoding as JSON.

Categoricals are encoded with the vocabularies fitted by the baseline stage (code 0: unknown or
null, ``i + 1``: ``vocab[i]``); numeric features go in as float64 with NaN for missing values.
Nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl

from ontime.candidates import load_held_out, save_held_out, write_candidate_info
from ontime.errors import DataError
from ontime.io import read_json, write_json

MODEL_FILE, ENCODING_FILE = "model.txt", "encoding.json"


def encode(
    df: pl.DataFrame, numeric: Sequence[str], categorical: Sequence[str], vocabularies: dict[str, list[str]]
) -> np.ndarray:
    """The model's input matrix: numeric columns, then categorical codes (0: unknown or null).

    Shape: (n, len(numeric) + len(categorical)), float64, NaN where a numeric value is missing.
    """
    missing = [c for c in (*numeric, *categorical) if c not in df.columns]
    if missing:
        raise DataError(f"column(s) {missing} the model needs are missing; score features from featurize")
    codes = [
        pl.col(c)
        .cast(pl.String)
        .replace_strict(vocabularies[c], range(1, len(vocabularies[c]) + 1), default=0, return_dtype=pl.Int32)
        .fill_null(0)
        .cast(pl.Float64)
        for c in categorical
    ]
    numbers = [pl.col(c).cast(pl.Float64).fill_null(float("nan")) for c in numeric]
    return df.select(*numbers, *codes).to_numpy().astype(np.float64, copy=False)


class LightGBMCandidate:
    """A fitted LightGBM booster with its categorical encoding; scores feature frames."""

    def __init__(
        self,
        *,
        name: str,
        booster: lgb.Booster,
        vocabularies: dict[str, list[str]],
        numeric: list[str],
        categorical: list[str],
        best_iteration: int,
        trained_on: list[str],
        held_out: dict[str, np.ndarray] | None = None,
        refit: bool = False,
    ) -> None:
        """``trained_on``: the parts of the final fit; ``refit``: that fit reused the number of trees
        an earlier fit chose by early stopping, whose predictions on the parts it never saw are
        ``held_out`` (see ``ontime.candidates.validation_predictions``)."""
        self.name = name
        self.booster = booster
        self.vocabularies = vocabularies
        self.numeric = numeric
        self.categorical = categorical
        self.best_iteration = best_iteration
        self.trained_on = trained_on
        self.held_out = held_out or {}
        self.refit = refit

    def encode(self, df: pl.DataFrame) -> np.ndarray:
        """Shape: (n, n_numeric + n_categorical), float64."""
        return encode(df, self.numeric, self.categorical, self.vocabularies)

    def predict_proba(self, df: pl.DataFrame) -> np.ndarray:
        """Probability of label 1 for each row of ``df``. Shape: (n,), float64."""
        return np.asarray(self.booster.predict(self.encode(df)), dtype=np.float64)

    def save(self, folder: str | Path) -> None:
        """Write ``model.txt`` (LightGBM text format), ``encoding.json`` and ``candidate.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(folder / MODEL_FILE, num_iteration=self.best_iteration)
        encoding = {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "vocabularies": self.vocabularies,
        }
        write_json(folder / ENCODING_FILE, encoding)
        write_candidate_info(
            folder,
            kind="lightgbm",
            name=self.name,
            trained_on=self.trained_on,
            best_iteration=self.best_iteration,
            refit=self.refit,
            held_out=sorted(self.held_out),
        )
        save_held_out(folder, self.held_out)

    @classmethod
    def load(cls, folder: str | Path) -> LightGBMCandidate:
        """Read a folder written by :meth:`save` (no pickle)."""
        folder = Path(folder)
        for file in ("candidate.json", MODEL_FILE, ENCODING_FILE):
            if not (folder / file).is_file():
                raise DataError(f"{folder / file}: not found; re-run the baseline stage (dvc repro baseline)")
        info, encoding = read_json(folder / "candidate.json"), read_json(folder / ENCODING_FILE)
        return cls(
            name=info["name"],
            booster=lgb.Booster(model_file=folder / MODEL_FILE),
            vocabularies=encoding["vocabularies"],
            numeric=encoding["numeric"],
            categorical=encoding["categorical"],
            best_iteration=info["best_iteration"],
            trained_on=info["trained_on"],
            held_out=load_held_out(folder),
            refit=bool(info.get("refit", False)),
        )
