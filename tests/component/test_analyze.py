"""The analyze stage: statistics, univariate AUC, correlations, PCA, and the leakage audit that fails
the stage on a leak. Small synthetic train parts with planted leaks, plus the real smoke data."""

from __future__ import annotations

import copy
import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from ontime.config import section
from ontime.config.analyze import AnalyzeConfig
from ontime.data.analyze import FIX, main, pca, source_check
from ontime.errors import ConfigError, DataError
from ontime.params import validate
from ontime.spec import LABEL_SOURCE
from tests.conftest import BIN, compose_params, run

PARAMS = compose_params()
N = 3000
NO_SOURCE = {"column": None, "verdict": "skipped"}  # audit.json's joint check without a label source


def frame(n: int = N, seed: int = 0, rate: float = 0.3) -> pl.DataFrame:
    """A clean train part: weak real signals, noise, a correlated pair, some random missing values."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(np.int64)
    noise = rng.normal(size=n)
    return pl.DataFrame(
        {
            "signal": y * 0.5 + rng.normal(size=n),
            "noise": noise,
            "twin": noise * 0.8 + rng.normal(scale=0.6, size=n),
            "sparse": pl.Series(np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n))).fill_nan(None),
            "count": rng.integers(0, 10, size=n).astype(np.int32),
            "carrier": rng.choice(["AA", "B6", "DL", "UA", "WN"], size=n),
            "label": y,
        }
    )


def spec_for(df: pl.DataFrame, source: str | None = None) -> dict[str, Any]:
    features = []
    for name in df.columns:
        if name in ("label", LABEL_SOURCE):
            continue
        dtype = df.schema[name]
        features.append(
            {
                "name": name,
                "kind": "categorical" if dtype == pl.String else "numeric",
                "dtype": str(dtype),
                "nullable": df.get_column(name).null_count() > 0,
            }
        )
    spec = {"version": 1, "target": "label", "time_column": None, "features": features}
    return spec | ({"label_source": source} if source else {})


def setup(tmp_path: Path, df: pl.DataFrame, *, source: str | None = None, **analyze: Any) -> dict[str, str]:
    """Write the train part, its spec (``source``: the label's source column, its values in the
    part's LABEL_SOURCE column) and params (the real config with ``analyze`` overrides)."""
    (tmp_path / "split").mkdir()
    df.write_parquet(tmp_path / "split/train.parquet")
    (tmp_path / "spec.json").write_text(json.dumps(spec_for(df, source)))
    params = copy.deepcopy(PARAMS)
    params["analyze"].update(analyze)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return {
        "params_path": str(tmp_path / "params.yaml"),
        "split_dir": str(tmp_path / "split"),
        "spec_path": str(tmp_path / "spec.json"),
        "out_dir": str(tmp_path / "out"),
        "metrics_path": str(tmp_path / "metrics.json"),
    }


def read(tmp_path: Path, name: str) -> Any:
    return json.loads((tmp_path / "out" / name).read_text())


def test_planted_numeric_leak_is_flagged_and_fails_the_stage(tmp_path: Path) -> None:
    df = frame()
    rng = np.random.default_rng(1)
    df = df.with_columns(leaky=pl.col("label") + pl.Series(rng.normal(scale=0.05, size=df.height)))
    args = setup(tmp_path, df)
    with pytest.raises(DataError, match=r"leaky: univariate ROC AUC 1\.000") as err:
        main(**args)
    assert FIX in str(err.value)
    assert "signal" not in str(err.value)  # only the leak
    # The report is written whole so the user can look; the metrics show the failure.
    audit = read(tmp_path, "audit.json")
    assert audit["passed"] is False
    assert list(audit["flagged"]) == ["leaky"]
    assert audit["flagged"]["leaky"][0]["check"] == "roc_auc"
    assert json.loads(Path(args["metrics_path"]).read_text())["n_flagged"] == 1
    assert (tmp_path / "out/index.html").is_file()
    assert 'class="flagged"><td class="name">1. leaky' in (tmp_path / "out/index.html").read_text()


def test_missingness_that_identifies_the_label_is_flagged(tmp_path: Path) -> None:
    df = frame()
    positives = np.flatnonzero(df.get_column("label").to_numpy() == 1)[:150]
    gone = np.ones(df.height, dtype=bool)
    gone[positives] = False
    values = np.where(gone, np.random.default_rng(2).normal(size=df.height), np.nan)
    df = df.with_columns(tail=pl.Series(values).fill_nan(None))
    args = setup(tmp_path, df)
    with pytest.raises(DataError) as err:
        main(**args)
    message = str(err.value)
    assert "tail: missing in 150 rows of which 150 (100.0%) are positive" in message
    assert FIX in message
    assert [f["check"] for f in read(tmp_path, "audit.json")["flagged"]["tail"]] == ["missing_group"]
    # Its present rows are not a leak; random missingness of the same size is not either.
    assert "sparse" not in message


def test_pure_groups_in_rare_label_data_are_not_flagged(tmp_path: Path) -> None:
    # 1% positives: a missing group of 300 all-negative rows is as pure as the data, not a leak.
    df = frame(rate=0.01)
    missing = (np.arange(df.height) < 300) & (df.get_column("label").to_numpy() == 0)
    df = df.with_columns(often=pl.when(pl.Series(missing)).then(None).otherwise(pl.col("noise")))
    args = setup(tmp_path, df)
    main(**args)
    assert read(tmp_path, "audit.json") == {
        "accepted": {},
        "flagged": {},
        "label_source": NO_SOURCE,
        "passed": True,
    }


def test_accept_with_a_reason_lets_it_pass(tmp_path: Path) -> None:
    df = frame().with_columns(leaky=pl.col("label") * 2.0)
    reason = "a known post-hoc field, dropped by the model's own selection"
    args = setup(tmp_path, df, accept={"leaky": reason})
    main(**args)
    audit = read(tmp_path, "audit.json")
    assert audit == {
        "accepted": {"leaky": {"checks": ["roc_auc"], "reason": reason}},
        "flagged": {},
        "label_source": NO_SOURCE,
        "passed": True,
    }
    page = (tmp_path / "out/index.html").read_text()
    assert html.escape(reason) in page
    assert 'class="accepted"' in page


def test_clean_frame_passes_writes_all_outputs_deterministically(tmp_path: Path) -> None:
    args = setup(tmp_path, frame())
    main(**args)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["analysis.json", "audit.json", "index.html"]
    assert read(tmp_path, "audit.json") == {
        "accepted": {},
        "flagged": {},
        "label_source": NO_SOURCE,
        "passed": True,
    }
    metrics = json.loads(Path(args["metrics_path"]).read_text())
    assert metrics == {
        "n_accepted": 0,
        "n_features": 6,
        "n_flagged": 0,
        "label_source_r2": None,
        "n_rows": N,
        "pca_components_90": metrics["pca_components_90"],
        "top_feature": "signal",
        "top_feature_roc_auc": metrics["top_feature_roc_auc"],
    }
    assert 0.6 < metrics["top_feature_roc_auc"] < 0.8
    analysis = read(tmp_path, "analysis.json")
    assert analysis["ranking"][0] == "signal"
    signal = analysis["features"]["signal"]
    assert signal["direction"] == "higher"
    assert set(signal["stats"]) == {"count", "mean", "std", "min", "p05", "p25", "p50", "p75", "p95", "max"}
    sparse = analysis["features"]["sparse"]["missing"]
    assert 0.07 < sparse["share"] < 0.13
    assert sparse["rows"] + sparse["present_rows"] == N
    carrier = analysis["features"]["carrier"]["stats"]
    assert carrier["n_unique"] == 5
    assert len(carrier["top"]) == 5
    assert abs(sum(t["share"] for t in carrier["top"]) - 1) < 1e-3
    pairs = analysis["correlation"]["top_pairs"]
    assert {pairs[0]["a"], pairs[0]["b"]} == {"noise", "twin"}
    assert pairs[0]["r"] > 0.7
    page = (out / "index.html").read_text()
    assert "<svg" in page
    assert "<script" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", page)
    # Byte-identical on a re-run.
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    first_metrics = Path(args["metrics_path"]).read_bytes()
    main(**args)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert Path(args["metrics_path"]).read_bytes() == first_metrics


def test_cli_fails_with_exit_2_and_names_the_leak(tmp_path: Path) -> None:
    df = frame().with_columns(leaky=1.0 - pl.col("label"))
    args = setup(tmp_path, df)
    proc = run(
        [
            str(BIN / "ontime"),
            "analyze",
            "--params", args["params_path"],
            "--split", args["split_dir"],
            "--spec", args["spec_path"],
            "--out", args["out_dir"],
            "--metrics", args["metrics_path"],
        ],
        tmp_path,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "ontime analyze: error:" in proc.stderr
    assert "leaky: univariate ROC AUC 1.000" in proc.stderr
    assert read(tmp_path, "analysis.json")["features"]["leaky"]["direction"] == "lower"


def test_id_like_categorical_does_not_look_predictive(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    df = frame().with_columns(flight=pl.Series(rng.integers(0, 1500, size=N)).cast(pl.String))
    args = setup(tmp_path, df)
    main(**args)
    auc = read(tmp_path, "analysis.json")["features"]["flight"]["roc_auc"]
    assert auc < 0.6
    # The naive in-sample encoding of the same ids would look strongly predictive.
    y = df.get_column("label").to_numpy()
    means = df.group_by("flight").agg(pl.col("label").mean().alias("m"))
    naive = df.join(means, on="flight", how="left").get_column("m").to_numpy()
    assert roc_auc_score(y, naive) > 0.8
    # A real categorical signal still shows.
    shifted = frame().with_columns(
        carrier=pl.when(pl.col("label") == 1).then(pl.lit("AA")).otherwise(pl.col("carrier")).alias("carrier")
    )
    other = tmp_path / "shifted"
    other.mkdir()
    main(**setup(other, shifted))
    assert read(other, "analysis.json")["features"]["carrier"]["roc_auc"] > 0.8


def test_pca_explained_variance_is_sorted_and_sums_to_at_most_one() -> None:
    rng = np.random.default_rng(4)
    base = rng.normal(size=(2000, 1))
    block = np.column_stack(
        [
            base[:, 0] * 10 + 1000,
            base[:, 0] + rng.normal(scale=0.1, size=2000),
            rng.normal(size=2000),
            rng.normal(size=2000),
            np.full(2000, 3.0),  # constant: no variance, left out
            np.where(rng.random(2000) < 0.2, np.nan, rng.normal(size=2000)),
        ]
    )
    result = pca(block, ["a", "a_copy", "u", "v", "const", "holey"])
    ratio = result["explained_variance_ratio"]
    assert result["dropped"] == ["const"]
    assert len(ratio) == 5
    assert sum(ratio) <= 1 + 1e-9
    assert ratio == sorted(ratio, reverse=True)
    assert ratio[0] == pytest.approx(2 / 5, abs=0.02)  # a and a_copy share one component
    assert result["cumulative"][-1] == pytest.approx(1.0)
    assert result["components_for_90"] == 4
    top = result["top_loadings"]["PC1"]
    assert {top[0]["feature"], top[1]["feature"]} == {"a", "a_copy"}
    assert top[0]["loading"] > 0  # the largest loading's sign is fixed positive


def test_bad_config_gives_a_clear_error(tmp_path: Path) -> None:
    bad = copy.deepcopy(PARAMS)
    bad["analyze"]["max_aucc"] = 0.9
    with pytest.raises(ConfigError, match=r"analyze\.max_aucc: unknown key"):
        section(bad, "analyze", AnalyzeConfig)
    with pytest.raises(ConfigError, match=r"analyze\.max_aucc: unknown key"):
        validate(bad)  # `ontime params` checks the section too
    bad = copy.deepcopy(PARAMS)
    bad["analyze"]["max_group_purity"] = 1.5
    with pytest.raises(ConfigError, match=r"analyze\.max_group_purity: .*1\.5"):
        section(bad, "analyze", AnalyzeConfig)
    bad = copy.deepcopy(PARAMS)
    bad["analyze"]["accept"] = {"signal": "  "}
    with pytest.raises(ConfigError, match=r"accept entries need a reason.*signal"):
        section(bad, "analyze", AnalyzeConfig)
    args = setup(tmp_path, frame(), accept={"tailnum": "no such feature here"})
    with pytest.raises(ConfigError, match=r"analyze\.accept names \['tailnum'\], which are not features"):
        main(**args)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------- joint leak: the label's source ---
SHARES = [f"r{star}" for star in range(1, 11)]


def films(n: int = N, seed: int = 0, *, shares: bool = True) -> pl.DataFrame:
    """A film table whose label is ``rating >= 7``, the rating carried as the label's source. Ordinary
    features know a little of the rating; ``r1``..``r10``, the percent of votes at each star, each
    know some of it and together rebuild it: rating = sum(star * share) / 100 plus a little noise."""
    rng = np.random.default_rng(seed)
    stars = np.arange(1, 11)
    tilt = rng.normal(0.5, 0.6, size=n)  # how far a film's votes lean to the high stars
    votes = rng.gamma(np.exp(1.5 * np.outer(tilt, (stars - 5.5) / 4.5)))  # (n, 10), Dirichlet rows
    share = 100 * votes / votes.sum(axis=1, keepdims=True)
    rating = share @ stars / 100 + rng.normal(scale=0.2, size=n)
    df = pl.DataFrame(
        {
            "runtime": 95 + 4 * rating + rng.normal(scale=20, size=n),
            "year": rng.integers(1950, 2024, size=n).astype(np.int32),
            "budget": pl.Series(np.where(rng.random(n) < 0.2, np.nan, rng.lognormal(3, 1, size=n))).fill_nan(
                None
            ),
            "genre": rng.choice(["drama", "comedy", "horror", "documentary"], size=n),
            "label": (rating >= 7).astype(np.int64),
            LABEL_SOURCE: rating,
        }
    )
    if shares:
        df = df.with_columns(pl.Series(name, share[:, i]) for i, name in enumerate(SHARES))
    return df


def test_shares_that_rebuild_the_rating_leak_jointly_and_fail_the_stage(tmp_path: Path) -> None:
    df = films()
    y = df.get_column("label").to_numpy()
    cfg = section(PARAMS, "analyze", AnalyzeConfig)
    for name in SHARES:  # one by one, no share is a leak: the univariate audit lets each pass
        auc = roc_auc_score(y, df.get_column(name).to_numpy())
        assert 0.5 < max(auc, 1 - auc) < cfg.max_auc, (name, auc)
    args = setup(tmp_path, df, source="rating")
    with pytest.raises(DataError, match=r"the leakage audit flagged") as err:
        main(**args)
    analysis = read(tmp_path, "analysis.json")
    joint = analysis["label_source"]
    assert joint["verdict"] == "flagged"
    assert joint["source"] == "rating"
    assert joint["rows"] == joint["rows_used"] == N
    assert joint["r2"] > 0.95  # all the numeric features: the rating rebuilt
    flagged = joint["flagged"]
    assert len(flagged) >= 2, flagged
    assert set(flagged) <= set(SHARES), flagged
    assert joint["flagged_r2"] >= cfg.max_source_r2
    assert joint["rest_r2"] < cfg.max_source_r2  # leaving out the features named passes the check
    steps = [s["r2"] for s in joint["selected"]]
    assert steps == sorted(steps)  # one round: each step adds to the R^2
    assert [s["feature"] for s in joint["selected"]] == flagged
    assert analysis["features"]["runtime"]["roc_auc"] < cfg.max_auc
    # The message names the features, the R^2, the source, the threshold and both fixes.
    message = str(err.value)
    named = ", ".join(flagged)
    assert f"{named} together explain {joint['flagged_r2']:.1%} of the variance of rating" in message
    assert "(the label's source, clean.label.column) out of fold" in message
    assert f"all 13 numeric features checked: {joint['r2']:.1%}" in message
    assert "analyze.max_source_r2 = 0.9): they leak the label jointly" in message
    assert "exclude them (featurize.exclude)" in message
    assert "accept them with a reason (analyze.accept)" in message
    assert "univariate" not in message  # only the joint leak
    audit = read(tmp_path, "audit.json")
    assert audit["passed"] is False
    assert sorted(audit["flagged"]) == sorted(flagged)
    assert {f["check"] for fs in audit["flagged"].values() for f in fs} == {"label_source"}
    assert audit["label_source"]["verdict"] == "flagged"
    assert audit["label_source"]["features"] == flagged
    metrics = json.loads(Path(args["metrics_path"]).read_text())
    assert metrics["n_flagged"] == len(flagged)
    assert metrics["label_source_r2"] == pytest.approx(joint["r2"], abs=1e-4)
    page = (tmp_path / "out/index.html").read_text()
    assert "<h2>Joint leak: the label's source from the numeric features</h2>" in page
    assert "Categorical features are not part of this check" in page
    assert f'<tr class="flagged"><td class="name">1</td><td>1</td><td>{flagged[0]}</td>' in page
    assert html.escape(joint["reason"]) in page


def test_every_copy_of_a_joint_leak_is_named_at_once() -> None:
    # A score that is the rating itself and the shares: the selection takes the score, and since the
    # shares left still rebuild the rating, a second round names them too.
    df = films()
    rating = df.get_column(LABEL_SOURCE).to_numpy()
    score = rating * 10 + np.random.default_rng(7).normal(scale=0.5, size=N)
    block = np.column_stack([df.select(SHARES).to_numpy(), score])
    cfg = section(PARAMS, "analyze", AnalyzeConfig)
    joint = source_check(block, [*SHARES, "score"], rating, "rating", cfg, seed=0)
    assert joint["verdict"] == "flagged"
    rounds = [(s["round"], s["feature"]) for s in joint["selected"]]
    assert rounds[0] == (1, "score")
    assert {r for r, _ in rounds} == {1, 2}
    assert {name for r, name in rounds if r == 2} <= set(SHARES)
    assert joint["rest_r2"] < cfg.max_source_r2
    assert joint["reason"].startswith(f"{', '.join(joint['flagged'])} together explain")
    # An exact copy of the source, alone: "it leaks".
    alone = source_check(score[:, None], ["score"], rating, "rating", cfg, seed=0)
    assert alone["flagged"] == ["score"]
    assert alone["rest_r2"] is None
    assert alone["reason"].startswith("score explains 99.")
    assert "it leaks the label; exclude it (featurize.exclude) or, if it is known" in alone["reason"]


def test_the_films_without_the_shares_pass(tmp_path: Path) -> None:
    main(**setup(tmp_path, films(shares=False), source="rating"))
    assert read(tmp_path, "audit.json") == {
        "accepted": {},
        "flagged": {},
        "label_source": {"column": "rating", "verdict": "passed"},
        "passed": True,
    }
    joint = read(tmp_path, "analysis.json")["label_source"]
    assert joint["verdict"] == "passed"
    assert joint["features"] == ["budget", "runtime", "year"]  # genre: categorical, not checked
    assert 0.05 < joint["r2"] < 0.5  # the runtime knows a little
    assert joint["selected"] == []
    assert joint["flagged"] == []


def test_accepted_shares_are_left_out_of_the_joint_check(tmp_path: Path) -> None:
    reason = "vote shares are published before the prediction moment"
    args = setup(tmp_path, films(), source="rating", accept=dict.fromkeys(SHARES, reason))
    main(**args)
    audit = read(tmp_path, "audit.json")
    assert audit["passed"] is True
    assert audit["flagged"] == {}
    assert audit["label_source"] == {"column": "rating", "verdict": "passed"}
    assert audit["accepted"] == {name: {"checks": [], "reason": reason} for name in SHARES}
    joint = read(tmp_path, "analysis.json")["label_source"]
    assert joint["accepted"] == sorted(SHARES)
    assert joint["features"] == ["budget", "runtime", "year"]
    page = (tmp_path / "out/index.html").read_text()
    assert "accepted ones (analyze.accept) are left out: r1, r10, r2" in page


def test_without_a_label_source_the_joint_check_is_skipped_and_reported(tmp_path: Path) -> None:
    # the shares are there, but the spec names no label source (the label is not a threshold)
    df = films().drop(LABEL_SOURCE)
    main(**setup(tmp_path, df))
    assert read(tmp_path, "audit.json")["label_source"] == NO_SOURCE
    joint = read(tmp_path, "analysis.json")["label_source"]
    assert joint["verdict"] == "skipped"
    assert joint["r2"] is None
    assert "the spec names no label source" in joint["skipped_because"]
    page = (tmp_path / "out/index.html").read_text()
    assert "<p>Skipped: the label is not a threshold on a numeric column" in page


def test_a_spec_naming_a_source_the_part_lacks_is_an_error(tmp_path: Path) -> None:
    args = setup(tmp_path, films().drop(LABEL_SOURCE), source="rating")
    with pytest.raises(DataError, match=r"names 'rating' as the label's source but the part has no"):
        main(**args)
    assert not (tmp_path / "out").exists()


def delays(seed: int) -> pl.DataFrame:
    """The flights' case: the label is ``delay >= 15`` and the features know little of the delay."""
    df = frame(seed=0)
    rng = np.random.default_rng(seed)
    delay = 0.3 * df.get_column("noise").to_numpy() * 20 + rng.normal(scale=40, size=df.height)
    # like a cancelled flight: no delay for some rows (positives, not part of the check)
    delay[rng.random(df.height) < 0.05] = np.nan
    return df.with_columns(
        label=pl.Series(np.isnan(delay) | (delay >= 15)).cast(pl.Int64),
        **{LABEL_SOURCE: pl.Series(delay).fill_nan(None)},
    )


def test_a_noisy_source_passes_and_audit_json_does_not_move_with_its_figure(tmp_path: Path) -> None:
    runs = []
    for seed in (1, 2):
        folder = tmp_path / str(seed)
        folder.mkdir()
        main(**setup(folder, delays(seed), source="arr_delay"))
        joint = read(folder, "analysis.json")["label_source"]
        assert joint["verdict"] == "passed"
        assert 0.85 * N < joint["rows"] < 0.99 * N  # the rows without the source are left out
        assert joint["r2"] < 0.1
        runs.append((joint["r2"], (folder / "out/audit.json").read_bytes()))
    assert runs[0][0] != runs[1][0]  # the figure moved ...
    assert runs[0][1] == runs[1][1]  # ... the verdict did not: the model stages do not re-run
    assert json.loads(runs[0][1])["label_source"] == {"column": "arr_delay", "verdict": "passed"}


def test_the_default_data_passes_the_audit(data_run: Path, tmp_path: Path) -> None:
    # The smoke profile's real data (January 2013): no leak is left after clean and featurize.
    main(
        str(data_run / "params.yaml"),
        str(data_run / "data/split"),
        str(data_run / "data/features/spec.json"),
        str(tmp_path / "out"),
        str(tmp_path / "metrics.json"),
    )
    assert read(tmp_path, "audit.json")["passed"] is True
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_flagged"] == 0
    assert metrics["top_feature_roc_auc"] < 0.8
