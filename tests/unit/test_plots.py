"""`dvc plots show`: a page that opens offline and stays small, one colour per candidate, thinned
ROC / precision-recall curves that keep their shape, human titles, epoch axes, a y = x reference on
the calibration plot, confusion counts written in.

The page checks run twice: on a copy of the repository with plot files made here (fast), and on the
session's smoke pipeline, whose stages wrote the files (slow).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from sklearn.calibration import calibration_curve
from sklearn.metrics import auc, confusion_matrix, roc_auc_score, roc_curve

from ontime.evaluation.evaluate import CURVE_POINTS, plot_points
from ontime.evaluation.metrics import (
    calibration_points,
    confusion_counts,
    precision_recall_points,
    roc_points,
    thin_curve,
)
from tests.conftest import REPO, run

CANDIDATES = ["base", "finetuned", "lgbm_train", "lgbm_all", "linear", "svm", "ens_weighted", "ens_stacking"]
MAX_PAGE_BYTES = 2_000_000
CURVES = ("ROC curve (test window)", "Precision-recall (test window)")
CALIBRATION = "Calibration (test window)"


def scores(n: int, seed: int, *, strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of a middling classifier, ties included (rounded scores)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(np.int64)
    logit = strength * (y - 0.5) + rng.normal(0.0, 1.0, n) - 0.6
    return y, np.round(1 / (1 + np.exp(-logit)), 5)


def max_gap(x: np.ndarray, y: np.ndarray, keep: np.ndarray) -> float:
    """The largest distance of a dropped point from the polyline through the kept ones."""
    worst = 0.0
    for a, b in itertools.pairwise(keep):
        if b - a < 2:
            continue
        xs, ys = x[a + 1 : b], y[a + 1 : b]
        dx, dy = x[b] - x[a], y[b] - y[a]
        length2 = dx * dx + dy * dy
        t = (
            np.zeros_like(xs)
            if length2 == 0
            else np.clip(((xs - x[a]) * dx + (ys - y[a]) * dy) / length2, 0, 1)
        )
        worst = max(worst, float(np.hypot(xs - (x[a] + t * dx), ys - (y[a] + t * dy)).max()))
    return worst


# ---------------------------------------------------------------------------------------------------
# Thinning the curves
# ---------------------------------------------------------------------------------------------------


def test_thin_curve_keeps_the_ends_the_order_and_the_shape() -> None:
    y, p = scores(20_000, 0)
    fpr, tpr, _ = roc_curve(y, p)
    assert len(fpr) > 1000  # enough points for the thinning to matter
    keep = thin_curve(fpr, tpr, max_points=200)
    assert len(keep) <= 200
    assert keep[0] == 0
    assert keep[-1] == len(fpr) - 1
    assert np.all(np.diff(keep) > 0)  # a subsequence, in the curve's order
    # a subsequence of a monotone curve stays monotone
    assert np.all(np.diff(fpr[keep]) >= 0)
    assert np.all(np.diff(tpr[keep]) >= 0)
    # the shape: no dropped point is far from the drawn line, and the area hardly moves
    assert max_gap(fpr, tpr, keep) < 0.005
    assert auc(fpr[keep], tpr[keep]) == pytest.approx(auc(fpr, tpr), abs=1e-3)


def test_thin_curve_keeps_a_corner_and_drops_straight_runs() -> None:
    # a perfect ROC curve: straight up, then straight right; 1,001 points, three that matter
    x = np.r_[np.zeros(500), np.linspace(0, 1, 501)]
    y = np.r_[np.linspace(0, 1, 500), np.ones(501)]
    keep = thin_curve(x, y, max_points=50)
    assert [(x[i], y[i]) for i in keep] == [(0.0, 0.0), (0.0, 1.0), (1.0, 1.0)]


def test_thin_curve_leaves_short_curves_alone_and_checks_its_budget() -> None:
    x, y = np.linspace(0, 1, 10), np.linspace(0, 1, 10) ** 2
    assert thin_curve(x, y, max_points=10).tolist() == list(range(10))
    with pytest.raises(ValueError, match="max_points must be at least 2"):
        thin_curve(x, y, max_points=1)


def test_curve_points_are_capped_and_end_where_the_curves_end() -> None:
    y, p = scores(5_000, 1)
    roc = roc_points(y, p, max_points=100)
    assert 2 < len(roc) <= 100
    assert (roc[0]["fpr"], roc[0]["tpr"], roc[-1]["fpr"], roc[-1]["tpr"]) == (0.0, 0.0, 1.0, 1.0)
    assert [r["point"] for r in roc] == list(range(len(roc)))
    assert roc[0]["threshold"] is None  # "nothing positive": +inf, not valid JSON
    assert all(r["threshold"] is not None for r in roc[1:])
    fpr, tpr = np.array([r["fpr"] for r in roc]), np.array([r["tpr"] for r in roc])
    assert np.all(np.diff(fpr) >= 0)
    assert np.all(np.diff(tpr) >= 0)
    assert auc(fpr, tpr) == pytest.approx(roc_auc_score(y, p), abs=2e-3)

    pr = precision_recall_points(y, p, max_points=100)
    assert 2 < len(pr) <= 100
    assert pr[0]["recall"] == 1.0
    assert pr[0]["precision"] == pytest.approx(y.mean(), abs=1e-6)
    assert (pr[-1]["recall"], pr[-1]["precision"], pr[-1]["threshold"]) == (0.0, 1.0, None)
    assert np.all(np.diff([r["recall"] for r in pr]) <= 0)
    json.dumps([roc, pr], allow_nan=False)  # the stage writes strict JSON

    # one class: no curve rather than NaNs
    assert roc_points(np.zeros(10), p[:10], max_points=100) == []
    assert precision_recall_points(np.ones(10), p[:10], max_points=100) == []


def test_calibration_and_confusion_points_match_sklearn() -> None:
    y, p = scores(3_000, 2)
    bins = calibration_points(y, p, n_bins=10)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10)
    assert [b["prob_true"] for b in bins] == pytest.approx(prob_true, abs=1e-6)
    assert [b["prob_pred"] for b in bins] == pytest.approx(prob_pred, abs=1e-6)
    assert sum(b["rows"] for b in bins) == len(y)

    pred = (p >= 0.4).astype(np.int64)
    cells = {(c["actual"], c["predicted"]): c["count"] for c in confusion_counts(y, pred)}
    (tn, fp), (fn, tp) = confusion_matrix(y, pred).tolist()
    assert cells == {("0", "0"): tn, ("0", "1"): fp, ("1", "0"): fn, ("1", "1"): tp}


def test_plot_points_tag_every_row_with_its_candidate() -> None:
    y, _ = scores(4_000, 3)
    test = pl.DataFrame(
        {"label": y, **{name: scores(4_000, 3, strength=1 + i)[1] for i, name in enumerate(CANDIDATES)}}
    )
    metrics = {name: {"threshold": 0.4} for name in CANDIDATES}
    points = plot_points(metrics, test, "label", max_points=150)
    assert set(points) == {"roc", "precision_recall", "calibration", "confusion"}
    for plot, rows in points.items():
        per = Counter(r["candidate"] for r in rows)
        assert list(per) == CANDIDATES, plot  # every candidate, in the metrics' order
        if plot in ("roc", "precision_recall"):
            assert max(per.values()) <= 150
        if plot == "confusion":
            assert set(per.values()) == {4}


# ---------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------

SPEC = re.compile(r"var spec = (\{.*?\});\s*vegaEmbed\(", re.S)


def layers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every unit of a vega-lite spec: itself, its layers, a facet's inner spec and its layers."""
    out = [spec]
    for sub in spec.get("layer", []):
        out += layers(sub)
    if isinstance(spec.get("spec"), dict):
        out += layers(spec["spec"])
    return out


def mark(unit: dict[str, Any]) -> str | None:
    m = unit.get("mark")
    return m.get("type") if isinstance(m, dict) else m


def check_page(out: Path, show: dict[str, Any], *, candidates: list[str]) -> None:
    """The checks on the page `dvc plots show -o out` wrote and on `dvc plots show --json`."""
    page = (out / "index.html").read_text(encoding="utf-8")
    assert len(page.encode()) < MAX_PAGE_BYTES, f"the page is {len(page.encode()):,} bytes"

    # Offline: every script is inline, nothing is linked or imported from the network. The vendored
    # code holds URLs in strings and comments (XML namespaces, a link to an issue); none is loaded.
    assert re.findall(r"<script\b[^>]*\bsrc\s*=", page, re.I) == []
    assert re.findall(r"<link\b", page, re.I) == []
    assert re.findall(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I) == []
    assert re.findall(r"@import|url\(\s*[\"']?(?:https?:)?//", page, re.I) == []
    assert re.findall(r"""\b(?:fetch|import)\s*\(\s*["'`](?:https?:)?//""", page) == []
    for cdn in ("cdn.jsdelivr.net", "unpkg.com", "cdn.plot.ly", "cdnjs"):
        assert cdn not in page, cdn
    for name, version in (("vega", "5.33.1"), ("vega-lite", "5.23.0"), ("vega-embed", "6.29.0")):
        assert f"<script>/* {name} {version} " in page

    plots = show["data"]
    assert len(SPEC.findall(page)) == len(plots)  # every plot is on the page
    specs = {name: renders[0]["content"] for name, renders in plots.items()}
    for name, spec in specs.items():
        # human titles, never a file path
        assert spec["title"]["text"] == name
        assert "/" not in name, name
        assert not re.search(r"\.(json|tsv|csv|ya?ml)\b", name), name
        assert spec["data"]["values"], f"{name}: no data"

    for name in (*CURVES, CALIBRATION):
        spec = specs[name]
        colours = [u["encoding"]["color"] for u in layers(spec) if "color" in u.get("encoding", {})]
        assert colours, name
        assert all(c["field"] == "candidate" for c in colours), name
        # a categorical scheme with a colour for each candidate (tableau10: ten)
        assert all(c["scale"]["scheme"] == "tableau10" for c in colours), name
        assert len(candidates) <= 10
        values = spec["data"]["values"]
        assert list(dict.fromkeys(v["candidate"] for v in values)) == candidates, name
    for name in CURVES:
        per = Counter((v["candidate"], v["rev"]) for v in specs[name]["data"]["values"])
        assert max(per.values()) <= CURVE_POINTS, f"{name}: {per}"

    def has_diagonal(spec: dict[str, Any]) -> bool:
        return any(
            mark(u) == "rule"
            and [u["encoding"][c].get("datum") for c in ("x", "y", "x2", "y2")] == [0, 0, 1, 1]
            for u in layers(spec)
        )

    assert has_diagonal(specs[CALIBRATION])
    assert has_diagonal(specs["ROC curve (test window)"])

    (confusion,) = (s for n, s in specs.items() if n.startswith("Confusion"))
    units = layers(confusion)
    assert any(mark(u) == "text" and u["encoding"]["text"]["field"] == "label" for u in units)
    assert confusion["resolve"]["scale"]["color"] == "shared"
    assert {v["candidate"] for v in confusion["data"]["values"]} == set(candidates)

    epochs = {n: s for n, s in specs.items() if "by epoch" in n}
    assert {n.split(":")[0] for n in epochs} == {"Training", "Fine-tuning"}
    for name, spec in epochs.items():
        assert spec["encoding"]["x"]["field"] == "epoch", name
        assert spec["encoding"]["x"]["title"].startswith("Epoch"), name
    for stage in ("Training", "Fine-tuning"):
        rows = {v["filename"] for v in epochs[f"{stage}: loss by epoch"]["data"]["values"]}
        assert rows == {"train/loss.tsv", "valid/loss.tsv"}  # train and validation loss on one plot


def show_plots(repo: Path, out: Path) -> dict[str, Any]:
    run(["dvc", "plots", "show", "-o", str(out)], repo)
    return json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)


def test_templates_and_plot_definitions_agree() -> None:
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    for entry in plots:
        ((name, props),) = entry.items()
        assert "template" in (props or {}), f"plot {name!r}: give it a template from plots/templates"
        template = REPO / props["template"]
        assert template.parent == REPO / "plots/templates", name
        content = json.loads(template.read_text())
        assert "<DVC_METRIC_DATA>" in json.dumps(content), template.name
    config = (REPO / ".dvc/config").read_text()
    assert re.search(r"html_template\s*=\s*\.\./plots/dvc_plots\.html", config)
    page = (REPO / "plots/dvc_plots.html").read_text(encoding="utf-8")
    assert "{plot_divs}" in page
    assert "{scripts}" not in page  # where DVC would put its CDN <script src=...> tags


def test_the_page_is_built_from_page_html_and_the_pinned_packages() -> None:
    spec = importlib.util.spec_from_file_location("build_page", REPO / "plots/build_page.py")
    assert spec is not None
    assert spec.loader is not None
    build_page = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_page)
    skeleton = build_page.PAGE.read_text(encoding="utf-8")
    built = build_page.OUT.read_text(encoding="utf-8")
    head, tail = skeleton.split(build_page.MARKER)
    rebuild = "page.html changed: run python plots/build_page.py"
    assert built.startswith(head), rebuild
    assert built.endswith(tail), rebuild
    vendored = re.findall(r"<script>/\* (\S+) (\S+) \(BSD-3-Clause", built)
    assert vendored == [(name, pin[0]) for name, pin in build_page.PACKAGES.items()]
    readme = (REPO / "plots/README.md").read_text()
    for name, (version, *_) in build_page.PACKAGES.items():
        assert f"| {name} | {version} |" in readme
