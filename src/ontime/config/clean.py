"""The ``clean`` section: each table's validation and cleaning rules, and how the label is derived."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ontime.config import StrictModel


class TableRules(StrictModel):
    """Validation and cleaning rules for one table."""

    key: list[str] = Field(description="columns that identify a row; duplicates are dropped")
    drop_missing: list[str] = Field(description="rows with a null in any of these are dropped")
    fill: dict[str, float | int | str] = Field(description="nulls in these columns get this value")
    ranges: dict[str, tuple[float, float]] = Field(description="valid [min, max]; else the stage fails")
    outliers: dict[str, tuple[float, float]] = Field(description="plausible [min, max]; else null")
    references: dict[str, str] = Field(description="column -> table.column; orphans are counted")
    formats: dict[str, Literal["hhmm"]] = Field(
        description="column -> format its values must have, else the stage fails (and a request is "
        "rejected). hhmm: a clock time as an integer, hours 0-23 then minutes 00-59 (0 to 2359)"
    )
    normalize: dict[str, Literal["upper", "lower", "strip"]] = Field(
        description="text column -> surrounding whitespace stripped, then upper- or lower-cased "
        "(strip: only stripped); a blank value becomes missing. Offline and online alike"
    )


LABEL = "label"  # the column clean writes the 0/1 label to, from this section's `label`


class LabelConfig(StrictModel):
    """How the binary label is derived from a column of ``table``."""

    table: str
    column: str
    threshold: float | None = Field(description="positive when column >= threshold")
    positive_value: str | int | bool | None = Field(description="positive when column == value")
    missing_positive: bool = Field(description="rows without a value: positive, or else dropped")

    @model_validator(mode="after")
    def _check(self) -> LabelConfig:
        if self.threshold is not None and self.positive_value is not None:
            raise ValueError("set threshold or positive_value, not both")
        return self

    def describe(self, target: str) -> str:
        """The label in words (Markdown), one text for the model card and the service's docs, e.g.
        "`label` is 1 when `arr_delay` (table `flights`) >= 15, else 0. Rows with no `arr_delay`
        value count as positive (1)." ``target``: the label column clean writes."""
        source = f"`{self.column}` (table `{self.table}`)"
        if self.threshold is not None:
            t = self.threshold  # exact: 15, 0.5, 1234567.5 (never rounded to 6 digits)
            number = str(int(t)) if float(t).is_integer() and abs(t) < 2**53 else repr(float(t))
            rule = f"`{target}` is 1 when {source} >= {number}, else 0"
        elif self.positive_value is not None:
            v = self.positive_value  # a boolean as the YAML of conf/ writes it: true, false
            value = str(v).lower() if isinstance(v, bool) else str(v)
            rule = f"`{target}` is 1 when {source} equals `{value}`, else 0"
        else:
            rule = f"`{target}` is {source} itself (a 0/1 or boolean column)"
        missing = "count as positive (1)" if self.missing_positive else "are dropped"
        return f"{rule}. Rows with no `{self.column}` value {missing}."


class CleanConfig(StrictModel):
    tables: dict[str, TableRules]
    label: LabelConfig

    @model_validator(mode="after")
    def _check(self) -> CleanConfig:
        if self.label.table not in self.tables:
            raise ValueError(f"label.table {self.label.table!r} has no entry in tables")
        return self
