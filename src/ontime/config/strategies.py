"""The ``strategies`` section: the fine-tune strategies the study compares."""

from __future__ import annotations

from pydantic import Field, field_validator

from ontime.config import StrictModel
from ontime.config.finetune import check_strategies


class StrategiesConfig(StrictModel):
    """The ``strategies`` section of params.yaml."""

    names: list[str] = Field(min_length=1, description="fine-tune strategies to compare")

    @field_validator("names")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        check_strategies(names)
        if len(set(names)) != len(names):
            raise ValueError(f"{names}: list each strategy once")
        return names
