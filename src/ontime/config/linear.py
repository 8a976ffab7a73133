"""The ``linear`` section: the logistic regression's penalty, strength and solver limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ontime.config import StrictModel


class LinearConfig(StrictModel):
    """The ``linear`` section of params.yaml."""

    penalty: Literal["l1", "l2"] = Field(description="l1: sparse weights (exact zeros); l2: ridge")
    C: float = Field(gt=0, description="inverse regularisation strength: smaller is stronger")
    max_iter: int = Field(ge=1, description="most solver iterations")
    tol: float = Field(gt=0, description="the solver's stopping tolerance")
    refit: bool = Field(description="fit again on every non-test row; validation scores stay the first fit's")
