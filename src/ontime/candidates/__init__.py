"""Candidate models, the inference side: a folder with ``candidate.json`` that can score a feature frame.

Every stage that produces a model (train, baseline, finetune, ...) writes one candidate folder;
evaluate, select and serving load them through :func:`load_candidate` without knowing their kind.
This package holds everything needed to load and score a candidate (``torch_model``,
``lightgbm_model``, ``ensemble_model``) and never imports training code, so evaluate and package
depend on it (``dvc.yaml``) and not on ``ontime.training``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import polars as pl

from ontime.errors import DataError
from ontime.io import read_json, write_json

Kind = Literal["torch", "lightgbm", "ensemble"]
CANDIDATE_FILE = "candidate.json"


class Candidate(Protocol):
    name: str

    def predict_proba(self, df: pl.DataFrame) -> np.ndarray:
        """Probability of label 1 for each row of ``df`` (feature columns from the spec).

        Shape: (n,), float64.
        """
        ...


def write_candidate_info(folder: Path, *, kind: Kind, name: str, **extra: Any) -> None:
    write_json(folder / CANDIDATE_FILE, {"kind": kind, "name": name, **extra})


def load_candidate(folder: str | Path) -> Candidate:
    """Load the candidate in ``folder`` (written by train, baseline, finetune, ...)."""
    folder = Path(folder)
    info_path = folder / CANDIDATE_FILE
    if not info_path.is_file():
        raise DataError(f"{folder}: no {CANDIDATE_FILE}; is this a model folder from the pipeline?")
    info = read_json(info_path)
    if info.get("kind") == "torch":
        from ontime.candidates.torch_model import TorchCandidate

        return TorchCandidate.load(folder)
    if info.get("kind") == "lightgbm":
        from ontime.candidates.lightgbm_model import LightGBMCandidate

        return LightGBMCandidate.load(folder)
    if info.get("kind") == "ensemble":
        from ontime.candidates.ensemble_model import EnsembleCandidate

        return EnsembleCandidate.load(folder)
    raise DataError(f"{info_path}: unknown candidate kind {info.get('kind')!r}")
