"""Typed views of ``params.yaml``, read once at each stage's edge: the shared base.

Hydra composes ``conf/`` into ``params.yaml`` (DVC records it); each stage turns its own section into
one of the frozen models of ``ontime.config.<section>`` (one module per top-level section of
``params.yaml``), which reject missing and unknown keys with a message naming the key. This module
holds what every section shares (:class:`StrictModel`, :func:`section`, :func:`load_params`,
:func:`seed` and the column types) and imports no section module, so a stage depends on the
sections it reads and no others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ontime.errors import ConfigError

DType = Literal["Int64", "Int32", "Float64", "String", "Boolean", "Date", "Datetime"]


class StrictModel(BaseModel):
    """Frozen, and rejects unknown keys: the base of every params section."""

    model_config = ConfigDict(extra="forbid", frozen=True)


T = TypeVar("T", bound=BaseModel)


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a params file (``params.yaml``) into a dict, with a clear error when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the repository root")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix the file") from exc
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(params).__name__}")
    return params


def section(params: dict[str, Any], name: str, model: type[T], *, source: str = "params") -> T:
    """Validate ``params[name]`` into ``model``; errors name the dotted key and the fix."""
    if name not in params:
        raise ConfigError(f"{source}: section {name!r} is missing; compose conf/ into params.yaml")
    try:
        return model.model_validate(params[name])
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in (name, *err["loc"]))
            if err["type"] == "extra_forbidden":
                problems.append(f"{key}: unknown key; remove it or check its spelling")
            elif err["type"] == "missing":
                problems.append(f"{key}: missing key; add it (see conf/ for an example)")
            else:
                problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{source}: invalid config:\n  " + "\n  ".join(problems)) from None


def seed(params: dict[str, Any]) -> int:
    value = params.get("seed")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"params: seed must be an integer, got {value!r}; set seed: 42")
    return value
