"""Linear candidates on disk: a logistic regression over the neural models' preprocessing, as JSON.

The model's inputs are exactly what :class:`ontime.models.preprocess.Preprocessor` returns: the
scaled numeric columns (missing values imputed with the training median) followed by one 0/1
missing indicator per numeric column that had missing values in the fitted rows, and one code per
categorical column (0: null, unknown or rarer than ``preprocess.min_frequency``; ``i + 1``:
``vocab[i]``). The codes enter one-hot, so the model holds one weight per (categorical column,
code), the out-of-vocabulary slot included:

    p = sigmoid(x_num @ coef_numeric + sum_j coef_categorical[j][code_j] + intercept)

Scoring needs numpy and scipy only (no scikit-learn). The preprocessor's state and the weights are
written as JSON (Python floats round-trip exactly, so a loaded model scores bit-for-bit like the
saved one); nothing is pickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.special import expit

from ontime.candidates import CANDIDATE_FILE, load_held_out, save_held_out, write_candidate_info
from ontime.errors import DataError
from ontime.io import read_json, write_json
from ontime.models.preprocess import Preprocessor

MODEL_FILE = "linear.json"
_FORMAT, _FORMAT_VERSION = "ontime.LinearCandidate", 1


class LinearCandidate:
    """A fitted logistic regression on a fitted :class:`Preprocessor`; scores feature frames."""

    def __init__(
        self,
        *,
        name: str,
        preprocessor: Preprocessor,
        coef_numeric: np.ndarray,
        coef_categorical: dict[str, np.ndarray],
        intercept: float,
        trained_on: list[str],
        penalty: str,
        C: float,
        held_out: dict[str, np.ndarray] | None = None,
        refit: bool = False,
    ) -> None:
        """``coef_numeric``: shape (preprocessor.n_num_features,), in ``num_feature_names`` order;
        ``coef_categorical``: per categorical column, shape (its cardinality,), the weight of code
        ``k`` at index ``k``. ``trained_on``: the parts of the final fit; ``refit``: that fit came
        after a first one on fewer parts, whose predictions on the parts it never saw are
        ``held_out`` (see ``ontime.candidates.validation_predictions``)."""
        if not preprocessor.is_fitted:
            raise ValueError("the preprocessor of a linear candidate must be fitted")
        coef_numeric = np.asarray(coef_numeric, dtype=np.float64)
        if coef_numeric.shape != (preprocessor.n_num_features,):
            raise ValueError(
                f"coef_numeric has shape {coef_numeric.shape}, the preprocessor gives "
                f"{preprocessor.n_num_features} numeric inputs"
            )
        if set(coef_categorical) != set(preprocessor.categorical):
            raise ValueError(
                f"coef_categorical covers {sorted(coef_categorical)}, the preprocessor encodes "
                f"{sorted(preprocessor.categorical)}"
            )
        cat = {c: np.asarray(coef_categorical[c], dtype=np.float64) for c in preprocessor.categorical}
        for c, n in zip(preprocessor.categorical, preprocessor.cardinalities, strict=True):
            if cat[c].shape != (n,):
                raise ValueError(
                    f"coef_categorical[{c!r}] has shape {cat[c].shape}, the column has {n} codes"
                )
        self.name = name
        self.preprocessor = preprocessor
        self.coef_numeric = coef_numeric
        self.coef_categorical = cat
        self.intercept = float(intercept)
        self.trained_on = trained_on
        self.penalty = penalty
        self.C = float(C)
        self.held_out = held_out or {}
        self.refit = refit

    @property
    def n_coefficients(self) -> int:
        """Weights of the model (numeric inputs and one per categorical code; not the intercept)."""
        return self.coef_numeric.size + sum(w.size for w in self.coef_categorical.values())

    @property
    def nonzero_coefficients(self) -> int:
        """Weights that are not exactly zero (numeric and one-hot; not the intercept)."""
        return int(np.count_nonzero(self.coef_numeric)) + sum(
            int(np.count_nonzero(w)) for w in self.coef_categorical.values()
        )

    def decision_function(self, df: pl.DataFrame) -> np.ndarray:
        """The logit of each row of ``df``. Shape: (n,), float64."""
        try:
            x_num, x_cat = self.preprocessor.transform(df)  # (n, n_num_features), (n, n_categorical)
        except ValueError as exc:
            raise DataError(
                f"{self.name}: cannot score the frame: {exc}; score features from featurize"
            ) from exc
        z = x_num.astype(np.float64) @ self.coef_numeric + self.intercept
        for j, column in enumerate(self.preprocessor.categorical):
            z = z + self.coef_categorical[column][x_cat[:, j]]
        return np.asarray(z, dtype=np.float64)

    def predict_proba(self, df: pl.DataFrame) -> np.ndarray:
        """Probability of label 1 for each row of ``df``. Shape: (n,), float64."""
        return np.asarray(expit(self.decision_function(df)), dtype=np.float64)

    # ------------------------------------------------------------------------------------ disk ---
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "preprocessor": self.preprocessor.to_dict(),
            "numeric_inputs": self.preprocessor.num_feature_names,
            "coef_numeric": self.coef_numeric.tolist(),
            "coef_categorical": {c: w.tolist() for c, w in self.coef_categorical.items()},
            "intercept": self.intercept,
        }

    def save(self, folder: str | Path) -> None:
        """Write ``linear.json`` (preprocessing state and weights), ``candidate.json`` and the
        held-out predictions."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / MODEL_FILE, self.to_dict())
        write_candidate_info(
            folder,
            kind="linear",
            name=self.name,
            trained_on=self.trained_on,
            refit=self.refit,
            held_out=sorted(self.held_out),
            C=self.C,
            penalty=self.penalty,
            nonzero_coefficients=self.nonzero_coefficients,
        )
        save_held_out(folder, self.held_out)

    @classmethod
    def load(cls, folder: str | Path) -> LinearCandidate:
        """Read a folder written by :meth:`save` (no pickle)."""
        folder = Path(folder)
        for file in (CANDIDATE_FILE, MODEL_FILE):
            if not (folder / file).is_file():
                raise DataError(f"{folder / file}: not found; re-run the linear stage (dvc repro linear)")
        info, model = read_json(folder / CANDIDATE_FILE), read_json(folder / MODEL_FILE)
        if model.get("format") != _FORMAT or model.get("version") != _FORMAT_VERSION:
            raise DataError(
                f"{folder / MODEL_FILE}: expected format {_FORMAT!r} version {_FORMAT_VERSION}, got "
                f"{model.get('format')!r} version {model.get('version')!r}; re-run the linear stage"
            )
        try:
            pre = Preprocessor.from_dict(model["preprocessor"])
            return cls(
                name=info["name"],
                preprocessor=pre,
                coef_numeric=np.asarray(model["coef_numeric"], dtype=np.float64),
                coef_categorical={
                    c: np.asarray(w, dtype=np.float64) for c, w in model["coef_categorical"].items()
                },
                intercept=float(model["intercept"]),
                trained_on=list(info["trained_on"]),
                penalty=str(info["penalty"]),
                C=float(info["C"]),
                held_out=load_held_out(folder),
                refit=bool(info.get("refit", False)),
            )
        except (KeyError, ValueError) as exc:
            raise DataError(f"{folder}: not a linear candidate ({exc}); re-run the linear stage") from exc
