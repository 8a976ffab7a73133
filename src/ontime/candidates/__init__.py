"""Candidate models, the inference side: a folder with ``candidate.json`` that can score a feature frame.

Every stage that produces a model (train, baseline, finetune, ...) writes one candidate folder;
evaluate, select and serving load them through :func:`load_candidate` without knowing their kind.
This package holds everything needed to load and score a candidate (``torch_model``,
``lightgbm_model``, ``linear_model``, ``svm_model``, ``ensemble_model``) and never imports training
code, so evaluate and package depend on it (``dvc.yaml``) and not on ``ontime.training``.

Serving may run the PyTorch networks in ONNX Runtime instead (``runtime="onnx"``: a torch folder's
``model.onnx``, which the package stage exports with ``ontime.export.onnx``, scored by
``onnx_model``); everything else loads as trained. ``ontime.export`` depends on this package, never
the other way round.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import polars as pl

from ontime.errors import DataError
from ontime.io import read_json, write_json, write_parquet

Kind = Literal["torch", "lightgbm", "linear", "svm", "ensemble"]
# How a candidate's PyTorch networks run: as trained, or exported to ONNX and run in ONNX Runtime.
Runtime = Literal["native", "onnx"]
RUNTIMES: tuple[Runtime, ...] = ("native", "onnx")
CANDIDATE_FILE = "candidate.json"
ONNX_FILE = "model.onnx"  # in a torch candidate's folder, written by the package stage
# The validation rows: thresholds are chosen and candidates compared on them (evaluate, select),
# ensembles fitted on them (out-of-fold for the comparison); a candidate refit on them afterwards
# answers for them with its held-out predictions (``validation_predictions``).
VALID_PART = "finetune_valid"


class Candidate(Protocol):
    """A model that scores feature frames. It may also carry ``held_out``: per split part,
    predictions for that part's rows (in ``read_part`` order) by a fit that never saw them, used
    instead of ``predict_proba`` where the candidate was finally fitted on those very rows
    (ensembles: out-of-fold; refit candidates: the fit before the refit)."""

    name: str

    def predict_proba(self, df: pl.DataFrame) -> np.ndarray:
        """Probability of label 1 for each row of ``df`` (feature columns from the spec).

        Shape: (n,), float64.
        """
        ...


def write_candidate_info(folder: Path, *, kind: Kind, name: str, **extra: Any) -> None:
    write_json(folder / CANDIDATE_FILE, {"kind": kind, "name": name, **extra})


def load_candidate(folder: str | Path, runtime: Runtime = "native") -> Candidate:
    """Load the candidate in ``folder`` (written by train, baseline, finetune, ...).

    Args:
        folder: The candidate's folder.
        runtime: ``native``: as trained. ``onnx``: a torch candidate scores its ``model.onnx`` in
            ONNX Runtime (an ``OnnxCandidate``), and an ensemble passes ``onnx`` on to its members,
            so its torch members do; LightGBM, linear and SVM candidates load as trained either way.

    Raises:
        DataError: ``folder`` is no candidate, or (``onnx``) a torch folder lacks ``model.onnx``.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, however: {runtime=}")
    folder = Path(folder)
    info_path = folder / CANDIDATE_FILE
    if not info_path.is_file():
        raise DataError(f"{folder}: no {CANDIDATE_FILE}; is this a model folder from the pipeline?")
    info = read_json(info_path)
    if info.get("kind") == "torch" and runtime == "onnx":
        # Imported by name rather than by an import statement: only serving and the package stage
        # ask for onnx (and list onnx_model.py in their dvc.yaml deps, through ontime.export.onnx),
        # so evaluate, select and the other stages that load candidates never import onnxruntime,
        # nor depend on it.
        onnx_model: Any = importlib.import_module("ontime.candidates.onnx_model")
        candidate: Candidate = onnx_model.OnnxCandidate.load(folder)
        return candidate
    if info.get("kind") == "torch":
        from ontime.candidates.torch_model import TorchCandidate

        return TorchCandidate.load(folder)
    if info.get("kind") == "lightgbm":
        from ontime.candidates.lightgbm_model import LightGBMCandidate

        return LightGBMCandidate.load(folder)
    if info.get("kind") == "ensemble":
        from ontime.candidates.ensemble_model import EnsembleCandidate

        return EnsembleCandidate.load(folder, runtime=runtime)
    if info.get("kind") == "linear":
        from ontime.candidates.linear_model import LinearCandidate

        return LinearCandidate.load(folder)
    if info.get("kind") == "svm":
        from ontime.candidates.svm_model import SVMCandidate

        return SVMCandidate.load(folder)
    raise DataError(f"{info_path}: unknown candidate kind {info.get('kind')!r}")


def torch_folders(folder: str | Path) -> list[Path]:
    """The torch candidate folders of the candidate in ``folder``: itself when it is one, else its
    ensemble members' (``members/<name>``, recursively, in the combiner's order); none for LightGBM,
    linear and SVM candidates."""
    folder = Path(folder)
    info_path = folder / CANDIDATE_FILE
    if not info_path.is_file():
        raise DataError(f"{folder}: no {CANDIDATE_FILE}; is this a model folder from the pipeline?")
    kind = read_json(info_path).get("kind")
    if kind == "torch":
        return [folder]
    if kind != "ensemble":
        return []
    members = read_json(folder / "combiner.json")["members"]
    return [f for name in members for f in torch_folders(folder / "members" / name)]


# -------------------------------------------------------------------------------- held out ---
def held_out_path(folder: Path, part: str) -> Path:
    return folder / f"held_out_{part}.parquet"


def save_held_out(folder: Path, held_out: dict[str, np.ndarray]) -> None:
    """Write each part's held-out predictions (``Candidate.held_out``) into the candidate folder."""
    for part, p in sorted(held_out.items()):
        write_parquet(
            pl.DataFrame({"probability": np.asarray(p, dtype=np.float64)}), held_out_path(folder, part)
        )


def load_held_out(folder: Path) -> dict[str, np.ndarray]:
    """The held-out predictions saved in ``folder`` (none: an empty dict)."""
    prefix = "held_out_"
    return {
        path.stem.removeprefix(prefix): pl.read_parquet(path).get_column("probability").to_numpy()
        for path in sorted(folder.glob(f"{prefix}*.parquet"))
    }


def validation_predictions(cand: Candidate, rows: pl.DataFrame, part: str) -> np.ndarray:
    """A candidate's predictions for the rows of ``part``: its held-out ones when it was finally
    fitted on these very rows, so that thresholds, selection and ensemble weights stay honest."""
    held = getattr(cand, "held_out", {}).get(part)
    if held is None:
        return cand.predict_proba(rows)
    if len(held) != rows.height:
        raise DataError(
            f"{cand.name}: held-out predictions cover {len(held)} rows, {part} has {rows.height}; the "
            "split changed after the model was trained: re-run dvc repro"
        )
    return np.asarray(held, dtype=np.float64)
