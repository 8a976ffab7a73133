"""Ensemble candidates on disk: copies of the members and the fitted combiner as JSON.

``weighted``: a convex combination of the members' probabilities; ``stacking``: a logistic
regression on the members' logits. The ensemble stage (``ontime.training.ensemble``) fits them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ontime.candidates import (
    VALID_PART,
    Candidate,
    Runtime,
    load_candidate,
    load_held_out,
    save_held_out,
    write_candidate_info,
)
from ontime.io import read_json, write_json

EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def combine(method: str, P: np.ndarray, state: dict[str, Any]) -> np.ndarray:
    if method == "weighted":
        return P @ np.asarray(state["weights"])
    z = logit(P) @ np.asarray(state["coef"]) + state["intercept"]
    return 1.0 / (1.0 + np.exp(-z))


class EnsembleCandidate:
    """Members plus a fitted combiner; ``held_out`` holds its out-of-fold validation predictions."""

    def __init__(
        self,
        *,
        name: str,
        method: str,
        members: list[Candidate],
        state: dict[str, Any],
        oof: np.ndarray | None = None,
    ) -> None:
        self.name, self.method, self.members, self.state = name, method, members, state
        self.held_out = {VALID_PART: oof} if oof is not None else {}

    def predict_proba(self, df: pl.DataFrame) -> np.ndarray:
        P = np.column_stack([m.predict_proba(df) for m in self.members])
        return combine(self.method, P, self.state)

    def save(self, folder: Path, member_dirs: dict[str, Path]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, src in member_dirs.items():
            shutil.copytree(src, folder / "members" / name)
        write_json(
            folder / "combiner.json",
            {"method": self.method, "members": [m.name for m in self.members], **self.state},
        )
        save_held_out(folder, self.held_out)
        write_candidate_info(folder, kind="ensemble", name=self.name, method=self.method)

    @classmethod
    def load(cls, folder: str | Path, *, runtime: Runtime = "native") -> EnsembleCandidate:
        """Read an ensemble folder; ``runtime`` goes on to every member (see ``load_candidate``)."""
        folder = Path(folder)
        combiner = read_json(folder / "combiner.json")
        members = [load_candidate(folder / "members" / n, runtime) for n in combiner.pop("members")]
        oof = load_held_out(folder).get(VALID_PART)
        method = combiner.pop("method")
        return cls(
            name=read_json(folder / "candidate.json")["name"],
            method=method,
            members=members,
            state=combiner,
            oof=oof,
        )
