"""The model card (models/champion/MODEL_CARD.md and model_card.json) reads as a reviewer expects.

select runs on a small hand-built pipeline output in a temp folder (split parts, evaluate's metrics
and predictions, candidate folders with an ensemble among them): no training, a few seconds. The
card's Markdown tables are parsed and every figure is checked against the inputs it came from.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from ontime.config import section
from ontime.config.data import DataConfig
from ontime.errors import DataError
from ontime.evaluation import model_card, select
from ontime.evaluation.metrics import choose_threshold, classification_metrics, roc_auc
from ontime.io import read_json, write_json, write_parquet
from tests.conftest import compose_params, write_params

PARTS = ("train", "train_valid", "finetune", "finetune_valid", "test")
SECTIONS = (
    "Intended use",
    "Out of scope",
    "Label",
    "Data windows",
    "What the champion is",
    "How it was chosen",
    "Results",
    "Base rate and calibration",
    "Per-segment results",
    "Caveats",
    "Features",
    "Data version (DVC md5 of the inputs)",
    "Lineage",
    "Provenance",
)
WEIGHTS = [0.3, 0.7]  # the ensemble's weights on base and lgbm
TZ = "America/New_York"


# ------------------------------------------------------------------------------------ inputs ---
@dataclass
class Run:
    root: Path
    args: list[Any]  # select.main's arguments
    test: pl.DataFrame  # the test part (features, label, time)
    valid: pl.DataFrame  # evaluate's validation predictions
    metrics: dict[str, Any]

    @property
    def champion(self) -> Path:
        return self.root / "out/champion"

    def card(self) -> dict[str, Any]:
        return read_json(self.champion / "model_card.json")

    def markdown(self) -> str:
        return (self.champion / "MODEL_CARD.md").read_text()


def _part(rng: np.random.Generator, n: int, start: dt.datetime, days: int, rate: float) -> pl.DataFrame:
    """``n`` rows over ``days`` days from ``start`` (local time), about ``rate`` of them positive,
    with categorical features of 3, 5, 2 (+ missing), 1 and 50 levels and a hidden signal."""
    signal = rng.normal(size=n)
    offset = np.log(rate / (1 - rate))
    y = (rng.random(n) < 1 / (1 + np.exp(-(offset + 1.2 * signal)))).astype(np.int8)
    minutes = np.sort(rng.integers(0, days * 24 * 60, n))
    site = rng.choice(["north", "south", "east|west"], n, p=[0.5, 0.45, 0.05])  # a pipe in a level
    grade = [None if g == "-" else str(g) for g in rng.choice(["a", "b", "-"], n, p=[0.5, 0.3, 0.2])]
    return pl.DataFrame(
        {
            "when": [start + dt.timedelta(minutes=int(m)) for m in minutes],
            "site": site,
            "brand": rng.choice(["p", "q", "r", "s", "t"], n, p=[0.4, 0.3, 0.2, 0.09, 0.01]),
            "grade": grade,
            "plain": ["only"] * n,  # one level: never a segment
            "code": [f"c{i % 50:02d}" for i in range(n)],  # 50 levels: too many to segment
            "x": signal,
            "label": y,
        }
    ).with_columns(pl.col("when").dt.replace_time_zone("UTC").dt.convert_time_zone(TZ))


def _candidate(folder: Path, info: dict[str, Any], files: dict[str, Any] | None = None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "candidate.json", info)
    for name, content in (files or {}).items():
        write_json(folder / name, content)
    return str(folder)


def build(root: Path, *, shuffle_predictions: bool = False) -> Run:
    """Split parts, evaluate's metrics and predictions, and three candidate folders under ``root``."""
    rng = np.random.default_rng(7)
    parts = {
        "train": _part(rng, 3000, dt.datetime(2013, 1, 1), 200, 0.27),
        "train_valid": _part(rng, 400, dt.datetime(2013, 9, 17), 14, 0.12),
        "finetune": _part(rng, 800, dt.datetime(2013, 10, 1), 40, 0.18),
        "finetune_valid": _part(rng, 600, dt.datetime(2013, 11, 17), 13, 0.21),
        "test": _part(rng, 1500, dt.datetime(2013, 11, 30), 31, 0.36),  # spans two months
    }
    split = root / "split"
    split.mkdir(parents=True)
    for name, df in parts.items():
        write_parquet(df, split / f"{name}.parquet")
    spec = {
        "target": "label",
        "time_column": "when",
        "features": [
            *({"name": c, "kind": "categorical"} for c in ("code", "grade", "brand", "plain", "site")),
            {"name": "x", "kind": "numeric"},
        ],
    }
    write_json(root / "spec.json", spec)

    # Predictions: lgbm is sharper than base, the ensemble blends them; all too low on test (the
    # test window's base rate is higher than the validation rows').
    preds: dict[str, pl.DataFrame] = {}
    metrics: dict[str, Any] = {}
    for part, df in (("valid", parts["finetune_valid"]), ("test", parts["test"])):
        x = df.get_column("x").to_numpy()
        base = 1 / (1 + np.exp(-(-1.4 + 0.9 * x + rng.normal(0, 1.0, df.height))))
        lgbm = 1 / (1 + np.exp(-(-1.4 + 0.9 * x + rng.normal(0, 0.9, df.height))))
        ens = WEIGHTS[0] * base + WEIGHTS[1] * lgbm
        preds[part] = df.select("when", "label").with_columns(
            pl.Series("base", base), pl.Series("lgbm", lgbm), pl.Series("ens", ens)
        )
    for name in ("base", "lgbm", "ens"):
        yv, pv = (preds["valid"].get_column(c).to_numpy() for c in ("label", name))
        yt, pt = (preds["test"].get_column(c).to_numpy() for c in ("label", name))
        t = choose_threshold(yv, pv)
        metrics[name] = {
            "threshold": round(t, 6),
            "valid": classification_metrics(yv, pv, t),
            "test": classification_metrics(yt, pt, t),
        }
    write_json(root / "evaluate.json", metrics)
    out = root / "predictions"
    out.mkdir()
    write_parquet(preds["valid"], out / "valid.parquet")
    test_preds = (
        preds["test"].sample(fraction=1.0, shuffle=True, seed=1) if shuffle_predictions else preds["test"]
    )
    write_parquet(test_preds, out / "test.parquet")

    torch_info = {"kind": "torch", "name": "base", "trained_on": ["train"], "validated_on": "train_valid"}
    lgbm_info = {
        "kind": "lightgbm",
        "name": "lgbm",
        "trained_on": ["train", "finetune"],
        "best_iteration": 40,
    }
    torch_files = {"model.json": {"architecture": "mlp", "kwargs": {}}}
    models = root / "models"
    candidates = [
        _candidate(models / "base", torch_info, torch_files),
        _candidate(models / "lgbm", lgbm_info),
        _candidate(
            models / "ens",
            {"kind": "ensemble", "name": "ens", "method": "weighted"},
            {"combiner.json": {"method": "weighted", "members": ["base", "lgbm"], "weights": WEIGHTS}},
        ),
    ]
    _candidate(models / "ens/members/base", torch_info, torch_files)
    _candidate(models / "ens/members/lgbm", lgbm_info)

    # Two folds (ontime fold's output): the members on earlier rows; the ensemble's fold predictions
    # come from the ensemble stage's folds.parquet (weighted on the other fold). The ensemble best.
    ensemble_folds = []
    for k, start in ((1, dt.datetime(2013, 10, 31)), (2, dt.datetime(2013, 10, 1))):
        df = _part(rng, 700, start, 30, 0.2)
        x = df.get_column("x").to_numpy()
        base = 1 / (1 + np.exp(-(-1.4 + 0.9 * x + rng.normal(0, 1.0, df.height))))
        lgbm = 1 / (1 + np.exp(-(-1.4 + 0.9 * x + rng.normal(0, 0.9, df.height))))
        fold = root / "folds" / str(k)
        fold.mkdir(parents=True)
        write_parquet(
            df.select("when", "label").with_columns(pl.Series("base", base), pl.Series("lgbm", lgbm)),
            fold / "predictions.parquet",
        )
        ensemble_folds.append(
            pl.DataFrame({"fold": [k] * df.height, "ens": WEIGHTS[0] * base + WEIGHTS[1] * lgbm})
        )
        end = start + dt.timedelta(days=30)
        test_window = {"start": str(start.date()), "end": str(end.date())}
        write_json(fold / "fold.json", {"windows": {"test": test_window}})

    write_parquet(pl.concat(ensemble_folds), root / "ensemble_folds.parquet")

    params = write_params(root / "params.yaml", ["select.candidates=[base,lgbm,ens]", "select.folds=[1,2]"])
    args = [
        str(params), str(root / "evaluate.json"), candidates, str(split), str(root / "spec.json"),
        str(out), str(root / "folds"), str(root / "out/champion"), str(root / "out/select.json"),
        str(root / "ensemble_folds.parquet"),
    ]  # fmt: skip
    return Run(root, args, parts["test"], preds["valid"], metrics)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("card")
    built = build(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # no dvc.lock, no git here: a card without lineage, as outside `dvc repro`
        select.main(*built.args)
    assert built.card()["champion"] == "ens", "the inputs were meant to make the ensemble the champion"
    return built


# ---------------------------------------------------------------------------------- markdown ---
def cells(line: str) -> list[str]:
    """The cells of one Markdown table row (an escaped pipe ``\\|`` stays inside its cell)."""
    assert line.startswith("|"), line
    assert line.endswith("|"), f"a table row must close with a pipe: {line!r}"
    return [c.strip() for c in re.split(r"(?<!\\)\|", line[1:-1])]


def tables(markdown: str) -> list[list[list[str]]]:
    """Every table: its header, then its rows (separator line checked and dropped)."""
    found, block = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            rows = [cells(row) for row in block]
            assert len(rows) >= 2, block
            assert all(re.fullmatch(r":?-{3,}:?", c) for c in rows[1]), block[1]
            found.append([rows[0], *rows[2:]])
            block = []
    return found


def sections(markdown: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def table_in(body: str) -> list[dict[str, str]]:
    """The first table of a section as records keyed by the header."""
    header, *rows = tables(body)[0]
    return [dict(zip(header, row, strict=True)) for row in rows]


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# ------------------------------------------------------------------------------------- tests ---
def test_every_table_is_well_formed(run: Run) -> None:
    found = tables(run.markdown())
    # label, windows, members, folds, results, base rate, calibration, segments
    assert len(found) == 8, [t[0] for t in found]
    for header, *rows in found:
        assert rows, header
        for row in rows:
            assert len(row) == len(header), (header, row)


def test_the_fold_table_holds_each_candidates_fold_figures(run: Run) -> None:
    rows = {r["candidate"].split()[0]: r for r in table_in(sections(run.markdown())["How it was chosen"])}
    assert set(rows) == {"`base`", "`lgbm`", "`ens`"}
    for name in ("base", "lgbm", "ens"):
        scores = []
        for k in (1, 2):
            df = pl.read_parquet(run.root / "folds" / str(k) / "predictions.parquet")
            ens = pl.read_parquet(run.root / "ensemble_folds.parquet").filter(pl.col("fold") == k)
            p = (ens if name == "ens" else df).get_column(name).to_numpy()
            scores.append(roc_auc(df.get_column("label").to_numpy(), p))
            assert rows[f"`{name}`"][f"fold {k}"] == f"{scores[-1]:.4f}"
        assert rows[f"`{name}`"]["mean"] == f"{np.mean(scores):.4f}"
    card = run.card()["selection"]
    assert card["by"] == "folds"
    assert card["champion"] == "ens" == card["best"]
    assert [f["fold"] for f in card["folds"]] == [1, 2]
    low, high = card["interval"]  # champion minus runner-up
    assert low <= high
    assert "(**champion**)" in rows["`ens`"]["candidate"]
    results = {r["candidate"]: r for r in table_in(sections(run.markdown())["Results"])}
    assert results["`ens`"]["folds mean ROC AUC"] == rows["`ens`"]["mean"]


def test_a_row_with_an_extra_cell_is_caught() -> None:
    # The old card's champion row: a third cell after a two-column table's closing pipe.
    broken = "| candidate | valid.roc_auc |\n|---|---|\n| lgbm_all | 0.6937 | **champion**\n"
    with pytest.raises(AssertionError, match="must close with a pipe"):
        tables(broken)


def test_sections_in_order(run: Run) -> None:
    markdown = run.markdown()
    assert markdown.startswith("# Model card: ens\n")
    assert list(sections(markdown)) == list(SECTIONS)


def test_words_come_from_the_data_config(run: Run) -> None:
    data = compose_params()["data"]
    found = sections(run.markdown())
    assert data["intended_use"] in found["Intended use"]
    assert data["out_of_scope"] in found["Out of scope"]
    assert data["description"] in run.markdown().split("## ")[0]
    assert "JFK" in data["intended_use"]  # the default problem's words live in conf/, not in code


def test_label_definition_from_clean_label(run: Run) -> None:
    label = compose_params()["clean"]["label"]
    body = sections(run.markdown())["Label"]
    assert f"`{label['column']}` (table `{label['table']}`) >= {label['threshold']:g}" in body
    assert "count as positive" in body  # missing_positive: true
    settings = {r["setting"]: r["value"] for r in table_in(body)}
    assert settings == {
        "table": f"`{label['table']}`",
        "column": f"`{label['column']}`",
        "threshold": f"{label['threshold']:g}",
        "positive_value": "-",
        "missing_positive": "true",
    }


def test_data_windows_match_the_parts(run: Run) -> None:
    rows = {r["part"]: r for r in table_in(sections(run.markdown())["Data windows"])}
    assert list(rows) == [f"`{p}`" for p in PARTS]
    for part in PARTS:
        df = pl.read_parquet(run.root / f"split/{part}.parquet")
        row = rows[f"`{part}`"]
        assert row["rows"] == f"{df.height:,}"
        assert row["positive rate"] == pct(df.get_column("label").mean())
        assert row["first"] == df.get_column("when").min().strftime("%Y-%m-%d %H:%M")
        assert row["last"] == df.get_column("when").max().strftime("%Y-%m-%d %H:%M")


def test_ensemble_members_and_weights(run: Run) -> None:
    body = sections(run.markdown())["What the champion is"]
    assert "**ensemble (weighted)** of 2 members" in body
    assert "fitted on `finetune_valid`" in body
    members = table_in(body)
    assert [(m["member"], m["kind"], m["weight"]) for m in members] == [
        ("`base`", "MLP", f"{WEIGHTS[0]:.4f}"),
        ("`lgbm`", "LightGBM", f"{WEIGHTS[1]:.4f}"),
    ]
    assert members[1]["trained on"] == "`train`, `finetune`"
    model = run.card()["model"]
    assert [m["weight"] for m in model["members"]] == WEIGHTS


def test_champion_kinds(tmp_path: Path) -> None:
    lgbm = tmp_path / "lgbm"
    _candidate(lgbm, {"kind": "lightgbm", "name": "lgbm", "trained_on": ["train"], "best_iteration": 12})
    assert model_card.describe_model(lgbm)["type"] == "LightGBM"
    bag = tmp_path / "bag"
    member = {"kind": "torch", "name": "s0", "trained_on": ["train"]}
    arch = {"model.json": {"architecture": "ft_transformer", "kwargs": {}}}
    for seed in ("s0", "s1", "s2"):
        _candidate(bag / "members" / seed, {**member, "name": seed}, arch)
    _candidate(
        bag,
        {"kind": "ensemble", "name": "base", "method": "weighted", "bagging_seeds": 3},
        {"combiner.json": {"method": "weighted", "members": ["s0", "s1", "s2"], "weights": [1 / 3] * 3}},
    )
    assert model_card.describe_model(bag)["type"] == "FT-Transformer, 3 seeds averaged"
    stack = tmp_path / "stack"
    _candidate(stack / "members/lgbm", {"kind": "lightgbm", "name": "lgbm", "trained_on": ["train"]})
    _candidate(stack / "members/base", {**member, "name": "base"}, {"model.json": {"architecture": "mlp"}})
    _candidate(
        stack,
        {"kind": "ensemble", "name": "st", "method": "stacking"},
        {
            "combiner.json": {
                "method": "stacking",
                "members": ["lgbm", "base"],
                "coef": [1.5, -0.25],
                "intercept": 0.1,
            }
        },
    )
    described = model_card.describe_model(stack)
    section_text = model_card._model_section(described, "finetune_valid")
    header, *rows = tables(section_text)[0]
    assert header[-1] == "coefficient (on the member's logit)"
    assert [r[-1] for r in rows] == ["1.5000", "-0.2500"]
    assert "intercept 0.1000" in section_text


def test_results_list_every_candidate_with_the_champion_in_a_column(run: Run) -> None:
    rows = table_in(sections(run.markdown())["Results"])
    assert [r["candidate"] for r in rows] == ["`base`", "`lgbm`", "`ens`"]
    assert [r["selected"] for r in rows] == ["", "", "**champion**"]
    for r in rows:
        block = run.metrics[r["candidate"].strip("`")]
        for part in ("valid", "test"):
            assert r[f"{part} ROC AUC"] == f"{block[part]['roc_auc']:.4f}"
            assert r[f"{part} PR AUC"] == f"{block[part]['pr_auc']:.4f}"
            assert r[f"{part} log loss"] == f"{block[part]['log_loss']:.4f}"
            assert r[f"{part} Brier"] == f"{block[part]['brier']:.4f}"
    # a candidate evaluate scored but select may not choose is listed, and said so
    card = run.card()
    card["results"][1]["eligible"] = False  # lgbm
    rows = table_in(sections(model_card.card_markdown(card))["Results"])
    assert [r["selected"] for r in rows] == ["", "not a select.candidate", "**champion**"]


def test_base_rate_and_calibration(run: Run) -> None:
    body = sections(run.markdown())["Base rate and calibration"]
    rates = {r["rows"]: r for r in table_in(body)}
    bins = tables(body)[1]
    y_test = run.test.get_column("label").to_numpy()
    p_test = pl.read_parquet(run.root / "predictions/test.parquet").get_column("ens").to_numpy()
    valid = rates["validation (`finetune_valid`)"]
    assert valid["positive rate"] == pct(run.valid.get_column("label").mean())
    assert valid["mean predicted"] == pct(run.valid.get_column("ens").mean())
    assert rates["test"]["positive rate"] == pct(y_test.mean())
    assert rates["test"]["mean predicted"] == pct(p_test.mean())
    header, *rows = bins
    assert header == ["bin", "rows", "mean predicted", "observed rate"]
    assert len(rows) == 10
    assert rows[0][0] == "[0.0, 0.1)"
    assert rows[-1][0] == "[0.9, 1.0]"
    assert sum(int(r[1].replace(",", "")) for r in rows) == len(y_test) == 1500
    # one bin against a direct count
    hit = (p_test >= 0.2) & (p_test < 0.3)
    assert rows[2][1] == f"{hit.sum():,}"
    assert rows[2][3] == f"{y_test[hit].mean():.3f}"
    assert 0 < run.card()["calibration"]["ece"] < 1


def test_per_segment_results(run: Run) -> None:
    card = run.card()
    segments = card["segments"]
    # complete features first (site: 3 levels, brand: 5), then the fewest levels (grade: 2 + missing);
    # plain (1 level) and code (50) are never segments; then the month of the time column
    features = list(dict.fromkeys((s["feature"], s["by"]) for s in segments))
    assert features == [("site", "level"), ("brand", "level"), ("grade", "level"), ("when", "month")]
    y = run.test.get_column("label").to_numpy()
    p = pl.read_parquet(run.root / "predictions/test.parquet").get_column("ens").to_numpy()
    for feature in features:
        assert sum(s["rows"] for s in segments if (s["feature"], s["by"]) == feature) == len(y), feature
    months = {s["level"]: s["rows"] for s in segments if s["by"] == "month"}
    local = run.test.get_column("when").dt.strftime("%Y-%m")  # local time, as the windows are cut
    assert months == {m: int((local == m).sum()) for m in ("2013-11", "2013-12")}
    grade = {s["level"]: s for s in segments if s["feature"] == "grade"}
    assert grade["(missing)"]["rows"] == run.test.get_column("grade").null_count() > 0
    site = run.test.get_column("site").to_numpy()
    north = site == "north"
    assert {s["level"]: s for s in segments}["north"]["roc_auc"] == pytest.approx(
        roc_auc(y[north], p[north]), abs=1e-6
    )
    small = [s for s in segments if s["rows"] < model_card.MIN_SEGMENT_ROWS]
    assert small  # east|west (5%) and brand t (1%)
    assert all(s["roc_auc"] is None for s in small)
    # the table: the same rows, the pipe in "east|west" escaped (a cell, not a column)
    rows = table_in(sections(run.markdown())["Per-segment results"])
    assert len(rows) == len(segments)
    west = next(r for r in rows if r["level"] == "east\\|west")
    assert west["ROC AUC"] == "-"
    assert next(r for r in rows if r["level"] == "2013-12")["feature"] == "`when` (month)"


def test_a_single_class_segment_has_no_auc() -> None:
    y = np.r_[np.zeros(150, dtype=np.int64), np.arange(150) % 2]
    p = np.linspace(0, 1, 300)
    test = pl.DataFrame({"g": ["all_negative"] * 150 + ["mixed"] * 150})
    got = {s["level"]: s for s in model_card.segment_results(test, y, p, categorical=["g"], time_column=None)}
    assert got["all_negative"]["roc_auc"] is None
    assert got["all_negative"]["positive_rate"] == 0
    assert got["mixed"]["roc_auc"] is not None


def test_caveats_state_both_positive_rates(run: Run) -> None:
    caveats = sections(run.markdown())["Caveats"]
    ens = run.metrics["ens"]
    first = caveats.strip().splitlines()[0]
    assert f"chosen on `finetune_valid` at a {pct(ens['valid']['positive_rate'])} positive rate" in first
    assert f"applied to the test window at {pct(ens['test']['positive_rate'])}" in first
    assert ens["valid"]["positive_rate"] != ens["test"]["positive_rate"]
    test = run.test.get_column("when")
    start, end = (v.strftime("%Y-%m-%d %H:%M") for v in (test.min(), test.max()))
    assert f"The test window is one period ({start} to {end}, 1,500 rows)" in caveats
    # the inputs under-predict the test window's rate: the card says so, with the gap
    gap = ens["test"]["positive_rate"] - run.card()["base_rate"]["test"]["mean_predicted"]
    assert gap > 0.02
    assert f"under-predicts the rate by {100 * gap:.1f} points" in caveats


def test_lineage_and_provenance_without_dirty_wording(run: Run) -> None:
    found = sections(run.markdown())
    assert "select ran outside `dvc repro`" in found["Lineage"]  # this run had no dvc.lock
    assert run.card()["lineage"] is None
    assert found["Provenance"].strip() == "git commit unknown (not run inside a git repository)."
    text = run.markdown().lower()
    assert "dirty" not in text
    assert "uncommitted" not in text


def test_predictions_from_another_run_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = build(tmp_path, shuffle_predictions=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="do not hold the same rows in the same order"):
        select.main(*built.args)
    assert not built.champion.exists()


def test_every_data_config_has_the_card_words() -> None:
    for overrides in ([], ["data=table"]):
        data = section(compose_params(overrides), "data", DataConfig)
        assert data.description.strip()
        assert data.intended_use.strip()
        assert data.out_of_scope.strip()
    # a bundle packaged before the words existed still loads (its params.yaml lacks them)
    params = compose_params()
    del params["data"]["intended_use"]
    assert section(params, "data", DataConfig).intended_use == ""


def test_the_json_card_renders_the_markdown_card(run: Run) -> None:
    # model_card.json holds every figure the Markdown shows: rendering it again gives the same text
    assert model_card.card_markdown(run.card()) == run.markdown()
