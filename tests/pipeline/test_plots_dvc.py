"""`dvc plots show` on real files: a copy of the repository with plot files made here, and the
session's smoke pipeline, whose stages wrote them (the page checks: tests/unit/test_plots.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import polars as pl

from ontime.evaluation.evaluate import CURVE_POINTS, plot_points, write_plots
from tests.conftest import SmokeRepo, run
from tests.unit.test_plots import CANDIDATES, check_page, scores, show_plots


def test_dvc_plots_show_on_plot_files_made_here(repo: Path) -> None:
    """The real dvc.yaml, templates and page, on dvclive files written as the stages write them."""
    from dvclive import Live

    for stage, epochs in (("train", 12), ("finetune", 3)):  # 12: "10" must not sort before "2"
        with Live(dir=str(repo / "dvclive" / stage), save_dvc_exp=False, dvcyaml=None) as live:
            for epoch in range(epochs):
                for key, value in {"lr": 1e-3 / (1 + epoch), "train/loss": 0.5 - 0.01 * epoch}.items():
                    live.log_metric(key, value)
                live.log_metric("valid/loss", 0.45 + 0.002 * epoch)
                live.log_metric("valid/roc_auc", 0.6 + 0.005 * epoch)
                live.next_step()
    y, _ = scores(6_000, 4)
    test = pl.DataFrame(
        {"label": y, **{name: scores(6_000, 4, strength=1 + i / 3)[1] for i, name in enumerate(CANDIDATES)}}
    )
    metrics = {name: {"threshold": 0.4} for name in CANDIDATES}
    write_plots(repo / "dvclive/evaluate/plots", plot_points(metrics, test, "label"))

    show = show_plots(repo, repo / "dvc_plots")
    check_page(repo / "dvc_plots", show, candidates=CANDIDATES)
    roc = show["data"]["ROC curve (test window)"][0]["content"]["data"]["values"]
    assert Counter(v["candidate"] for v in roc)["base"] == CURVE_POINTS  # 6,000 rows: thinned


def test_dvc_plots_show_on_the_smoke_pipeline(smoke_repo: SmokeRepo, tmp_path: Path) -> None:
    clone = smoke_repo.clone("plots", pull=False)
    run(["dvc", "pull", "dvclive/train", "dvclive/finetune", "dvclive/evaluate"], clone)
    evaluated = json.loads((clone / "metrics/evaluate.json").read_text())
    show = show_plots(clone, tmp_path / "page")
    check_page(tmp_path / "page", show, candidates=[c for c in CANDIDATES if c in evaluated])
