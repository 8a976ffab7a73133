"""``ontime predict``: score a file of records offline, with the service's validation and scoring.

Input: Parquet or CSV with the data's raw fields (the request fields of the service; see
``Scorer.fields``). Output: Parquet with every input row and column, plus the answer's columns in
the names of the bundle's params ``serve``: ``probability`` and ``positive`` (``delay_probability``
and ``delayed`` for the default data) and ``model_version``. Columns that are not request fields
(ids, outcomes) are carried through and never reach the model; NaN in a request field counts as
missing, and a required field missing from the file fails naming it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import polars as pl

from ontime.errors import DataError
from ontime.io import atomic_outputs, write_parquet
from ontime.serving.online import Scorer
from ontime.serving.package import served_model_tag

log = logging.getLogger(__name__)


def output_columns(scorer: Scorer) -> tuple[str, str, str]:
    """The columns ``ontime predict`` adds: the probability, the decision, the model version."""
    return scorer.serve.probability, scorer.serve.positive, "model_version"


def load_scorer(model: str | None = None) -> Scorer:
    """A bundle folder path, or a pinned BentoML model tag; by default the model the service serves
    from this repository (``models/package.json``, or ``ONTIME_MODEL``), never ``latest``."""
    if model is not None and Path(model).is_dir():
        return Scorer(model)
    import bentoml
    from bentoml.exceptions import BentoMLException

    tag = model or served_model_tag()[0]
    try:
        stored = bentoml.models.get(tag)
    except BentoMLException as exc:
        raise DataError(
            f"model {tag!r}: not a folder and not in the BentoML model store ({exc}); run "
            "`dvc repro package` with the same BENTOML_HOME, or pass --model a bundle folder"
        ) from None
    return Scorer(stored.path)


def score_frame(scorer: Scorer, df: pl.DataFrame) -> pl.DataFrame:
    """``df`` plus the three prediction columns; rows validated exactly as the service does."""
    probability, positive, version = output_columns(scorer)
    clash = [c for c in (probability, positive, version) if c in df.columns]
    if clash:
        raise DataError(f"input already has column(s) {clash}; drop or rename them")
    scorer.check_servable()
    names = [f.name for f in scorer.fields]
    ignored = [c for c in df.columns if c not in names]
    if ignored:
        log.info("predict: %d column(s) are not request fields, carried through: %s", len(ignored), ignored)
    fields = [c for c in df.columns if c in names]
    # a file with none of the fields still has its rows: each is then validated (and refused) as empty
    rows = df.select(fields).to_dicts() if fields else [{} for _ in range(df.height)]
    predictions = scorer.predict(scorer.validate(rows))
    return df.with_columns(
        pl.Series(probability, [p[probability] for p in predictions], dtype=pl.Float64),
        pl.Series(positive, [p[positive] for p in predictions], dtype=pl.Boolean),
        pl.Series(version, [p[version] for p in predictions], dtype=pl.String),
    )


def read_table(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: input file not found")
    if path.suffix.lower() == ".parquet":
        return pl.read_parquet(path)
    if path.suffix.lower() == ".csv":
        return pl.read_csv(path, null_values=["", "NA"], infer_schema_length=10_000)
    raise DataError(f"{path}: unknown file type {path.suffix!r}; use .parquet or .csv")


def main(input_path: str, output_path: str, model: str | None = None) -> None:
    df = read_table(Path(input_path))
    if df.height == 0:
        raise DataError(f"{input_path}: no rows to score")
    scorer = load_scorer(model)
    try:
        out = score_frame(scorer, df)
    except DataError as exc:
        raise DataError(f"{input_path}: {exc}") from None
    with atomic_outputs(output_path) as (tmp,):
        write_parquet(out, tmp)
    log.info("predict: %d rows scored with %s -> %s", out.height, scorer.version, output_path)


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Score a file of records with a packaged model."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime predict``: its description and options."""
    parser.description = (
        "Score a file of raw rows with the same validation and scoring as the service; "
        "write the input rows plus the model's params serve.probability and serve.positive columns "
        "(delay_probability and delayed for the default data) and model_version as Parquet. Columns "
        "that are not request fields are carried through unscored."
    )
    parser.add_argument("--input", required=True, help="Parquet or CSV file of records (e.g. flights)")
    parser.add_argument("--output", required=True, help="Parquet file to write")
    parser.add_argument(
        "--model",
        default=None,
        help="a bundle folder or a pinned BentoML model tag (default: the model the service serves from "
        "this repository: ONTIME_MODEL, else models/package.json; never `latest`)",
    )


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(input_path=args.input, output_path=args.output, model=args.model)
