"""Tabular preprocessing: a polars frame in, the model's numeric and categorical arrays out.

`Preprocessor` follows scikit-learn's contract: `__init__` only stores (and checks) its parameters,
`fit` learns from the frame it is given and returns `self`, learned state ends in `_`, and
`transform` refuses to run before `fit`. Fit it on the training split only.

Numeric columns are imputed with the training median, scaled (z-score, min-max or an empirical
quantile map to a standard normal), and followed by one missing-indicator column per numeric column
that had missing values in the fitted frame. Categorical columns are compared as strings and encoded
as integer indices, with index 0 reserved for unknown values and nulls.

The fitted state saves as JSON (no pickle); Python floats round-trip through JSON exactly, so a
loaded preprocessor transforms bit-for-bit like the one that was saved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Self, get_args

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.special import ndtri

Scaling = Literal["zscore", "minmax", "quantile"]
SCALINGS: tuple[str, ...] = get_args(Scaling)

_FORMAT = "ontime.Preprocessor"
_FORMAT_VERSION = 1
# Like sklearn's QuantileTransformer: probabilities are clipped this far from 0 and 1 so that the
# normal quantile function stays finite (about ±5.2 standard deviations).
_QUANTILE_EPS = 1e-7


class NotFittedError(RuntimeError):
    """Raised when a fitted-only method is used before `fit`."""


class Preprocessor:
    """Imputes, scales and encodes the feature columns of a polars frame.

    Args:
        numeric: Names of the numeric (or boolean) columns, in output order.
        categorical: Names of the categorical columns, in output order. Values are cast to
            `pl.String` before they are compared, so `1` and `"1"` are the same category.
        scaling: How numeric columns are scaled after imputation:
            `"zscore"` subtracts the training mean and divides by the training standard
            deviation (population, ddof=0; a constant column gets std 1);
            `"minmax"` maps the training range to [0, 1] (not clipped: unseen larger values
            map above 1; a constant column gets range 1);
            `"quantile"` maps values through the empirical training quantiles to a standard
            normal, like `sklearn.preprocessing.QuantileTransformer(output_distribution="normal")`
            without its subsampling.
        min_frequency: A category enters the vocabulary only if it occurs at least this many
            times in the fitted frame; rarer ones are encoded as unknown (0).
        n_quantiles: Size of the quantile grid for `scaling="quantile"` (capped by the number of
            non-missing training values of each column).

    Attributes:
        numeric_stats_: Per numeric column: `"fill"` (the imputation value: the median of the
            non-missing training values, 0.0 if there were none) and, for `"zscore"`, `"mean"`
            and `"std"`; for `"minmax"`, `"min"` and `"max"`. Statistics are computed on the
            non-missing values.
        quantiles_: Per numeric column, the quantile grid at evenly spaced probabilities from 0
            to 1 (only for `scaling="quantile"`, empty otherwise).
        indicator_columns_: The numeric columns that had any missing value (null or NaN) in the
            fitted frame; each gets a 0/1 indicator column after the scaled numeric columns.
        vocabularies_: Per categorical column, the sorted kept values; value `vocab[i]` is
            encoded as `i + 1`.
        n_rows_fitted_: Number of rows of the fitted frame.
    """

    numeric_stats_: dict[str, dict[str, float]]
    quantiles_: dict[str, list[float]]
    indicator_columns_: list[str]
    vocabularies_: dict[str, list[str]]
    n_rows_fitted_: int

    def __init__(
        self,
        *,
        numeric: list[str],
        categorical: list[str],
        scaling: Scaling = "zscore",
        min_frequency: int = 1,
        n_quantiles: int = 1000,
    ) -> None:
        for arg_name, names in (("numeric", numeric), ("categorical", categorical)):
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{arg_name} must be a list of column names, however: {arg_name}={names!r}")
            duplicates = sorted({n for n in names if list(names).count(n) > 1})
            if duplicates:
                raise ValueError(f"{arg_name} lists columns more than once: {duplicates}")
        overlap = sorted(set(numeric) & set(categorical))
        if overlap:
            raise ValueError(
                f"columns cannot be both numeric and categorical, however: {overlap}; "
                "list each column under one of them"
            )
        if not numeric and not categorical:
            raise ValueError("numeric and categorical are both empty; list at least one column")
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {list(SCALINGS)}, however: {scaling=}")
        if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
            raise ValueError(
                f"min_frequency must be an integer >= 1 (1 keeps every category seen), "
                f"however: {min_frequency=}"
            )
        if isinstance(n_quantiles, bool) or not isinstance(n_quantiles, int) or n_quantiles < 2:
            raise ValueError(f"n_quantiles must be an integer >= 2, however: {n_quantiles=}")

        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.scaling: Scaling = scaling
        self.min_frequency = min_frequency
        self.n_quantiles = n_quantiles

    def __repr__(self) -> str:
        return (
            f"Preprocessor(numeric={self.numeric!r}, categorical={self.categorical!r}, "
            f"scaling={self.scaling!r}, min_frequency={self.min_frequency}, "
            f"n_quantiles={self.n_quantiles})"
        )

    # ---------------------------------------------------------------------------------------------
    # fit / transform

    def fit(self, df: pl.DataFrame) -> Self:
        """Learns imputation values, scaling statistics and vocabularies from `df`.

        Only the rows of `df` are seen: pass the training split, never the full data.

        Args:
            df: A frame holding at least the `numeric` and `categorical` columns.

        Returns:
            `self`, fitted.

        Raises:
            ValueError: If columns are missing, a numeric column is not numeric or holds an
                infinity, or `df` has no rows.
        """
        self._check_frame(df)
        if df.height == 0:
            raise ValueError("cannot fit on a frame with no rows")
        x = self._numeric_matrix(df)  # (n, n_numeric), NaN where missing

        numeric_stats: dict[str, dict[str, float]] = {}
        quantiles: dict[str, list[float]] = {}
        indicator_columns: list[str] = []
        for j, name in enumerate(self.numeric):
            column = x[:, j]
            missing = np.isnan(column)
            observed = column[~missing]
            if missing.any():
                indicator_columns.append(name)
            has_values = observed.size > 0
            stats = {"fill": float(np.median(observed)) if has_values else 0.0}
            # A constant column is detected exactly (max == min) and gets mean = its value and
            # std = 1: in floating point its mean can miss the value and its std come out as a
            # tiny nonzero number, which would blow the column up.
            is_constant = not has_values or observed.max() == observed.min()
            if self.scaling == "zscore":
                if is_constant:
                    stats["mean"] = float(observed[0]) if has_values else 0.0
                    stats["std"] = 1.0
                else:
                    stats["mean"] = float(np.mean(observed))
                    stats["std"] = float(np.std(observed))
            elif self.scaling == "minmax":
                stats["min"] = float(observed.min()) if has_values else 0.0
                stats["max"] = float(observed.max()) if has_values else 1.0
            else:
                n_grid = min(self.n_quantiles, observed.size)
                grid = np.quantile(observed, np.linspace(0.0, 1.0, n_grid)) if has_values else []
                quantiles[name] = [float(v) for v in grid]
            numeric_stats[name] = stats

        vocabularies: dict[str, list[str]] = {}
        for name in self.categorical:
            counts = (
                df.get_column(name).cast(pl.String).drop_nulls().rename("value").value_counts(name="count")
            )
            kept = counts.filter(pl.col("count") >= self.min_frequency).get_column("value")
            vocabularies[name] = sorted(kept.to_list())

        self.numeric_stats_ = numeric_stats
        self.quantiles_ = quantiles
        self.indicator_columns_ = indicator_columns
        self.vocabularies_ = vocabularies
        self.n_rows_fitted_ = df.height
        return self

    def transform(self, df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Encodes `df` with the fitted state.

        Args:
            df: A frame holding at least the `numeric` and `categorical` columns.

        Returns:
            `(x_num, x_cat)`: `x_num` is float32 of shape `(n, n_num_features)`, the scaled
            numeric columns in `numeric` order followed by the missing indicators in
            `indicator_columns_` order (1.0 where the raw value was null or NaN); `x_cat` is
            int64 of shape `(n, len(categorical))`, 0 for nulls and values outside the
            vocabulary.

        Raises:
            NotFittedError: If `fit` has not been called.
            ValueError: If columns are missing, a numeric column is not numeric or holds an
                infinity.
        """
        self._check_fitted()
        self._check_frame(df)
        n = df.height

        x = self._numeric_matrix(df)  # (n, n_numeric), NaN where missing
        missing = np.isnan(x)
        scaled = [
            self._scale(name, np.where(missing[:, j], self.numeric_stats_[name]["fill"], x[:, j]))
            for j, name in enumerate(self.numeric)
        ]
        indicators = [
            missing[:, self.numeric.index(name)].astype(np.float64) for name in self.indicator_columns_
        ]
        columns = scaled + indicators
        x_num = np.stack(columns, axis=1) if columns else np.empty((n, 0))  # (n, n_num_features)

        if self.categorical:
            codes = df.select(
                pl.col(name)
                .cast(pl.String)
                .replace_strict(
                    self.vocabularies_[name],
                    list(range(1, len(self.vocabularies_[name]) + 1)),
                    default=0,
                    return_dtype=pl.Int64,
                )
                .fill_null(0)
                for name in self.categorical
            )
            x_cat = codes.to_numpy()  # (n, n_categorical)
        else:
            x_cat = np.empty((n, 0))
        return x_num.astype(np.float32), x_cat.astype(np.int64)

    def fit_transform(self, df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Same as `fit(df).transform(df)`."""
        return self.fit(df).transform(df)

    # ---------------------------------------------------------------------------------------------
    # what the model needs to know

    @property
    def n_num_features(self) -> int:
        """Width of `x_num`: the numeric columns plus the missing indicators."""
        self._check_fitted()
        return len(self.numeric) + len(self.indicator_columns_)

    @property
    def num_feature_names(self) -> list[str]:
        """Names of the `x_num` columns; an indicator for column `c` is named `c__missing`."""
        self._check_fitted()
        return self.numeric + [f"{name}__missing" for name in self.indicator_columns_]

    @property
    def cardinalities(self) -> list[int]:
        """Per categorical column, the number of codes: vocabulary size + 1 for unknown (0)."""
        self._check_fitted()
        return [len(self.vocabularies_[name]) + 1 for name in self.categorical]

    @property
    def is_fitted(self) -> bool:
        """Whether `fit` (or `load`/`from_dict` of a fitted state) has run."""
        return hasattr(self, "vocabularies_")

    # ---------------------------------------------------------------------------------------------
    # persistence: JSON only

    def to_dict(self) -> dict[str, Any]:
        """Returns the parameters and the fitted state (or None) as JSON-ready data."""
        fitted = None
        if self.is_fitted:
            fitted = {
                "numeric_stats": self.numeric_stats_,
                "quantiles": self.quantiles_,
                "indicator_columns": self.indicator_columns_,
                "vocabularies": self.vocabularies_,
                "n_rows_fitted": self.n_rows_fitted_,
            }
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "params": {
                "numeric": self.numeric,
                "categorical": self.categorical,
                "scaling": self.scaling,
                "min_frequency": self.min_frequency,
                "n_quantiles": self.n_quantiles,
            },
            "fitted": fitted,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        """Rebuilds a preprocessor from `to_dict()` output.

        Raises:
            ValueError: If `data` is not a preprocessor of this format version, or its keys do
                not match.
        """
        if data.get("format") != _FORMAT or data.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"expected format={_FORMAT!r} version={_FORMAT_VERSION}, however: "
                f"format={data.get('format')!r} version={data.get('version')!r}; "
                "refit the preprocessor with this version of ontime"
            )
        _check_keys("data", data, {"format", "version", "params", "fitted"})
        params = data["params"]
        _check_keys("params", params, {"numeric", "categorical", "scaling", "min_frequency", "n_quantiles"})
        self = cls(**params)
        fitted = data["fitted"]
        if fitted is None:
            return self
        _check_keys(
            "fitted",
            fitted,
            {"numeric_stats", "quantiles", "indicator_columns", "vocabularies", "n_rows_fitted"},
        )
        if set(fitted["numeric_stats"]) != set(self.numeric) or set(fitted["vocabularies"]) != set(
            self.categorical
        ):
            raise ValueError("fitted state does not match the numeric/categorical columns")
        self.numeric_stats_ = {
            name: {k: float(v) for k, v in fitted["numeric_stats"][name].items()} for name in self.numeric
        }
        self.quantiles_ = {name: [float(v) for v in grid] for name, grid in fitted["quantiles"].items()}
        self.indicator_columns_ = list(fitted["indicator_columns"])
        self.vocabularies_ = {name: list(fitted["vocabularies"][name]) for name in self.categorical}
        self.n_rows_fitted_ = int(fitted["n_rows_fitted"])
        return self

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes `to_dict()` as JSON to `path`."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        Path(path).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Preprocessor:
        """Reads a preprocessor written by `save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    # ---------------------------------------------------------------------------------------------
    # helpers

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                "this Preprocessor is not fitted yet; call fit(train_df) first (or load a saved one)"
            )

    def _check_frame(self, df: pl.DataFrame) -> None:
        if not isinstance(df, pl.DataFrame):
            raise TypeError(
                f"expected a polars DataFrame, however: {type(df).__name__}; collect a LazyFrame first"
            )
        absent = [name for name in self.numeric + self.categorical if name not in df.columns]
        if absent:
            raise ValueError(f"the frame lacks required columns: {absent}")
        for name in self.numeric:
            dtype = df.schema[name]
            if not (dtype.is_numeric() or dtype in (pl.Boolean, pl.Null)):
                raise ValueError(
                    f"numeric column {name!r} has dtype {dtype}; cast it to a number or list it "
                    "under categorical"
                )

    def _numeric_matrix(self, df: pl.DataFrame) -> np.ndarray:
        """Numeric columns as float64 `(n, n_numeric)`, with NaN for null and NaN."""
        if not self.numeric:
            return np.empty((df.height, 0))
        x = df.select(pl.col(name).cast(pl.Float64) for name in self.numeric).to_numpy()
        infinite = [name for name, bad in zip(self.numeric, np.isinf(x).any(axis=0), strict=True) if bad]
        if infinite:
            raise ValueError(
                f"numeric columns hold infinite values: {infinite}; replace them with null "
                "(treated as missing) or a finite value"
            )
        return np.asarray(x, dtype=np.float64)

    def _scale(self, name: str, values: np.ndarray) -> np.ndarray:
        """Scales one imputed numeric column, `(n,) -> (n,)`."""
        stats = self.numeric_stats_[name]
        if self.scaling == "zscore":
            return (values - stats["mean"]) / stats["std"]
        if self.scaling == "minmax":
            value_range = stats["max"] - stats["min"]
            return (values - stats["min"]) / (value_range if value_range > 0 else 1.0)
        return _quantile_to_normal(values, np.asarray(self.quantiles_[name]))


def _quantile_to_normal(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Maps values through the empirical CDF given by `grid` to a standard normal.

    Shape:
        values: (n,); grid: (n_grid,) quantiles at `linspace(0, 1, n_grid)`; output: (n,).
    """
    if grid.size < 2 or grid[0] == grid[-1]:
        # No spread to learn from: every value sits at the centre.
        return np.zeros_like(values)
    probabilities = np.linspace(0.0, 1.0, grid.size)
    # Interpolating from both ends and averaging sends a value repeated over several grid points to
    # the middle of its probability range rather than the first one (as sklearn does).
    cdf = 0.5 * (
        np.interp(values, grid, probabilities) - np.interp(-values, -grid[::-1], -probabilities[::-1])
    )
    return np.asarray(ndtri(np.clip(cdf, _QUANTILE_EPS, 1.0 - _QUANTILE_EPS)))


def _check_keys(what: str, data: dict[str, Any], expected: set[str]) -> None:
    missing, unknown = sorted(expected - set(data)), sorted(set(data) - expected)
    if missing or unknown:
        raise ValueError(f"{what} has missing keys {missing} and unknown keys {unknown}")


def design_matrix(pre: Preprocessor, df: pl.DataFrame) -> sp.csr_matrix:
    """The linear and SVM candidates' input: ``x_num`` as ``pre.transform`` gives it, then each
    categorical column's codes one-hot (column ``offset_j + code``). Shape: (n, n_num_features +
    sum(cardinalities)), float64, CSR."""
    x_num, x_cat = pre.transform(df)  # (n, n_num_features) float32, (n, n_categorical) int64
    n = df.height
    offsets = np.cumsum([pre.n_num_features, *pre.cardinalities])  # (n_categorical + 1,)
    n_cols = int(offsets[-1])
    numeric = sp.csr_matrix(x_num.astype(np.float64))
    if not pre.categorical:
        return sp.csr_matrix(numeric, shape=(n, n_cols))
    cols = (x_cat + offsets[:-1]).ravel()  # row-major: row i's columns together
    rows = np.repeat(np.arange(n), x_cat.shape[1])
    one_hot = sp.csr_matrix(
        (np.ones(cols.size), (rows, cols - pre.n_num_features)), shape=(n, n_cols - offsets[0])
    )
    return sp.csr_matrix(sp.hstack([numeric, one_hot], format="csr"))
