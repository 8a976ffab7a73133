"""The ``split`` section: the time windows (or fractions) of the parts and their validation rows."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, model_validator

from ontime.config import StrictModel

SplitName = Literal["train", "finetune", "test"]


class Window(StrictModel):
    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _check(self) -> Window:
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} must be after start {self.start}")
        return self


class SplitConfig(StrictModel):
    method: Literal["time", "random", "stratified"]
    windows: dict[SplitName, Window]
    valid_days: int | None = Field(ge=1, description="time: the last this many days of each window validate")
    valid_rows: int | None = Field(ge=1, description="time: the last this many rows of each window validate")
    valid_share: float | None = Field(
        gt=0, lt=1, description="time: the last this share of each window's rows validate"
    )
    fractions: dict[SplitName, float]
    valid_fraction: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        chosen = [k for k in ("valid_days", "valid_rows", "valid_share") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError(
                "set exactly one of valid_days, valid_rows, valid_share (the others null), got "
                f"{chosen or 'none'}; e.g. for yearly data: split.valid_days=null split.valid_share=0.2"
            )
        for name, part in (("windows", self.windows), ("fractions", self.fractions)):
            if set(part) != {"train", "finetune", "test"}:
                raise ValueError(f"{name} needs exactly train, finetune and test")
        if abs(sum(self.fractions.values()) - 1.0) > 1e-9 or min(self.fractions.values()) <= 0:
            raise ValueError(f"fractions must be positive and sum to 1, got {self.fractions}")
        return self
