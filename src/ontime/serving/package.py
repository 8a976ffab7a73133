"""package: the champion into BentoML's model store, and a Bento built from ``bentofile.yaml``.

The stored model is a *bundle* folder that :class:`~ontime.serving.online.Scorer` loads: the
champion folder from select (candidate files, ``model_card.json``, ``params.yaml``,
``feature_spec.json``), ``lookups/<table>.parquet`` for every table featurize joins that requests do
not carry (``serve.request_tables``), ``schema.json`` (the clean stage's recorded schema, from which
the request fields and their types come) and ``bundle.json`` with the version (the model tag). The
bundle's ``params.yaml`` takes its ``serve`` section from the current params, so changing
``serve.max_batch_size`` (or the API's names) re-packages without retraining. The model's name in
the store is ``serve.model_name`` (``ontime-delay`` for the default data, ``ontime-<data.name>``
for a table of one's own), so models of different data sets never share a name.

The store lives in ``$BENTOML_HOME`` (default ``~/bentoml``), outside the repository: DVC records
``models/package.json`` (the model and Bento tags), which is what the service serves from the
repository (never ``latest``).

Tags are content hashes, not random: the model's version is the sha256 of the bundle's files, the
Bento's version that of the model version, ``bentofile.yaml`` and every source file the Bento
includes. Packaging the same champion with the same code gives the same tags on any machine, so
``models/package.json`` is reproducible, a fresh clone re-creates exactly the recorded model with
``dvc repro --force --single-item package``, and an existing tag is reused rather than duplicated.
The Bento is built from a temporary copy of ``src/`` holding ``ontime/serving/served_model.json``
(the model tag), so a Bento serves the model it was built with, always.

``serve.runtime`` decides how the service runs the champion's PyTorch networks (:func:`prepare_runtime`):
``onnx`` (and ``auto``, when the champion holds a network) exports ``model.onnx`` into every torch
candidate folder of the bundle, checked against PyTorch before anything is stored; ``bundle.json``
records the runtime. The export is byte-for-byte reproducible, so the tags stay content hashes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml

from ontime import command
from ontime.candidates import CANDIDATE_FILE, ONNX_FILE, Runtime, torch_folders
from ontime.config import load_params, section
from ontime.config.featurize import FeaturizeConfig
from ontime.config.serve import ServeConfig
from ontime.errors import DataError
from ontime.io import atomic_outputs, read_json, write_json
from ontime.lineage import md5, provenance, tree_sha256
from ontime.serving.online import SCHEMA_FILE, RecordedSchema, Scorer

log = logging.getLogger(__name__)

SERVED_MODEL_FILE = "served_model.json"  # inside a Bento: ontime/serving/served_model.json
CHAMPION_FILES = ("candidate.json", "model_card.json", "params.yaml", "feature_spec.json")
PARITY_TOLERANCE = 1e-6  # max abs difference of ONNX Runtime's probabilities from PyTorch's
PARITY_ROWS = 2048  # seeded synthetic network inputs per exported network


def served_model_tag(package_json: str | Path | None = None) -> tuple[str, str]:
    """The pinned model tag to serve, and where it came from; never ``latest``.

    Inside a Bento: the tag it was built with (``served_model.json`` beside this module). Else
    ``ONTIME_MODEL``, else ``models/package.json`` (or ``ONTIME_PACKAGE``) in the working directory.
    """
    packed = Path(__file__).with_name(SERVED_MODEL_FILE)
    if packed.is_file():
        tag = str(read_json(packed)["model_tag"])
        other = os.environ.get("ONTIME_MODEL")
        if other and other != tag:
            log.warning("ONTIME_MODEL=%s ignored: this Bento serves the model it was built with", other)
        return tag, f"the Bento ({SERVED_MODEL_FILE})"
    if os.environ.get("ONTIME_MODEL"):
        tag = os.environ["ONTIME_MODEL"]
        source = "ONTIME_MODEL"
    else:
        path = Path(package_json or os.environ.get("ONTIME_PACKAGE") or "models/package.json")
        if not path.is_file():
            raise DataError(
                f"{path.resolve()}: not found, so there is no packaged model to serve; run `dvc repro "
                "package` (or `dvc pull`) in the repository and serve from its root, or set ONTIME_MODEL "
                "to a pinned tag (<name>:<version>, the name being params serve.model_name; `bentoml "
                "models list` shows them)"
            )
        tag, source = str(read_json(path)["model_tag"]), str(path)
    if tag.endswith(":latest") or ":" not in tag:
        name = tag.split(":")[0] or "<name>"
        raise DataError(
            f"model {tag!r} (from {source}) is not pinned; give a tag with its version, e.g. "
            f"{name}:<version> (`bentoml models list {name}` shows them; models/package.json names the "
            "one the pipeline packaged)"
        )
    return tag, source


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


def recorded_schema(clean: Path) -> Path:
    """The clean stage's recorded schema (``schema.json``), checked to be one the service reads."""
    path = clean / SCHEMA_FILE
    if not path.is_file():
        raise DataError(
            f"{path}: the recorded schema of the cleaned tables is missing (the request fields come "
            "from it); re-run `dvc repro clean` (or pass --clean the clean stage's folder)"
        )
    RecordedSchema.load(path)
    return path


def assemble_bundle(
    champion: Path,
    lookups: dict[str, Path],
    dest: Path,
    *,
    params: dict[str, Any],
    version: str,
    schema: Path | None = None,
) -> None:
    """Write the bundle into ``dest`` (absent or empty): champion, lookups, params, the recorded
    schema (as ``schema.json``), bundle.json."""
    shutil.copytree(champion, dest, dirs_exist_ok=True)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if schema is not None:
        shutil.copy2(schema, dest / SCHEMA_FILE)
    (dest / "lookups").mkdir()
    for table, path in lookups.items():
        shutil.copy2(path, dest / "lookups" / f"{table}.parquet")
    write_json(dest / "bundle.json", {"version": version})


def resolve_runtime(bundle: Path, runtime: Literal["auto", "native", "onnx"]) -> Runtime:
    """``serve.runtime`` for the champion in ``bundle``: ``auto`` is ``onnx`` when it holds at least
    one PyTorch network, else ``native``; ``onnx`` without a network is a clear error."""
    networks = torch_folders(bundle)
    if runtime == "auto":
        return "onnx" if networks else "native"
    if runtime == "onnx" and not networks:
        info = read_json(bundle / CANDIDATE_FILE)
        raise DataError(
            f"serve.runtime is onnx, but the champion {info.get('name')!r} ({info.get('kind')}) holds no "
            "PyTorch network to run in ONNX Runtime; set serve.runtime: native (or auto) and package again"
        )
    return runtime


def prepare_runtime(
    bundle: Path,
    runtime: Literal["auto", "native", "onnx"],
    *,
    n_rows: int = PARITY_ROWS,
    seed: int = 0,
    tolerance: float = PARITY_TOLERANCE,
) -> dict[str, Any]:
    """Make the bundle's champion runnable in the resolved ``runtime``; returns ``bundle.json``'s
    entries for it.

    With ``onnx``, each torch candidate folder of the bundle (the champion's own, or its members',
    recursively) gets ``model.onnx`` (written atomically, the same bytes on every run), which is
    loaded in ONNX Runtime and checked against the PyTorch network on ``n_rows`` seeded synthetic
    inputs (:func:`ontime.export.onnx.synthetic_inputs`): probabilities within ``tolerance``.

    Returns:
        ``{"runtime": "native"}``, or ``{"runtime": "onnx", "onnx_max_abs_diff": <the largest
        difference over the networks>}``.

    Raises:
        DataError: ``onnx`` for a champion without a network, or a network whose export differs
            by more than ``tolerance``; no ``model.onnx`` is left behind then.
    """
    resolved = resolve_runtime(bundle, runtime)
    if resolved == "native":
        return {"runtime": "native"}
    from ontime.candidates.onnx_model import OnnxCandidate
    from ontime.candidates.torch_model import TorchCandidate
    from ontime.export.onnx import export_onnx, parity_max_abs_diff, synthetic_inputs

    written: list[Path] = []
    worst = 0.0
    try:
        for folder in torch_folders(bundle):
            native = TorchCandidate.load(folder)
            written.append(export_onnx(native, folder / ONNX_FILE))
            exported = OnnxCandidate.load(folder)
            x_num, x_cat = synthetic_inputs(native.preprocessor, n_rows=n_rows, seed=seed)
            diff = parity_max_abs_diff(native, exported, x_num, x_cat)
            where = folder.relative_to(bundle).as_posix()
            log.info("package: %s exported to ONNX, max abs difference %.3g", where, diff)
            if not diff <= tolerance:
                raise DataError(
                    f"{where or '.'}: ONNX Runtime's probabilities differ from PyTorch's by up to {diff:.3g} "
                    f"(tolerance {tolerance:g}) on {n_rows} synthetic rows; set serve.runtime: native "
                    "to serve the networks in PyTorch, and package again"
                )
            worst = max(worst, diff)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return {"runtime": "onnx", "onnx_max_abs_diff": worst}


def _metadata(value: Any) -> Any:
    """BentoML metadata holds no None: write it as "unknown"."""
    if isinstance(value, dict):
        return {str(k): _metadata(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_metadata(v) for v in value]
    return "unknown" if value is None else value


def bentofile_includes(bentofile: Path, build_ctx: Path) -> list[Path]:
    """The files of ``build_ctx`` that ``bentofile.yaml``'s include/exclude select (BentoML's matcher)."""
    from pathspec import PathSpec

    spec = yaml.safe_load(bentofile.read_text()) or {}
    include = PathSpec.from_lines("gitwildmatch", spec.get("include") or ["*"])
    exclude = PathSpec.from_lines("gitwildmatch", [*(spec.get("exclude") or []), "__pycache__/"])
    return [
        p
        for p in sorted(build_ctx.rglob("*"))
        if p.is_file()
        and include.match_file(p.relative_to(build_ctx).as_posix())
        and not exclude.match_file(p.relative_to(build_ctx).as_posix())
    ]


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


def content_version(digest: str) -> str:
    """A BentoML version from a content hash (lowercase letters and digits)."""
    return digest[:20]


def stored(kind: str, tag: str) -> bool:
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        (bentoml.models.get if kind == "model" else bentoml.bentos.get)(tag)
    except NotFound:
        return False
    return True


def bento_spec(bentofile: Path, dest: Path, serve: ServeConfig, data_name: str) -> Path:
    """``bentofile.yaml`` with the Bento named after the model (``<serve.model_name>-service``): the
    default data's Bento keeps the file's name and description; another data set's gets its own."""
    spec = yaml.safe_load(bentofile.read_text()) or {}
    name = f"{serve.model_name}-service"
    if spec.get("name") == name:
        return bentofile
    spec["name"] = name
    spec["description"] = f"ontime: the {data_name} model ({serve.model_name}), served from your own data"
    dest.write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest


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
    schema = recorded_schema(clean)
    metadata = {
        "champion": card["champion"],
        "selected_by": card["selected_by"],
        "threshold": card["threshold"],
        "test_metrics": card["test_metrics"],
        "valid_metrics": card["valid_metrics"],
        "data_version": {**card["data_version"], **{str(p): md5(p) for p in [*lookups.values(), schema]}},
        "source_data": (card.get("lineage") or {}).get("collect", {}).get("outs", "unknown"),
        "params_sha256": hashlib.sha256(yaml.safe_dump(params, sort_keys=False).encode()).hexdigest(),
        "git": provenance(),
        "champion_git": card["git"],
    }
    labels = {"project": "ontime", "champion": str(card["champion"]), "data": str(params["data"]["name"])}
    with (
        atomic_outputs(out_path) as (tmp_out,),
        tempfile.TemporaryDirectory(prefix="ontime-package-") as work,
    ):
        # The bundle, hashed before bundle.json (which names the version) is written.
        staged = Path(work) / "bundle"
        staged.mkdir()
        assemble_bundle(champion, lookups, staged, params=params, version="", schema=schema)
        (staged / "bundle.json").unlink()
        runtime = prepare_runtime(staged, serve.runtime)  # model.onnx files are hashed with the rest
        files = [f for f in staged.rglob("*") if f.is_file()]
        tag = f"{serve.model_name}:{content_version(tree_sha256(staged, files))}"
        write_json(staged / "bundle.json", {"version": tag, **runtime})
        if stored("model", tag):
            log.info("package: model %s is already in the store (same content): reused", tag)
        else:
            metadata["runtime"] = runtime["runtime"]
            with bentoml.models.create(tag, labels=labels, metadata=_metadata(metadata)) as model:
                shutil.copytree(staged, model.path, dirs_exist_ok=True)
                Scorer(model.path)  # fails here, before anything is saved, when the bundle does not load
            log.info("package: saved model %s", tag)
        # The Bento's source: the included files of src/ plus the model tag it must serve.
        ctx = Path(work) / "src"
        included = bentofile_includes(Path(bentofile), Path(build_ctx))
        for path in included:
            dest = ctx / path.relative_to(build_ctx)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        write_json(ctx / "ontime" / "serving" / SERVED_MODEL_FILE, {"model_tag": tag})
        bento_file = bento_spec(
            Path(bentofile), Path(work) / "bentofile.yaml", serve, str(params["data"]["name"])
        )
        code = tree_sha256(Path(build_ctx), included)
        version = content_version(
            hashlib.sha256(f"{tag}\0{code}\0".encode() + bento_file.read_bytes()).hexdigest()
        )
        bento_tag = f"{yaml.safe_load(bento_file.read_text())['name']}:{version}"
        if stored("bento", bento_tag):
            log.info("package: Bento %s is already in the store (same model and code): reused", bento_tag)
        else:
            # Building imports the service, which resolves its model at import: pin it to this tag
            # (the installed copy of the code may be imported rather than the build context's).
            with _env("ONTIME_MODEL", tag):
                bento = bentoml.bentos.build_bentofile(
                    str(bento_file), build_ctx=str(ctx), version=version, labels={"model": tag}
                )
            bento_tag = str(bento.tag)
            log.info("package: built Bento %s", bento_tag)
        write_json(
            tmp_out,
            {
                "model_tag": tag,
                "bento_tag": bento_tag,
                "champion": card["champion"],
                "threshold": card["threshold"],
                "params_sha256": metadata["params_sha256"],
                "source_data": metadata["source_data"],
            },
        )


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Store the champion in BentoML and build a Bento."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime package``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "Save the champion as a bundle (champion files, lookup tables, the recorded schema, version) in the "
        "BentoML model store as params `serve.model_name` (`ontime-delay` for the default data; in "
        "$BENTOML_HOME, default ~/bentoml) and build a Bento from the bentofile (params `serve`: the API's "
        "names, batch size, time window)."
    )
    command.add_params(parser)
    parser.add_argument("--champion", required=True, help="champion folder (from select)")
    parser.add_argument(
        "--clean",
        required=True,
        help=(
            "folder of cleaned tables: the lookups (planes, airports) and schema.json, the recorded schema "
            "the request fields come from"
        ),
    )
    parser.add_argument("--out", required=True, help="JSON file: the model and Bento tags")
    parser.add_argument(
        "--bentofile", default="bentofile.yaml", help="Bento build file (default: %(default)s)"
    )
    parser.add_argument("--build-ctx", default="src", help="Bento build context (default: %(default)s)")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(
        params_path=args.params,
        champion_dir=args.champion,
        clean_dir=args.clean,
        out_path=args.out,
        bentofile=args.bentofile,
        build_ctx=args.build_ctx,
    )
