"""The ``tune`` section: the search's budget and its space, checked against the params it searches.

:func:`check_space` needs only the typed configs of the sections searched (``model``, ``train``,
``preprocess``), so ``ontime params`` validates the space without importing optuna or torch.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import Field, model_validator

from ontime.config import StrictModel, section
from ontime.config.model import ModelConfig, model_section
from ontime.config.preprocess import PreprocessConfig
from ontime.config.train import TrainConfig
from ontime.errors import ConfigError

if TYPE_CHECKING:
    import optuna

Value = float | int | str | bool
SECTIONS = ("train", "model", "preprocess")  # what tune.space may search
# string choices pass unquoted through the shell and Hydra's override grammar, and stay strings there
_PLAIN = re.compile(r"(?!(?i:true|false|null|inf|nan)$)[A-Za-z_][A-Za-z0-9_-]*")


class ParamSpace(StrictModel):
    """The range of one param: ``float`` or ``int`` in [low, high] (``log`` scale), or ``categorical``."""

    type: Literal["float", "int", "categorical"]
    low: float | None
    high: float | None
    log: bool
    choices: list[float | int | str | bool] | None

    @model_validator(mode="after")
    def _check(self) -> ParamSpace:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("type categorical needs a non-empty list of choices, e.g. [bce, focal]")
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("type categorical takes choices only; set low: null, high: null, log: false")
            bad = [c for c in self.choices if isinstance(c, str) and not _PLAIN.fullmatch(c)]
            if bad:
                raise ValueError(
                    f"string choices must be plain words (letters, digits, _, -), however: {bad}"
                )
            return self
        if self.choices is not None:
            raise ValueError(f"choices is for type categorical only; set choices: null for type {self.type}")
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"type {self.type} needs low < high, however: low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, however: low={self.low}; use log: false")
        if self.type == "int" and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError(f"type int needs whole bounds, however: low={self.low}, high={self.high}")
        return self

    def candidates(self) -> list[Value]:
        """The values checked before searching: both bounds, or every choice."""
        if self.choices is not None:
            return list(self.choices)
        low, high = float(self.low or 0), float(self.high or 0)  # both set: see _check
        return [int(low), int(high)] if self.type == "int" else [low, high]

    def suggest(self, trial: optuna.Trial, name: str) -> Value:
        """Sample this param's value for ``trial`` (recorded under ``name``, the dotted key)."""
        if self.choices is not None:
            return cast(Value, trial.suggest_categorical(name, self.choices))
        low, high = self.candidates()
        if self.type == "int":
            return trial.suggest_int(name, int(low), int(high), log=self.log)
        return trial.suggest_float(name, float(low), float(high), log=self.log)


class TuneConfig(StrictModel):
    """The ``tune`` section: budget, pruning, rows and epochs per trial, and the space searched."""

    n_trials: int = Field(ge=1)
    timeout_s: float = Field(gt=0, description="no new trial starts after this many seconds")
    pruning: bool = Field(description="stop trials whose validation ROC AUC trails the median")
    max_train_rows: int | None = Field(ge=1, description="train on the most recent rows only")
    epochs: int = Field(ge=1, description="max epochs per trial; replaces train.epochs")
    space: dict[str, ParamSpace] = Field(min_length=1, description="dotted key -> range, e.g. train.lr")


def with_values(params: dict[str, Any], values: dict[str, Value], *, epochs: int) -> dict[str, Any]:
    """A copy of ``params`` with ``train.epochs`` and every dotted key of ``values`` set."""
    out = copy.deepcopy(params)
    for key, value in {"train.epochs": epochs, **values}.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node[part]
        node[leaf] = value
    return out


def configs(params: dict[str, Any], *, source: str) -> tuple[ModelConfig, TrainConfig, PreprocessConfig]:
    """The typed views the train stage reads, with its errors."""
    return (
        model_section(params, source=source),
        section(params, "train", TrainConfig, source=source),
        section(params, "preprocess", PreprocessConfig, source=source),
    )


def check_space(cfg: TuneConfig, params: dict[str, Any], *, source: str) -> None:
    """Fail before training unless every key is an existing param and every bound/choice is valid.

    Raises:
        ConfigError: naming the key, the active model and the fix.
    """
    for key, space in cfg.space.items():
        first, *rest = key.split(".")
        if first not in SECTIONS or not rest or key in ("model.name", "train.epochs"):
            raise ConfigError(
                f"{source}: tune.space.{key} cannot be searched: use dotted params of {SECTIONS} such "
                "as train.lr (switch models with -S model=NAME; trial epochs are tune.epochs)"
            )
        node: Any = params.get(first)
        for part in rest:
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is KeyError or isinstance(node, dict):
            owner = f"model {params['model'].get('name')}" if first == "model" else first
            known = sorted(params.get(first) or {})
            raise ConfigError(f"{source}: tune.space.{key} is not a param of {owner}; known: {known}")
        for value in space.candidates():
            trial_params = with_values(params, {key: value}, epochs=cfg.epochs)
            configs(trial_params, source=f"{source}: tune.space.{key} value {value!r}")
