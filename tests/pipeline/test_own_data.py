"""Your own data, end to end: a real public table (Palmer penguins, from its PyPI package) through
`dvc exp run` with no dtypes declared, an integer year as the time column, served by a real
`bentoml serve`; a second data file does not invalidate the first experiment's collect."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest

from ontime.serving.local import serve_bento
from tests.conftest import TINY, copy_repo, env, run

# The README's worked example (section "Worked example: Palmer penguins"), shrunk like the smoke profile.
PENGUINS_OVERRIDES = [
    "data=table",
    "data.name=penguins",
    "data.tables.table=data/external/penguins.csv",
    "clean.label.column=sex",
    "clean.label.positive_value=male",
    "featurize.time_column=year",
    "featurize.time_format=year",
    "split.method=time",
    "split.windows.train={start: '2007-01-01', end: '2008-01-01'}",
    "split.windows.finetune={start: '2008-01-01', end: '2009-01-01'}",
    "split.windows.test={start: '2009-01-01', end: '2010-01-01'}",
    "split.valid_days=null",
    "split.valid_share=0.25",
    "baseline.min_child_samples=5",
    "baseline.cv_folds=0",  # its expanding-window folds are by month; one year has one
    "select.folds=[]",  # three years hold no walk-forward folds before 2009: select on the validation rows
    "serve.time_window={start: '2007-01-01', end: '2100-01-01'}",
]
SHRINK = ["experiment=smoke", *TINY]


def penguins_csv() -> Path:
    spec = importlib.util.find_spec("palmerpenguins")
    assert spec is not None, "pip install palmerpenguins (a dev dependency)"
    assert spec.origin is not None
    return Path(spec.origin).parent / "data" / "penguins.csv"


def exp_run(repo: Path, name: str, overrides: list[str], *targets: str) -> str:
    args = ["dvc", "exp", "run", "-n", name, *(a for o in overrides for a in ("-S", o)), *targets]
    return run(args, repo).stdout


@pytest.fixture(scope="module")
def penguins_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_repo(tmp_path_factory.mktemp("own_data") / "repo")
    shutil.copy2(penguins_csv(), repo / "data/external/penguins.csv")
    run(["dvc", "add", "-q", "data/external/penguins.csv"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "penguins"], repo)
    exp_run(repo, "penguins", [*SHRINK, *PENGUINS_OVERRIDES])
    return repo


def test_an_own_csv_without_dtypes_goes_through_every_stage(penguins_repo: Path) -> None:
    repo = penguins_repo
    schema = json.loads((repo / "data/raw/schema.json").read_text())
    columns = schema["tables"]["table"]["columns"]
    # nothing declared: every type inferred, and recorded
    assert {c: v["dtype"] for c, v in columns.items()} == {
        "species": "String",
        "island": "String",
        "bill_length_mm": "Float64",
        "bill_depth_mm": "Float64",
        "flipper_length_mm": "Int64",
        "body_mass_g": "Int64",
        "sex": "String",
        "year": "Int64",
    }
    assert not any(v["declared"] for v in columns.values())
    assert columns["island"]["categories"] == ["Biscoe", "Dream", "Torgersen"]
    assert (columns["year"]["min"], columns["year"]["max"]) == (2007, 2009)

    # the integer year is the time column: each part is its year
    split = json.loads((repo / "metrics/split.json").read_text())
    assert split["train"]["first"].startswith("2007")
    assert split["train_valid"]["last"].startswith("2007")
    assert split["finetune"]["first"].startswith("2008")
    assert split["test"]["first"].startswith("2009")
    assert split["test"]["last"].startswith("2009")
    # 11 penguins have no sex: dropped (clean.label.missing_positive: false); 120 measured in 2009
    assert sum(p["rows"] for p in split.values()) == 333
    train = split["train"]["rows"] + split["train_valid"]["rows"]
    assert split["train_valid"]["rows"] == round(0.25 * train)

    package = json.loads((repo / "models/package.json").read_text())
    assert package["model_tag"].startswith("ontime-penguins:")
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    assert all(0.5 < c["test"]["roc_auc"] <= 1 for c in evaluation.values()), evaluation


def test_an_own_model_is_served_with_its_own_names(penguins_repo: Path, tmp_path: Path) -> None:
    repo = penguins_repo
    package = json.loads((repo / "models/package.json").read_text())
    record = {
        "species": "Gentoo",
        "island": "Biscoe",
        "bill_length_mm": 50.0,
        "bill_depth_mm": 15.2,
        "flipper_length_mm": 218,
        "body_mass_g": 5700,
        "year": 2009,
    }
    with serve_bento(package["bento_tag"], env=env(), output=tmp_path / "serve.log", cwd=repo) as url:
        ok = httpx.post(f"{url}/predict", json={"records": [record]}, timeout=60)
        assert ok.status_code == 200, ok.text
        (answer,) = ok.json()["predictions"]
        assert 0 <= answer["probability"] <= 1
        assert isinstance(answer["positive"], bool)
        assert answer["model_version"] == package["model_tag"]

        one = httpx.post(f"{url}/predict_one", json={"record": record}, timeout=60)
        assert one.status_code == 200, one.text
        assert one.json()["probability"] == pytest.approx(answer["probability"], abs=1e-9)

        # every field was measured on every labelled penguin: all required, an empty record is a 4xx
        empty = httpx.post(f"{url}/predict", json={"records": [{}]}, timeout=60)
        assert empty.status_code == 400, empty.text
        missing = {tuple(d["loc"]) for d in empty.json()["detail"]}
        assert ("records", 0, "body_mass_g") in missing
        assert ("records", 0, "year") in missing

        flight_names = httpx.post(f"{url}/predict", json={"flights": [record]}, timeout=60)
        assert flight_names.status_code == 400, flight_names.text
        docs = httpx.get(f"{url}/docs.json", timeout=30).json()
        text = json.dumps(docs)
        assert '"records"' in text
        assert '"flights"' not in text
        assert "body_mass_g" in text
        # still serving after bad requests
        assert httpx.post(f"{url}/predict", json={"records": [record]}, timeout=60).status_code == 200


def test_experiments_on_different_files_do_not_invalidate_each_other(penguins_repo: Path) -> None:
    repo = penguins_repo
    # a second file: the 2008-2009 penguins only, an experiment of its own
    other = pl.read_csv(repo / "data/external/penguins.csv", null_values=["NA"]).filter(
        pl.col("year") >= 2008
    )
    other.write_csv(repo / "data/external/recent.csv", null_value="NA")
    run(["dvc", "add", "-q", "data/external/recent.csv"], repo)
    # data/external/.gitignore ignores every data file once and for all: `dvc add` does not edit it
    status = run(["git", "status", "--short", "--untracked-files=all", "data/external"], repo).stdout
    assert [line[3:] for line in status.splitlines()] == ["data/external/recent.csv.dvc"], status
    run(["git", "add", "data/external/recent.csv.dvc"], repo)
    run(["git", "commit", "-qm", "recent penguins"], repo)
    # the penguins experiment's collect depends on penguins.csv only: a new file does not touch it
    status = run(["dvc", "status", "collect", "--json"], repo).stdout
    assert json.loads(status) == {}, status

    recent = [o if not o.startswith("data.tables.table=") else "data.tables.table=data/external/recent.csv"
              for o in PENGUINS_OVERRIDES]  # fmt: skip
    out = exp_run(repo, "recent", [*SHRINK, *recent], "collect")
    assert "Running stage 'collect'" in out, out
    raw = pl.read_parquet(repo / "data/raw/table.parquet")
    assert raw.get_column("year").min() == 2008

    # back to the first experiment: its collect is up to date, the newer file stays ignored
    run(["dvc", "exp", "apply", "penguins"], repo)
    run(["dvc", "checkout", "-q"], repo, check=False)
    assert json.loads(run(["dvc", "status", "collect", "--json"], repo).stdout) == {}
    assert run(["git", "status", "--short", "data/external"], repo).stdout == ""
    assert pl.read_parquet(repo / "data/raw/table.parquet").get_column("year").min() == 2007


def write_variant(repo: Path, name: str, df: pl.DataFrame, *, index: bool = False) -> str:
    """A variant of the penguins table as data/external/<name>.csv, added to DVC and committed."""
    path = repo / "data/external" / f"{name}.csv"
    if index:  # a row index saved with a blank header, as pandas' to_csv() writes it
        df = df.with_row_index("")
    df.write_csv(path, null_value="NA")
    run(["dvc", "add", "-q", str(path.relative_to(repo))], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", name], repo)
    return f"data.tables.table=data/external/{name}.csv"


def fails(repo: Path, overrides: list[str], target: str) -> str:
    args = ["dvc", "exp", "run", *(a for o in overrides for a in ("-S", o)), target]
    proc = run(args, repo, check=False)
    assert proc.returncode != 0, proc.stdout
    return proc.stdout + proc.stderr


def test_silent_mistakes_stop_the_run_naming_the_fix(repo: Path) -> None:
    penguins = pl.read_csv(penguins_csv(), null_values=["NA"])
    base = [o for o in PENGUINS_OVERRIDES if not o.startswith("data.tables.table=")]

    # a stray text value in a numeric column: not a silent categorical feature
    stray = penguins.with_columns(pl.col("body_mass_g").cast(pl.String))
    stray = stray.with_columns(
        pl.when(pl.int_range(pl.len()) == 7)
        .then(pl.lit("abc"))
        .otherwise(pl.col("body_mass_g"))
        .alias("body_mass_g")
    )
    said = fails(repo, [*base, write_variant(repo, "stray", stray)], "collect")
    assert "column 'body_mass_g' looks numeric, but 1 of its" in said
    assert "'abc'" in said
    assert "data.mixed_types=missing" in said

    # the target's name misspelt: the message names the real setting and the closest column
    table = write_variant(repo, "plain", penguins)
    said = fails(repo, [*base, table, "clean.label.column=sexx"], "clean")
    assert "clean.label.column" in said
    assert "did you mean 'sex'" in said

    # a typo in featurize.exclude: not silently ignored
    said = fails(repo, [*base, table, "featurize.exclude=[islnd]"], "featurize")
    assert "featurize.exclude names 'islnd'" in said
    assert "did you mean 'island'" in said

    # columns that rebuild the label's source between them: the audit stops the graph before training
    u = pl.Series(np.random.default_rng(0).uniform(0.2, 0.8, penguins.height))
    leaky = penguins.with_columns(
        (pl.col("body_mass_g") * u).alias("mass_part_a"),
        (pl.col("body_mass_g") * (1 - u)).alias("mass_part_b"),
    ).drop("sex")
    mass = [o for o in base if not o.startswith("clean.label.")]
    mass += [
        "clean.label.column=body_mass_g",
        "clean.label.threshold=4000",
        "clean.label.missing_positive=false",
    ]
    said = fails(repo, [*mass, write_variant(repo, "leaky", leaky)], "analyze")
    assert "mass_part_a" in said
    assert "mass_part_b" in said
    assert "analyze.max_source_r2" in said

    # a saved row index (blank header): dropped with a word in the log, never a feature
    indexed = [*base, write_variant(repo, "indexed", penguins, index=True)]
    run(["ontime", "params", *indexed], repo)
    proc = run(["dvc", "repro", "analyze"], repo)
    out = proc.stdout + proc.stderr
    schema = json.loads((repo / "data/raw/schema.json").read_text())
    assert list(schema["dropped"]["table"]) == [""]
    spec = json.loads((repo / "data/features/spec.json").read_text())
    assert {f["name"] for f in spec["features"]} == {
        "species", "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"
    }  # fmt: skip
    assert "Running stage 'analyze'" in out
    assert "is a saved row index, not data; to keep it, give the" in out
