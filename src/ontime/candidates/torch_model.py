"""Torch candidates on disk: architecture as JSON, weights as safetensors, preprocessing as JSON.

Nothing is pickled: a folder holds ``model.json`` (class name and keyword arguments),
``model.safetensors`` (weights), ``preprocessor.json`` and ``candidate.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ontime.candidates import load_held_out, save_held_out, write_candidate_info
from ontime.candidates.ensemble_model import EnsembleCandidate
from ontime.errors import DataError
from ontime.io import read_json, write_json
from ontime.models.ft_transformer import FTTransformer
from ontime.models.mlp import MLP
from ontime.models.preprocess import Preprocessor

ARCHITECTURES: dict[str, type[nn.Module]] = {"mlp": MLP, "ft_transformer": FTTransformer}


def build_model(architecture: str, kwargs: dict[str, Any]) -> nn.Module:
    if architecture not in ARCHITECTURES:
        raise DataError(f"unknown architecture {architecture!r}; use one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[architecture](**kwargs)


def state_dict_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached, contiguous CPU copy of the weights (safetensors needs contiguous tensors)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def predict_logits(
    model: nn.Module, x_num: np.ndarray, x_cat: np.ndarray, *, batch_size: int, device: torch.device
) -> np.ndarray:
    """Logits for every row, in batches, in eval mode. Shape: (n,) float64."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(x_num), batch_size):
        xn = torch.from_numpy(x_num[start : start + batch_size]).to(device)
        xc = torch.from_numpy(x_cat[start : start + batch_size]).to(device)
        out.append(model(xn, xc).double().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


class TorchCandidate:
    """A trained torch model with its preprocessing; scores polars frames."""

    def __init__(
        self,
        *,
        name: str,
        model: nn.Module,
        architecture: str,
        kwargs: dict[str, Any],
        preprocessor: Preprocessor,
        batch_size: int = 4096,
        held_out: dict[str, np.ndarray] | None = None,
    ) -> None:
        """``held_out``: predictions for split parts this model was finally trained on, by the model
        before that (see ``ontime.candidates.validation_predictions``)."""
        self.name = name
        self.model = model
        self.architecture = architecture
        self.kwargs = kwargs
        self.preprocessor = preprocessor
        self.batch_size = batch_size
        self.held_out = held_out or {}

    def predict_proba(self, df: pl.DataFrame) -> np.ndarray:
        x_num, x_cat = self.preprocessor.transform(df)
        device = next(self.model.parameters()).device
        logits = predict_logits(self.model, x_num, x_cat, batch_size=self.batch_size, device=device)
        return sigmoid(logits)

    def save(self, folder: Path, **info: Any) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "model.json", {"architecture": self.architecture, "kwargs": self.kwargs})
        save_file(state_dict_cpu(self.model), str(folder / "model.safetensors"))
        self.preprocessor.save(folder / "preprocessor.json")
        save_held_out(folder, self.held_out)
        write_candidate_info(folder, kind="torch", name=self.name, held_out=sorted(self.held_out), **info)

    @classmethod
    def load(cls, folder: str | Path, *, device: str = "cpu") -> TorchCandidate:
        folder = Path(folder)
        for part in ("model.json", "model.safetensors", "preprocessor.json", "candidate.json"):
            if not (folder / part).is_file():
                raise DataError(f"{folder}: {part} is missing; re-run the stage that wrote this model")
        spec = read_json(folder / "model.json")
        model = build_model(spec["architecture"], spec["kwargs"])
        model.load_state_dict(load_file(str(folder / "model.safetensors"), device=device))
        model.to(device).eval()
        return cls(
            name=read_json(folder / "candidate.json")["name"],
            model=model,
            architecture=spec["architecture"],
            kwargs=spec["kwargs"],
            preprocessor=Preprocessor.load(folder / "preprocessor.json"),
            held_out=load_held_out(folder),
        )


# ------------------------------------------------------------------------------- seed bagging ---
def save_seed_bag(folder: Path, *, name: str, members: list[TorchCandidate], **info: Any) -> None:
    """Models of different seeds averaged with equal weights, as an ``ensemble`` candidate."""
    for member in members:
        member.save(folder / "members" / member.name, **info)
    n = len(members)
    write_json(
        folder / "combiner.json",
        {"method": "weighted", "members": [m.name for m in members], "weights": [1.0 / n] * n},
    )
    save_held_out(folder, bag_held_out(members))
    write_candidate_info(folder, kind="ensemble", name=name, method="weighted", bagging_seeds=n, **info)


def bag_held_out(members: list[TorchCandidate]) -> dict[str, np.ndarray]:
    """A bag's held-out predictions: the average of its members' (as it predicts), per part all have."""
    return {
        part: np.mean([m.held_out[part] for m in members], axis=0)
        for part in members[0].held_out
        if all(part in m.held_out for m in members)
    }


def seed_bag(name: str, members: list[TorchCandidate]) -> EnsembleCandidate:
    """In memory, the candidate ``save_seed_bag`` writes: the members' equally weighted average."""
    n = len(members)
    bag = EnsembleCandidate(
        name=name, method="weighted", members=list(members), state={"weights": [1.0 / n] * n}
    )
    bag.held_out = bag_held_out(members)
    return bag


def load_torch_members(folder: str | Path) -> list[TorchCandidate]:
    """The torch model(s) of a train/finetune output: one model, or the members of a seed bag."""
    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        return [TorchCandidate.load(folder)]
    if not (folder / "combiner.json").is_file():
        raise DataError(f"{folder}: no trained model; run the train stage first (dvc repro train)")
    names = read_json(folder / "combiner.json")["members"]
    return [TorchCandidate.load(folder / "members" / n) for n in names]


def one(name: str, members: list[TorchCandidate]) -> TorchCandidate | EnsembleCandidate:
    """``members`` (one model, or a seed bag's) as one candidate named ``name``."""
    if len(members) == 1:
        members[0].name = name
        return members[0]
    return seed_bag(name, members)
