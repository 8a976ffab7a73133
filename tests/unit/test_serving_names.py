"""Serving one's own table: the request schema comes from the schema the clean stage recorded (no
dtypes declared), each field says what training saw, a field is required unless the model saw it
missing, and the API's names (body keys, answer keys, schema name, model name) come from params
``serve``.

Most tests build the request model straight from the composed ``data=table`` config and a schema
recorded with the clean stage's own :func:`~ontime.data.collect.record_schema` (no model needed).
The rest use a bundle of one's own made here in about a second (a tiny table through the real
featurize, a LightGBM booster of 5 trees): its Scorer, ``ontime predict`` and the real service in
this process (``Service.to_asgi``, both services, the internal scorer included).
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from ontime.candidates.lightgbm_model import LightGBMCandidate, encode
from ontime.config import section
from ontime.config.clean import LABEL, CleanConfig
from ontime.config.data import DataConfig
from ontime.config.featurize import FeaturizeConfig
from ontime.config.serve import ServeConfig
from ontime.data.collect import record_schema
from ontime.data.featurize import featurize
from ontime.errors import ConfigError, DataError
from ontime.io import write_json
from ontime.serving import package, predict
from ontime.serving.online import (
    MAX_SEEN,
    SCHEMA_FILE,
    RecordedSchema,
    RequestField,
    Scorer,
    api_models,
    describe,
    request_fields,
    request_model,
)
from ontime.serving.requestlog import read as read_log
from ontime.spec import FeatureSpec
from tests.conftest import REPO, compose_params, write_params

# The generic table (conf/data/table.yaml: data.dtypes.table is {}), label column `target`; `id` is
# an identifier, never a feature.
OWN = ["data=table", "featurize.exclude=[id]"]
FIELDS = ["age", "plan", "spend"]  # what a request carries: every column but id, target and label
MODEL = "ontime-serving-names"  # the test's own model name in the session's BentoML store


# ------------------------------------------------------------------------------------ helpers ---
@dataclass(frozen=True)
class Configs:
    data: DataConfig
    clean: CleanConfig
    feat: FeaturizeConfig
    serve: ServeConfig


def configs(params: dict[str, Any]) -> Configs:
    return Configs(
        section(params, "data", DataConfig),
        section(params, "clean", CleanConfig),
        section(params, "featurize", FeaturizeConfig),
        section(params, "serve", ServeConfig),
    )


def own_table(n: int = 240, seed: int = 0) -> pl.DataFrame:
    """A cleaned table as the clean stage leaves it: the columns, the label column and ``label``.
    ``spend`` is missing on about a tenth of the rows; nothing else ever is."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, n)
    spend = np.round(rng.random(n) * 100, 2)
    target = ((age > 50) ^ (rng.random(n) < 0.2)).astype(np.int64)
    return pl.DataFrame(
        {
            "id": np.arange(n),
            "age": age,
            "plan": rng.choice(["basic", "plus", "pro"], n),
            "spend": [None if m else s for s, m in zip(spend, rng.random(n) < 0.1, strict=True)],
            "target": target,
        },
        schema={"id": pl.Int64, "age": pl.Int64, "plan": pl.String, "spend": pl.Float64, "target": pl.Int64},
    ).with_columns(pl.col("target").cast(pl.Int8).alias(LABEL))


def recorded(
    tables: dict[str, pl.DataFrame], declared: dict[str, dict[str, str]] | None = None
) -> RecordedSchema:
    """The schema the clean stage writes for ``tables`` (``data/clean/schema.json``)."""
    return RecordedSchema.model_validate(json.loads(json.dumps(record_schema(tables, declared or {}))))


def own_fields(
    overrides: list[str] = OWN, spec: FeatureSpec | None = None, table: pl.DataFrame | None = None
) -> list[RequestField]:
    c = configs(compose_params(overrides))
    schema = recorded({"table": own_table() if table is None else table})
    return request_fields(c.data, c.clean, c.feat, c.serve, spec, schema)


def own_spec() -> FeatureSpec:
    """The feature spec featurize writes for the own table (``spend`` nullable, nothing else)."""
    c = configs(compose_params(OWN))
    _, spec = featurize({"table": own_table()}, c.feat, c.clean.label)
    return spec_of(spec)


def spec_of(raw: dict[str, Any]) -> FeatureSpec:
    features = raw["features"]
    return FeatureSpec(
        target=raw["target"],
        time_column=raw["time_column"],
        numeric=[f["name"] for f in features if f["kind"] == "numeric"],
        categorical=[f["name"] for f in features if f["kind"] == "categorical"],
        features=features,
        optional=raw["optional"],
        mask_rate=raw["mask_rate"],
    )


def missing_fields(model: type[BaseModel], record: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(json.dumps(record))
    return {".".join(map(str, e["loc"])) for e in info.value.errors() if e["type"] == "missing"}


# ---------------------------------------------------------------------- fields from the schema ---
def test_fields_come_from_the_recorded_schema_when_no_dtypes_are_declared() -> None:
    c = configs(compose_params(OWN))
    assert c.data.dtypes == {"table": {}}
    # without the recorded schema nothing is declared, so nothing could be sent (the issue)
    assert request_fields(c.data, c.clean, c.feat, c.serve) == []
    fields = own_fields()
    assert [f.name for f in fields] == FIELDS  # not id (excluded), target (label column), label
    assert {f.name: f.dtype for f in fields} == {"age": "Int64", "plan": "String", "spend": "Float64"}
    assert all(f.table == "table" and f.feature == f.name for f in fields)
    # an excluded column the model needs all the same (here: as the time column) stays a field
    with_time = own_fields(
        ["data=table", "featurize.exclude=[id,day]", "featurize.time_column=day"],
        table=own_table().with_columns(pl.date(2020, 1, 1).alias("day")),
    )
    day = next(f for f in with_time if f.name == "day")
    assert (day.dtype, day.required, day.window is not None) == ("Date", True, True)


def test_a_declared_type_wins_over_the_recorded_one() -> None:
    fields = {f.name: f for f in own_fields([*OWN, "+data.dtypes.table.age=Int32"])}
    assert fields["age"].dtype == "Int32"
    assert (fields["age"].lo, fields["age"].hi) == (-(2**31), 2**31 - 1)
    assert fields["plan"].dtype == "String"  # the others: as recorded


def test_a_recorded_type_a_request_cannot_carry_is_widened_or_refused() -> None:
    narrow = own_table().with_columns(pl.col("age").cast(pl.Int16), pl.col("spend").cast(pl.Float32))
    assert {f.name: f.dtype for f in own_fields(table=narrow)} == {
        "age": "Int64",
        "plan": "String",
        "spend": "Float64",
    }
    nested = own_table().with_columns(pl.concat_list("age", "age").alias("pair"))
    with pytest.raises(DataError, match=r"column table\.pair is List\(Int64\).*data\.dtypes\.table\.pair"):
        own_fields(table=nested)


def test_required_unless_training_saw_the_feature_missing() -> None:
    spec = own_spec()
    assert {f["name"]: f["nullable"] for f in spec.features} == {"age": False, "plan": False, "spend": True}
    fields = {f.name: f.required for f in own_fields(spec=spec)}
    assert fields == {"age": True, "plan": True, "spend": False}


def test_an_empty_record_is_refused_naming_every_required_field() -> None:
    model = request_model(own_fields(spec=own_spec()), name="Record")
    assert missing_fields(model, {}) == {"age", "plan"}
    record = model.model_validate_json(json.dumps({"age": 40, "plan": "pro"})).model_dump()
    assert record == {"age": 40, "plan": "pro", "spend": None}
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model.model_validate({"age": 40, "plan": "pro", "target": 1})  # the label is no input


def test_descriptions_show_what_training_saw() -> None:
    n = 60
    table = own_table(n).with_columns(
        pl.Series("code", [f"c{i % 25:02d}" for i in range(n)]),  # 25 values: 20 shown
        pl.Series("note", [f"note {i}" for i in range(n)]),  # 60 values: none recorded
        pl.Series("flag", [i % 2 == 0 for i in range(n)]),
        pl.date_range(pl.date(2020, 1, 1), pl.date(2020, 3, 1), eager=True).head(n).alias("day"),
        pl.Series("ratio", np.linspace(0.125, 2.5, n)),
    )
    fields = {f.name: describe(f) for f in own_fields(table=table)}
    assert "seen in training: 18 to 89 (for information; not a rule)" in fields["age"]
    assert "seen in training: basic, plus, pro" in fields["plan"]
    shown = ", ".join(f"c{i:02d}" for i in range(MAX_SEEN))
    assert f"seen in training: {shown} and 5 more" in fields["code"]
    assert "seen in training: 60 distinct values" in fields["note"]
    assert "seen in training: false, true" in fields["flag"]
    assert "seen in training: 2020-01-01 to 2020-02-29" in fields["day"]
    assert "seen in training: 0.125 to 2.5" in fields["ratio"]
    # informational: a value never seen is still accepted, within the rules
    model = request_model(own_fields(table=table))
    assert model.model_validate({"age": 200, "plan": "gold", "code": "zz"}).model_dump()["age"] == 200


# --------------------------------------------------------------------------------------- names ---
def names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


@pytest.mark.parametrize(
    ("overrides", "keys"),
    [
        ([], ("flights", "flight", "delay_probability", "delayed")),  # the default data: unchanged
        (OWN, ("records", "record", "probability", "positive")),
        (
            [*OWN, "serve.records=customers", "serve.record=customer", "serve.probability=churn_risk",
             "serve.positive=churns"],
            ("customers", "customer", "churn_risk", "churns"),
        ),
    ],
)  # fmt: skip
def test_api_models_carry_the_configured_names(overrides: list[str], keys: tuple[str, ...]) -> None:
    c = configs(compose_params(overrides))
    many, one, probability, positive = keys
    fields = request_fields(c.data, c.clean, c.feat, c.serve)
    record = request_model(fields, name=c.serve.record.title())
    api = api_models(c.serve, record, c.clean.label)
    assert names(api.predict_request) == [many]
    assert names(api.predict_one_request) == [one]
    assert names(api.prediction) == [probability, positive, "model_version"]
    assert names(api.predictions) == ["request_id", "predictions"]
    assert set(names(api.one_prediction)) == {probability, positive, "model_version", "request_id"}
    schema = api.predict_request.model_json_schema()
    assert set(schema["$defs"]) == {one.title()}
    assert schema["additionalProperties"] is False
    assert schema["properties"][many]["maxItems"] == c.serve.max_batch_size
    described = api.prediction.model_json_schema()["properties"]
    assert described[positive]["description"] == f"{probability} >= the model's decision threshold"
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        api.predict_one_request.model_validate({one: {}, "flights" if many != "flights" else "records": []})


def test_the_probability_is_described_by_the_label() -> None:
    def described(overrides: list[str]) -> str:
        c = configs(compose_params(overrides))
        api = api_models(c.serve, request_model([]), c.clean.label)
        return str(api.prediction.model_json_schema()["properties"][c.serve.probability]["description"])

    # the model card's words (LabelConfig.describe), after the same lead
    assert described([]) == (
        "probability of the positive class: `label` is 1 when `arr_delay` (table `flights`) >= 15, "
        "else 0. Rows with no `arr_delay` value count as positive (1)."
    )
    assert described(OWN) == (
        "probability of the positive class: `label` is `target` (table `table`) itself (a 0/1 or "
        "boolean column). Rows with no `target` value are dropped."
    )
    male = described([*OWN, "clean.label.column=sex", "clean.label.positive_value=male"])
    assert male == (
        "probability of the positive class: `label` is 1 when `sex` (table `table`) equals `male`, "
        "else 0. Rows with no `sex` value are dropped."
    )


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("records", "my-rows", "is not a usable name"),
        ("record", "class", "is not a usable name"),
        ("records", "_rows", "is not a usable name"),
        ("records", "kwargs", "is reserved"),
        ("positive", "model_version", "is reserved"),
        ("positive", "probability", "give them two names"),
        ("record", "prediction", "'Prediction', which the service's"),
        ("model_name", "Ontime Mine", "should match pattern"),
    ],
)
def test_unusable_serve_names_are_config_errors(key: str, value: str, text: str) -> None:
    params = compose_params(OWN)
    params["serve"][key] = value
    with pytest.raises(ConfigError, match=r"serve(\.\w+)?: .*" + text.replace("(", r"\(")):
        section(params, "serve", ServeConfig)


def test_a_missing_or_foreign_schema_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"schema\.json: the recorded schema is missing; re-run `dvc repro clean`"
    ):
        RecordedSchema.load(tmp_path / "schema.json")
    (tmp_path / "schema.json").write_text(json.dumps({"version": 2, "tables": {}}))
    with pytest.raises(DataError, match=r"not a recorded schema the service reads .*version"):
        RecordedSchema.load(tmp_path / "schema.json")
    c = configs(compose_params(OWN))
    other = recorded({"elsewhere": own_table()})
    with pytest.raises(
        DataError, match=r"the recorded schema has no table 'table' \(it has \['elsewhere'\]\)"
    ):
        request_fields(c.data, c.clean, c.feat, c.serve, schema=other)


# ------------------------------------------------------------------------ package and registry ---
def test_package_refuses_a_clean_folder_without_a_schema(tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", OWN)
    champion = tmp_path / "champion"
    champion.mkdir()
    for name in package.CHAMPION_FILES:
        (champion / name).write_text("{}")
    shutil.copy2(params, champion / "params.yaml")
    write_json(champion / "model_card.json", {"champion": "base", "threshold": 0.5})
    (tmp_path / "clean").mkdir()
    with pytest.raises(DataError, match=r"schema\.json: the recorded schema .* re-run `dvc repro clean`"):
        package.main(
            str(params),
            str(champion),
            str(tmp_path / "clean"),
            str(tmp_path / "package.json"),
            bentofile=str(REPO / "bentofile.yaml"),
            build_ctx=str(REPO / "src"),
        )
    assert not (tmp_path / "package.json").exists()


def test_the_served_model_tag_assumes_no_model_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONTIME_MODEL", "ontime-penguins")
    with pytest.raises(DataError, match=r"not pinned; .* e\.g\. ontime-penguins:<version>") as info:
        package.served_model_tag()
    assert "ontime-delay" not in str(info.value)
    monkeypatch.setenv("ONTIME_MODEL", "ontime-penguins:abc123")
    assert package.served_model_tag() == ("ontime-penguins:abc123", "ONTIME_MODEL")


def test_prune_keeps_what_is_referenced_and_other_names(tmp_path: Path) -> None:
    import bentoml

    from ontime import registry

    name = "ontime-prune-names"
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "models").mkdir()
    write_json(tmp_path / registry.PACKAGE_FILE, {"model_tag": f"{name}:keep", "bento_tag": "nope-service:x"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"serve": {"model_name": name}}))
    tags = [f"{name}:keep", f"{name}:old", "ontime-prune-other:old"]
    for tag in tags:
        with bentoml.models.create(tag) as model:
            (Path(model.path) / "bundle.json").write_text("{}")
    try:
        assert registry.store_names(tmp_path) == ({name}, {"nope-service"})
        assert registry.prune(dry_run=True, cwd=tmp_path) == [f"{name}:old"]
        assert registry.prune(dry_run=False, cwd=tmp_path) == [f"{name}:old"]
        left = {str(m.tag) for m in bentoml.models.list()}
        assert {f"{name}:keep", "ontime-prune-other:old"} <= left
        assert f"{name}:old" not in left
    finally:
        for tag in tags:
            if tag in {str(m.tag) for m in bentoml.models.list()}:
                bentoml.models.delete(tag)


# ------------------------------------------------------------------------- a bundle of one's own ---
@pytest.fixture(scope="module")
def own_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle as package writes it, for the own table: params (data=table), the real feature spec,
    a LightGBM candidate fitted on the table, model card, the recorded schema, bundle.json."""
    params = compose_params([*OWN, f"serve.model_name={MODEL}"])
    c = configs(params)
    table = own_table()
    features, spec = featurize({"table": table}, c.feat, c.clean.label)
    numeric = [f["name"] for f in spec["features"] if f["kind"] == "numeric"]
    categorical = [f["name"] for f in spec["features"] if f["kind"] == "categorical"]
    vocabularies = {
        col: sorted(features.get_column(col).drop_nulls().unique().to_list()) for col in categorical
    }
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "min_data_in_leaf": 5, "seed": 0, "num_threads": 1},
        lgb.Dataset(
            encode(features, numeric, categorical, vocabularies), features.get_column(LABEL).to_numpy()
        ),
        num_boost_round=5,
    )
    bundle = tmp_path_factory.mktemp("own_bundle") / "bundle"
    LightGBMCandidate(
        name="base",
        booster=booster,
        vocabularies=vocabularies,
        numeric=numeric,
        categorical=categorical,
        best_iteration=5,
        trained_on=["train"],
    ).save(bundle)
    write_json(bundle / "feature_spec.json", spec)
    write_json(bundle / "model_card.json", {"champion": "base", "threshold": 0.5})
    (bundle / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (bundle / "lookups").mkdir()
    write_json(bundle / SCHEMA_FILE, record_schema({"table": table}, {}))
    write_json(bundle / "bundle.json", {"version": f"{MODEL}:test"})
    return bundle


GOOD = {"age": 64, "plan": "pro", "spend": 12.5}


def test_the_scorer_of_an_own_bundle(own_bundle: Path, tmp_path: Path) -> None:
    scorer = Scorer(own_bundle)
    assert scorer.schema is not None
    assert [(f.name, f.dtype, f.required) for f in scorer.fields] == [
        ("age", "Int64", True),
        ("plan", "String", True),
        ("spend", "Float64", False),
    ]
    assert scorer.Record.__name__ == "Record"
    (p,) = scorer.predict(scorer.validate([GOOD]))
    assert set(p) == {"probability", "positive", "model_version"}
    assert p["positive"] == (p["probability"] >= 0.5)
    assert p["model_version"] == f"{MODEL}:test"
    without = scorer.predict(scorer.validate([{k: v for k, v in GOOD.items() if k != "spend"}]))[0]
    assert 0 <= without["probability"] <= 1  # optional: scored as missing, as training saw it
    with pytest.raises(DataError, match=r"(?s)row 0: 2 validation errors for Record\nage\n.*\nplan\n"):
        scorer.validate([{}])
    # a bundle packaged before the schema was recorded: only declared columns, here none
    old = tmp_path / "old"
    shutil.copytree(own_bundle, old)
    (old / SCHEMA_FILE).unlink()
    with pytest.raises(DataError, match=r"no fields \(the bundle has no schema\.json and data\.dtypes"):
        Scorer(old).check_servable()


def test_ontime_predict_writes_the_configured_columns(own_bundle: Path, tmp_path: Path) -> None:
    rows = pl.DataFrame({"id": [1, 2], "age": [30, 70], "plan": ["basic", "pro"], "spend": [None, 3.0]})
    rows.write_parquet(tmp_path / "in.parquet")
    predict.main(str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet"), str(own_bundle))
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert out.columns == [*rows.columns, "probability", "positive", "model_version"]
    assert out.get_column("model_version").to_list() == [f"{MODEL}:test"] * 2
    scorer = Scorer(own_bundle)
    with pytest.raises(DataError, match=r"input already has column\(s\) \['probability'\]"):
        predict.score_frame(scorer, out.drop("positive", "model_version"))
    with pytest.raises(DataError, match=r"row 0: .*\nplan\n  Field required"):
        predict.score_frame(scorer, rows.drop("plan"))
    with pytest.raises(DataError, match=r"row 0: .*\nage\n  Field required"):
        predict.score_frame(scorer, pl.DataFrame({"id": [1]}))  # no field at all: still each row


@pytest.fixture(scope="module")
def service(own_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """The real service module serving the own bundle from the session's BentoML store, in this
    process (``to_asgi``: both services and their startup; once per process, as BentoML's metrics
    register once). Yields a Starlette test client and the request log."""
    import bentoml

    with warnings.catch_warnings():  # "install httpx2": the test client works as it is
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    tag = f"{MODEL}:test"
    with bentoml.models.create(tag) as model:
        shutil.copytree(own_bundle, model.path, dirs_exist_ok=True)
    log = tmp_path_factory.mktemp("own_service") / "requests.jsonl"
    patch = pytest.MonkeyPatch()
    patch.setenv("ONTIME_MODEL", tag)
    patch.setenv("ONTIME_REQUEST_LOG", str(log))
    sys.modules.pop("ontime.serving.service", None)
    try:
        module = importlib.import_module("ontime.serving.service")
        with TestClient(module.OntimeDelay.to_asgi()) as client:
            yield client, log
    finally:
        sys.modules.pop("ontime.serving.service", None)
        patch.undo()
        bentoml.models.delete(tag)


def test_the_service_answers_in_the_configured_names(service: tuple[Any, Path]) -> None:
    client, log = service
    batch = client.post("/predict", json={"records": [GOOD, {"age": 20, "plan": "basic"}]})
    assert batch.status_code == 200, batch.text
    assert set(batch.json()) == {"request_id", "predictions"}
    for p in batch.json()["predictions"]:
        assert set(p) == {"probability", "positive", "model_version"}
        assert p["positive"] == (p["probability"] >= 0.5)
    one = client.post("/predict_one", json={"record": GOOD})
    assert one.status_code == 200, one.text
    assert set(one.json()) == {"request_id", "probability", "positive", "model_version"}
    assert one.json()["probability"] == pytest.approx(batch.json()["predictions"][0]["probability"])
    entries = read_log(log)
    assert len(entries) == 3
    assert entries[0]["probability"] == batch.json()["predictions"][0]["probability"]


@pytest.mark.parametrize(
    ("path", "body", "locs"),
    [
        ("/predict", {"records": [{}]}, {("records", 0, "age"), ("records", 0, "plan")}),
        ("/predict_one", {"record": {"age": 30}}, {("record", "plan")}),
        ("/predict", {"flights": [GOOD]}, {("records",), ("flights",)}),  # the default data's key
        ("/predict_one", {"record": {**GOOD, "target": 1}}, {("record", "target")}),  # the label
        ("/predict", {"records": []}, {("records",)}),
    ],
)
def test_the_service_refuses_in_the_configured_names(
    service: tuple[Any, Path], path: str, body: dict[str, Any], locs: set[tuple[Any, ...]]
) -> None:
    client, _ = service
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert {tuple(d["loc"]) for d in r.json()["detail"]} == locs


def test_the_service_documents_its_own_names(service: tuple[Any, Path]) -> None:
    client, _ = service
    spec = client.get("/docs.json").json()
    assert {"/predict", "/predict_one"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    record = schemas["Record"]
    assert set(record["properties"]) == set(FIELDS)
    assert set(record["required"]) == {"age", "plan"}
    assert "seen in training: basic, plus, pro" in record["properties"]["plan"]["description"]
    assert set(schemas["PredictRequest"]["properties"]) == {"records"}
    assert set(schemas["PredictOneRequest"]["properties"]) == {"record"}
    assert set(schemas["Prediction"]["properties"]) == {"probability", "positive", "model_version"}
    probability = schemas["Prediction"]["properties"]["probability"]["description"]
    assert "`target` (table `table`) itself" in probability
    assert "flight" not in json.dumps(spec).lower()  # nothing of the default data's names
    assert "(loc: records, index)" in spec["paths"]["/predict"]["post"]["responses"]["422"]["description"]
