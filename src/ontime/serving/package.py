"""package: the champion into BentoML's model store, and a Bento built from ``bentofile.yaml``.

The stored model is a *bundle* folder that :class:`~ontime.serving.online.Scorer` loads: the
champion folder from select (candidate files, ``model_card.json``, ``params.yaml``,
``feature_spec.json``), ``lookups/<table>.parquet`` for every table featurize joins that requests do
not carry (``serve.request_tables``), and ``bundle.json`` with the version (the model tag). The
bundle's ``params.yaml`` takes its ``serve`` section from the current params, so changing
``serve.max_batch_size`` re-packages without retraining.

The store lives in ``$BENTOML_HOME`` (default ``~/bentoml``), outside the repository: DVC records
only ``models/package.json`` (the model and Bento tags).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ontime.config import FeaturizeConfig, load_params, section
from ontime.errors import DataError
from ontime.evaluation.select import git_revision, md5
from ontime.io import atomic_outputs, read_json, write_json
from ontime.serving.online import Scorer, ServeConfig

log = logging.getLogger(__name__)

MODEL_NAME = "ontime-delay"
CHAMPION_FILES = ("candidate.json", "model_card.json", "params.yaml", "feature_spec.json")


def check_champion(champion: Path) -> dict[str, Any]:
    """The champion's model card; a clear error when the folder is missing or incomplete."""
    if not champion.is_dir():
        raise DataError(
            f"{champion}: the champion folder is missing; run `dvc repro select` (or pass --champion)"
        )
    missing = [f for f in CHAMPION_FILES if not (champion / f).is_file()]
    if missing:
        raise DataError(
            f"{champion}: not a champion folder from select, it lacks {missing}; run `dvc repro select`"
        )
    card: dict[str, Any] = read_json(champion / "model_card.json")
    return card


def bundle_params(champion: Path, serve: ServeConfig) -> dict[str, Any]:
    """The champion's params with the current ``serve`` section (serving settings, not training)."""
    params: dict[str, Any] = yaml.safe_load((champion / "params.yaml").read_text())
    return {**params, "serve": serve.model_dump()}


def lookup_tables(params: dict[str, Any], clean: Path) -> dict[str, Path]:
    """Tables featurize joins whose columns do not come with a request (planes, airports)."""
    feat = section(params, "featurize", FeaturizeConfig, source="champion params.yaml")
    serve = section(params, "serve", ServeConfig, source="params")
    tables = sorted({j.table for j in feat.joins if j.table not in serve.request_tables})
    absent = [t for t in tables if not (clean / f"{t}.parquet").is_file()]
    if absent:
        raise DataError(
            f"{clean}: cleaned table(s) {absent} are missing, the bundle needs them as lookups; "
            "run `dvc repro clean` (or pass --clean)"
        )
    return {t: clean / f"{t}.parquet" for t in tables}


def assemble_bundle(
    champion: Path, lookups: dict[str, Path], dest: Path, *, params: dict[str, Any], version: str
) -> None:
    """Write the bundle into ``dest`` (absent or empty): champion, lookups, params, bundle.json."""
    shutil.copytree(champion, dest, dirs_exist_ok=True)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / "lookups").mkdir()
    for table, path in lookups.items():
        shutil.copy2(path, dest / "lookups" / f"{table}.parquet")
    write_json(dest / "bundle.json", {"version": version})


def _metadata(value: Any) -> Any:
    """BentoML metadata holds no None: write it as "unknown"."""
    if isinstance(value, dict):
        return {str(k): _metadata(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_metadata(v) for v in value]
    return "unknown" if value is None else value


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def main(
    params_path: str,
    champion_dir: str,
    clean_dir: str,
    out_path: str,
    bentofile: str = "bentofile.yaml",
    build_ctx: str = "src",
) -> None:
    import bentoml

    serve = section(load_params(params_path), "serve", ServeConfig, source=params_path)
    champion, clean = Path(champion_dir), Path(clean_dir)
    card = check_champion(champion)
    if not Path(bentofile).is_file():
        raise DataError(f"{bentofile}: bentofile not found; run from the repository root")
    if not Path(build_ctx).is_dir():
        raise DataError(f"{build_ctx}: build context folder not found; run from the repository root")

    params = bundle_params(champion, serve)
    lookups = lookup_tables(params, clean)
    metadata = {
        "champion": card["champion"],
        "selected_by": card["selected_by"],
        "threshold": card["threshold"],
        "test_metrics": card["test_metrics"],
        "valid_metrics": card["valid_metrics"],
        "data_version": {**card["data_version"], **{str(p): md5(p) for p in lookups.values()}},
        "params_sha256": hashlib.sha256(yaml.safe_dump(params, sort_keys=False).encode()).hexdigest(),
        "git": git_revision(),
        "champion_git": card["git"],
    }
    labels = {"project": "ontime", "champion": str(card["champion"]), "data": str(params["data"]["name"])}
    with atomic_outputs(out_path) as (tmp_out,):
        with bentoml.models.create(MODEL_NAME, labels=labels, metadata=_metadata(metadata)) as model:
            tag = str(model.tag)
            assemble_bundle(champion, lookups, Path(model.path), params=params, version=tag)
            Scorer(model.path)  # fails here, before anything is saved, when the bundle does not load
        log.info("package: saved model %s", tag)
        # The service resolves its model at import: pin the build to the model just saved.
        with _env("ONTIME_MODEL", tag):
            bento = bentoml.bentos.build_bentofile(
                bentofile, build_ctx=build_ctx, version=model.tag.version, labels={"model": tag}
            )
        log.info("package: built Bento %s", bento.tag)
        write_json(
            tmp_out,
            {
                "model_tag": tag,
                "bento_tag": str(bento.tag),
                "champion": card["champion"],
                "threshold": card["threshold"],
                "params_sha256": metadata["params_sha256"],
            },
        )
