"""Online scoring: raw records in the data's own fields -> validated -> features -> probabilities.

The service and ``ontime predict`` share this path, so they give the same numbers. A *bundle* folder
(made by the package stage) holds the champion candidate, its ``params.yaml`` (data, clean and
featurize sections), ``feature_spec.json``, ``model_card.json`` (threshold) and ``lookups/``: the
cleaned tables that featurize joins and the request does not carry (planes, airports).

The request schema is derived from the config, not written by hand: the base table's columns that
features need (directly, through a derived group, as a join key or as the time column), plus the
columns of joins listed in ``serve.request_tables`` (weather at the origin). Types come from
``data.dtypes``, valid ranges from ``clean.tables.<table>.ranges``. A field is optional only when
the model saw its feature missing in training: missing in the data (weather gaps), or blanked on a
share of the fitting rows because it is in a ``featurize.optional`` group (the aircraft, the
schedule counts, the weather); a field left out is then missing exactly as training saw it. Every
other field is required: the time column, the join keys and ``drop_missing`` columns (unless in an
optional group), and any feature that was never missing (e.g. ``flight``). Schedule counts of the
``traffic`` group may be sent (they need the whole schedule); the service cannot derive them.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ontime.candidates import Candidate, load_candidate
from ontime.config import CleanConfig, DataConfig, FeaturizeConfig, LabelConfig, StrictModel, section
from ontime.data.clean import LABEL, apply_value_rules
from ontime.data.collect import POLARS_DTYPES
from ontime.data.featurize import GROUPS, featurize
from ontime.errors import DataError
from ontime.io import read_json
from ontime.spec import FeatureSpec

PY_TYPES: dict[str, Any] = {
    "Int64": int,
    "Int32": int,
    "Float64": float,
    "String": str,
    "Boolean": bool,
    "Date": dt.date,
    "Datetime": dt.datetime,
}
OPTIONAL_DERIVED = ("origin_hour_departures", "tail_leg_of_day", "tail_legs_of_day")


class ServeConfig(StrictModel):
    request_tables: list[str] = Field(description="joined tables whose columns come in the request")
    max_batch_size: int = Field(ge=1)


class RequestField(BaseModel):
    """One request field: where it goes, its type and rule."""

    model_config = ConfigDict(frozen=True)
    name: str
    table: str
    column: str
    dtype: str
    required: bool
    lo: float | None = None
    hi: float | None = None
    feature: str | None = None  # the model input it becomes as it is (None: it feeds derived ones)


def request_fields(
    data: DataConfig,
    clean: CleanConfig,
    feat: FeaturizeConfig,
    serve: ServeConfig,
    spec: FeatureSpec | None = None,
) -> list[RequestField]:
    """The raw fields a client sends, derived from the pipeline's config; with the model's ``spec``,
    optional only where training saw the field's feature missing (see :func:`honest`)."""
    base = feat.base
    base_cols = list(data.dtypes.get(base, {}))
    needed = {c for c in base_cols if c not in feat.exclude and c != clean.label.column}
    for group in feat.derived:
        if group in GROUPS:
            needed.update(c for c in GROUPS[group][1] if c in base_cols)
    for join in feat.joins:
        needed.update(join.left_on)
    if feat.time_column:
        needed.add(feat.time_column)
    needed.discard(clean.label.column)
    rules = clean.tables.get(base)
    required = set(rules.drop_missing if rules else []) | {
        k for j in feat.joins for k in j.left_on if j.table in serve.request_tables
    }
    if feat.time_column:
        required.add(feat.time_column)
    fields = []
    for column in base_cols:
        if column not in needed:
            continue
        lo, hi = rules.ranges.get(column, (None, None)) if rules else (None, None)
        fields.append(
            RequestField(
                name=column,
                table=base,
                column=column,
                dtype=data.dtypes[base][column],
                required=column in required,
                lo=lo,
                hi=hi,
                feature=column,
            )
        )
    for join in feat.joins:
        if join.table not in serve.request_tables:
            continue
        table_rules = clean.tables.get(join.table)
        for column in join.columns:
            name = column if column not in base_cols else f"{join.prefix}{column}"
            lo, hi = table_rules.ranges.get(column, (None, None)) if table_rules else (None, None)
            dtype = data.dtypes.get(join.table, {}).get(column, "Float64")
            fields.append(
                RequestField(
                    name=name,
                    table=join.table,
                    column=column,
                    dtype=dtype,
                    required=False,
                    lo=lo,
                    hi=hi,
                    feature=f"{join.prefix}{column}",
                )
            )
    if "traffic" in feat.derived:
        fields.extend(
            RequestField(
                name=c, table=base, column=c, dtype="Int32", required=False, lo=0, hi=10_000, feature=c
            )
            for c in OPTIONAL_DERIVED
        )
    return fields if spec is None else honest(fields, spec)


def honest(fields: list[RequestField], spec: FeatureSpec) -> list[RequestField]:
    """Optional only what the model saw missing in training; everything else required.

    A field that becomes a model input as it is may be left out when that input was missing in
    the training data or is in an optional group the training masked (``featurize.optional``),
    which also makes a ``drop_missing`` column optional (tailnum: rows without one are dropped in
    clean, and the aircraft group is masked). A field the model never saw missing is required, or
    a client leaving it out would get a score from inputs no training row had. Fields that only
    feed derived features keep the config's rule.
    """
    inputs = set(spec.columns)
    nullable = {f["name"] for f in spec.features if f.get("nullable")}
    masked = {c for cols in spec.optional.values() for c in cols} if spec.mask_rate > 0 else set()
    out = []
    for f in fields:
        if f.feature is None or f.feature not in inputs:
            out.append(f)
            continue
        optional = f.feature in nullable and (not f.required or f.feature in masked)
        out.append(f.model_copy(update={"required": not optional}))
    return out


def request_model(fields: list[RequestField], name: str = "Flight") -> type[BaseModel]:
    """A pydantic model of one record: types, ranges, required vs optional; unknown fields rejected."""
    definitions: dict[str, Any] = {}
    for f in fields:
        kind = PY_TYPES[f.dtype]
        constraints: dict[str, Any] = {}
        if f.lo is not None:
            constraints["ge"] = f.lo
        if f.hi is not None:
            constraints["le"] = f.hi
        if kind is float:
            constraints["allow_inf_nan"] = False
        if kind is str:
            constraints["min_length"] = 1
            constraints["max_length"] = 64
        annotated = Annotated[kind, Field(**constraints)]  # type: ignore[valid-type]
        definitions[f.name] = (annotated, ...) if f.required else (annotated | None, None)
    config = ConfigDict(extra="forbid", strict=False, ser_json_inf_nan="strings")
    return create_model(name, __config__=config, **definitions)


class Scorer:
    """Loads a bundle; scores validated records or a frame of raw rows."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        for part in ("params.yaml", "feature_spec.json", "model_card.json"):
            if not (folder / part).is_file():
                raise DataError(f"{folder}: {part} is missing; package the champion with `dvc repro package`")
        params = yaml.safe_load((folder / "params.yaml").read_text())
        self.data = section(params, "data", DataConfig)
        self.clean = section(params, "clean", CleanConfig)
        self.feat = section(params, "featurize", FeaturizeConfig)
        self.serve = section(params, "serve", ServeConfig)
        self.spec = FeatureSpec.load(folder / "feature_spec.json")
        card = read_json(folder / "model_card.json")
        self.threshold: float = float(card["threshold"])
        self.version: str = (
            read_json(folder / "bundle.json")["version"]
            if (folder / "bundle.json").is_file()
            else card["champion"]
        )
        self.candidate: Candidate = load_candidate(folder)
        self.lookups = {p.stem: pl.read_parquet(p) for p in sorted((folder / "lookups").glob("*.parquet"))}
        self.fields = request_fields(self.data, self.clean, self.feat, self.serve, self.spec)
        self.Record = request_model(self.fields)

    def check_servable(self) -> None:
        """A clear error when no request could be scored: the request schema has no fields."""
        if not self.fields:
            raise DataError(
                f"model {self.version}: its request schema has no fields (the data config declares no "
                "dtypes), so nothing can be scored; declare the columns in data.dtypes and re-run "
                "dvc repro"
            )

    # ---------------------------------------------------------------------------------------------
    def frame(self, records: list[dict[str, Any]]) -> pl.DataFrame:
        """Validated records (dicts of the request model) as one typed frame, one column per field."""
        columns = {}
        for f in self.fields:
            values = [r.get(f.name) for r in records]
            dtype = POLARS_DTYPES[f.dtype]
            if f.dtype == "Datetime":
                values = [
                    v.astimezone(dt.UTC).replace(tzinfo=None) if v is not None and v.tzinfo else v
                    for v in values
                ]
                columns[f.name] = pl.Series(f.name, values, dtype=pl.Datetime("us")).dt.replace_time_zone(
                    "UTC"
                )
            else:
                columns[f.name] = pl.Series(f.name, values, dtype=dtype)
        return pl.DataFrame(columns)

    def features(self, raw: pl.DataFrame) -> pl.DataFrame:
        """Raw rows (the request fields) -> the model's feature columns, as featurize computes them."""
        if raw.height == 0:
            raise DataError("no rows to score")
        base_cols = [f.name for f in self.fields if f.table == self.feat.base]
        base = raw.select(base_cols).with_columns(
            pl.lit(0, dtype=pl.Int8).alias(LABEL), pl.int_range(pl.len()).alias("_row")
        )
        tables = dict(self.lookups)
        joins = []
        for join in self.feat.joins:
            if join.table not in self.serve.request_tables:
                joins.append(join)
                continue
            # Each row brings its own values (its weather forecast): join them by row, never by the
            # table's key, so rows sharing a key (e.g. two requests batched together) cannot mix.
            names = {f.column: f.name for f in self.fields if f.table == join.table}
            tables[join.table] = raw.select(
                pl.int_range(pl.len()).alias("_row"), *(pl.col(names[c]).alias(c) for c in join.columns)
            )
            joins.append(join.model_copy(update={"left_on": ["_row"], "right_on": ["_row"]}))
        for table, df in list(tables.items()):
            if table in self.clean.tables:
                tables[table] = apply_value_rules(df, self.clean.tables[table])[0]
        tables[self.feat.base] = (
            apply_value_rules(base, self.clean.tables[self.feat.base])[0]
            if self.feat.base in self.clean.tables
            else base
        )
        # featurize sorts by time; `_row` (kept as an extra column) restores the request's order.
        label = LabelConfig(
            table=self.feat.base, column=LABEL, threshold=None, positive_value=None, missing_positive=False
        )
        df, _ = featurize(tables, self.feat.model_copy(update={"joins": joins}), label)
        return df.sort("_row").select(self.spec.columns)

    def predict_frame(self, raw: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
        features = self.features(raw)
        return features, self.candidate.predict_proba(features)

    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Scores for validated records: probability, decision at the threshold, model version."""
        _, p = self.predict_frame(self.frame(records))
        return [
            {
                "delay_probability": float(prob),
                "delayed": bool(prob >= self.threshold),
                "model_version": self.version,
            }
            for prob in p
        ]

    def validate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validate raw rows (e.g. from a file) with the same model as the service."""
        out = []
        for i, row in enumerate(rows):
            clean = {
                k: v
                for k, v in row.items()
                if not (isinstance(v, float) and math.isnan(v) and k in self.Record.model_fields)
            }
            try:
                out.append(self.Record.model_validate(clean).model_dump())
            except ValidationError as exc:
                raise DataError(f"row {i}: {exc}") from exc
        return out
