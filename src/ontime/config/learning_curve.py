"""The ``learning_curve`` section: the shares of the train part the study fits on."""

from __future__ import annotations

from pydantic import Field, field_validator

from ontime.config import StrictModel


class LearningCurveConfig(StrictModel):
    """The ``learning_curve`` section of params.yaml."""

    shares: list[float] = Field(min_length=1, description="shares of the train part, most recent rows kept")

    @field_validator("shares")
    @classmethod
    def _shares(cls, shares: list[float]) -> list[float]:
        if any(not 0 < s <= 1 for s in shares) or shares != sorted(set(shares)):
            raise ValueError(f"{shares}: shares in (0, 1], each once, ascending (e.g. [0.1, 0.25, 0.5, 1.0])")
        return shares
