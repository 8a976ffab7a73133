"""SVM candidates on disk: a linear SVM on the linear features plus an RBF kernel map, Platt-calibrated.

The input is the linear candidate's (:func:`ontime.models.preprocess.design_matrix`: the scaled
numeric columns with missing indicators, the categorical codes one-hot). The SVM's kernel is the
sum of a linear kernel and an RBF kernel ``exp(-gamma * ||x - x'||^2)``; the RBF part is
approximated by Nystroem's method over ``landmarks`` (training rows):

    z(x) = [x, exp(-gamma * ||x - landmark_i||^2)_i @ normalization.T]
    d(x) = z(x) @ coef + intercept                      (the SVM's decision value)
    p(x) = 1 / (1 + exp(a * d(x) + b))                  (Platt's sigmoid, as scikit-learn fits it)

Scoring needs numpy and scipy only. The landmarks are stored as float32 (the design matrix's values
are float32 numerics and 0/1 codes, so nothing is lost), the rest in float64, in
``svm.safetensors``; the preprocessor's state, gamma, intercept and the sigmoid in ``svm.json``.
Nothing is pickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from safetensors.numpy import load_file, save_file
from scipy.special import expit

from ontime.candidates import CANDIDATE_FILE, load_held_out, save_held_out, write_candidate_info
from ontime.errors import DataError
from ontime.io import read_json, write_json
from ontime.models.preprocess import Preprocessor, design_matrix

MODEL_FILE, WEIGHTS_FILE = "svm.json", "svm.safetensors"
_FORMAT, _FORMAT_VERSION = "ontime.SVMCandidate", 1
_CHUNK = 50_000  # rows per kernel block: (rows x landmarks) float64 at a time


class SVMCandidate:
    """A fitted, calibrated kernel SVM on a fitted :class:`Preprocessor`; scores feature frames."""

    def __init__(
        self,
        *,
        name: str,
        preprocessor: Preprocessor,
        landmarks: np.ndarray,
        normalization: np.ndarray,
        gamma: float,
        coef: np.ndarray,
        intercept: float,
        sigmoid: tuple[float, float],
        trained_on: list[str],
        held_out: dict[str, np.ndarray] | None = None,
        refit: bool = False,
    ) -> None:
        """``landmarks``: (m, d), d the design matrix's width; ``normalization``: (m, m); ``coef``:
        (d + m,), the linear inputs' weights then the kernel features'; ``sigmoid``: Platt's (a, b)."""
        if not preprocessor.is_fitted:
            raise ValueError("the preprocessor of an SVM candidate must be fitted")
        d = preprocessor.n_num_features + sum(preprocessor.cardinalities)
        m = landmarks.shape[0]
        if landmarks.shape != (m, d) or normalization.shape != (m, m) or coef.shape != (d + m,):
            raise ValueError(
                f"shapes do not fit: landmarks {landmarks.shape}, normalization {normalization.shape}, "
                f"coef {coef.shape} for {d} inputs"
            )
        self.name = name
        self.preprocessor = preprocessor
        self.landmarks = np.asarray(landmarks, dtype=np.float32)
        self.normalization = np.asarray(normalization, dtype=np.float64)
        self.gamma = float(gamma)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = float(intercept)
        self.sigmoid = (float(sigmoid[0]), float(sigmoid[1]))
        self.trained_on = trained_on
        self.held_out = held_out or {}
        self.refit = refit
        landmarks64 = self.landmarks.astype(np.float64)
        self._landmarks_t = landmarks64.T.copy()  # (d, m)
        self._landmark_norms = (landmarks64**2).sum(axis=1)  # (m,)

    @property
    def n_components(self) -> int:
        return int(self.landmarks.shape[0])

    def kernel_features(self, x: Any) -> np.ndarray:
        """The Nystroem features of design-matrix rows ``x`` (n, d). Shape: (n, m), float64."""
        out = np.empty((x.shape[0], self.n_components))
        for start in range(0, x.shape[0], _CHUNK):
            block = x[start : start + _CHUNK]
            sq = np.asarray(block.multiply(block).sum(axis=1)).ravel()
            dist = sq[:, None] + self._landmark_norms[None, :] - 2.0 * np.asarray(block @ self._landmarks_t)
            np.maximum(dist, 0.0, out=dist)
            out[start : start + _CHUNK] = np.exp(-self.gamma * dist) @ self.normalization.T
        return out

    def decision_function(self, df: pl.DataFrame) -> np.ndarray:
        """The SVM's decision value for each row of ``df``. Shape: (n,), float64."""
        try:
            x = design_matrix(self.preprocessor, df)
        except ValueError as exc:
            raise DataError(
                f"{self.name}: cannot score the frame: {exc}; score features from featurize"
            ) from exc
        d = x.shape[1]
        z = np.asarray(x @ self.coef[:d]).ravel() + self.kernel_features(x) @ self.coef[d:]
        return np.asarray(z + self.intercept, dtype=np.float64)

    def predict_proba(self, df: pl.DataFrame) -> np.ndarray:
        """Probability of label 1 for each row of ``df``. Shape: (n,), float64."""
        a, b = self.sigmoid
        return np.asarray(expit(-(a * self.decision_function(df) + b)), dtype=np.float64)

    # ------------------------------------------------------------------------------------ disk ---
    def save(self, folder: str | Path) -> None:
        """Write ``svm.safetensors`` (landmarks, normalization, weights), ``svm.json``,
        ``candidate.json`` and the held-out predictions."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(
            {"landmarks": self.landmarks, "normalization": self.normalization, "coef": self.coef},
            str(folder / WEIGHTS_FILE),
        )
        write_json(
            folder / MODEL_FILE,
            {
                "format": _FORMAT,
                "version": _FORMAT_VERSION,
                "preprocessor": self.preprocessor.to_dict(),
                "gamma": self.gamma,
                "intercept": self.intercept,
                "sigmoid": list(self.sigmoid),
            },
        )
        write_candidate_info(
            folder,
            kind="svm",
            name=self.name,
            trained_on=self.trained_on,
            refit=self.refit,
            held_out=sorted(self.held_out),
            n_components=self.n_components,
        )
        save_held_out(folder, self.held_out)

    @classmethod
    def load(cls, folder: str | Path) -> SVMCandidate:
        """Read a folder written by :meth:`save` (no pickle)."""
        folder = Path(folder)
        for file in (CANDIDATE_FILE, MODEL_FILE, WEIGHTS_FILE):
            if not (folder / file).is_file():
                raise DataError(f"{folder / file}: not found; re-run the svm stage (dvc repro svm)")
        info, model = read_json(folder / CANDIDATE_FILE), read_json(folder / MODEL_FILE)
        if model.get("format") != _FORMAT or model.get("version") != _FORMAT_VERSION:
            raise DataError(
                f"{folder / MODEL_FILE}: expected format {_FORMAT!r} version {_FORMAT_VERSION}, got "
                f"{model.get('format')!r} version {model.get('version')!r}; re-run the svm stage"
            )
        try:
            arrays = load_file(str(folder / WEIGHTS_FILE))
            a, b = model["sigmoid"]
            return cls(
                name=info["name"],
                preprocessor=Preprocessor.from_dict(model["preprocessor"]),
                landmarks=arrays["landmarks"],
                normalization=arrays["normalization"],
                gamma=float(model["gamma"]),
                coef=arrays["coef"],
                intercept=float(model["intercept"]),
                sigmoid=(float(a), float(b)),
                trained_on=list(info["trained_on"]),
                held_out=load_held_out(folder),
                refit=bool(info.get("refit", False)),
            )
        except (KeyError, ValueError) as exc:
            raise DataError(f"{folder}: not an SVM candidate ({exc}); re-run the svm stage") from exc
