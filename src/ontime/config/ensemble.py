"""The ``ensemble`` section: the members and the ways to combine them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ontime.config import StrictModel


class EnsembleConfig(StrictModel):
    members: list[str] = Field(min_length=2, description="candidate names to combine")
    methods: list[Literal["weighted", "stacking"]] = Field(min_length=1)
    folds: int = Field(ge=2, description="time-ordered folds of the validation rows for honest scores")
    stacking_c: float = Field(gt=0, description="inverse L2 strength of the stacking regression")
