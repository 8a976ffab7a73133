"""The ``featurize`` section: the joins, derived feature groups and optional inputs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ontime.config import StrictModel

DerivedGroup = Literal["calendar", "holidays", "schedule", "aircraft_age", "traffic", "route"]


class JoinConfig(StrictModel):
    table: str
    left_on: list[str]
    right_on: list[str]
    columns: list[str]
    prefix: str

    @model_validator(mode="after")
    def _check(self) -> JoinConfig:
        if len(self.left_on) != len(self.right_on) or not self.left_on:
            raise ValueError("left_on and right_on must be non-empty and of the same length")
        return self


TimeFormat = Literal["year", "year_month", "unix_s", "unix_ms"]


class FeaturizeConfig(StrictModel):
    base: str
    time_column: str | None
    time_format: TimeFormat | str | None = Field(
        description="how to read a time column that is not a Date/Datetime: year (an integer year, "
        "e.g. 1995), year_month (text 1995-07 or integer 199507), unix_s / unix_ms (seconds or "
        "milliseconds since 1970 UTC), or a strftime pattern for text (e.g. %d/%m/%Y); null: the "
        "column is a Date or Datetime already"
    )
    timezone: str | None
    joins: list[JoinConfig]
    derived: list[DerivedGroup]
    holidays_country: str
    categorical: list[str] = Field(description="columns treated as categorical whatever their dtype")
    exclude: list[str] = Field(description="never features: post-departure columns and identifiers")
    optional: dict[str, list[str]] = Field(
        description="groups of features a client may leave out (e.g. weather): training sees each group "
        "missing on a share of its rows (mask_rate), so a request without it is scored as trained"
    )
    mask_rate: float = Field(ge=0, lt=1, description="share of fitting rows each group is blanked on")
