"""The ``preprocess`` section: scaling and category settings of the networks' (and linear's) inputs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ontime.config import StrictModel


class PreprocessConfig(StrictModel):
    scaling: Literal["zscore", "minmax", "quantile"]
    min_frequency: int = Field(ge=1)
    n_quantiles: int = Field(ge=10)
