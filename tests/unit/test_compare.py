"""`ontime compare`: experiments x candidates from `dvc exp show --json`, sorted, in 120 columns."""

from __future__ import annotations

from typing import Any

from ontime.compare import rows_from, short, table

LONG = "a-rather-long-experiment-name"
CANDIDATES = ("base", "finetuned", "lgbm_train", "lgbm_all", "ens_weighted", "ens_stacking")


def data(champion: str, valid: float, test: dict[str, float]) -> dict[str, Any]:
    evaluation = {
        c: {"valid": {"roc_auc": valid - 0.01 * i, "log_loss": 0.5 + i / 100}, "test": {"roc_auc": t}}
        for i, (c, t) in enumerate(test.items())
    }
    evaluation[champion]["valid"]["roc_auc"] = valid
    return {
        "metrics": {
            "metrics/evaluate.json": {"data": evaluation},
            "metrics/select.json": {"data": {"champion": champion, "test_roc_auc": test[champion]}},
        }
    }


def shown() -> list[dict[str, Any]]:
    figures = {c: 0.6 + 0.01 * i for i, c in enumerate(CANDIDATES)}
    return [
        {"rev": "workspace", "name": None, "data": data("lgbm_all", 0.70, figures), "experiments": None},
        {
            "rev": "0123456789abcdef",
            "name": "main",
            "data": data("base", 0.69, figures),
            "experiments": [
                {
                    "revs": [
                        {"rev": "aaaa", "name": LONG, "data": data("ens_weighted", 0.72, figures)},
                        {"rev": "bbbb", "name": "queued", "data": None},  # no metrics yet: left out
                    ]
                }
            ],
        },
        {"rev": "fedcba9876543210", "name": None, "data": {"metrics": {}}, "experiments": None},
    ]  # fmt: skip


def test_one_row_per_evaluated_experiment_best_validation_first() -> None:
    rows = rows_from(shown(), "roc_auc")
    assert [r.name for r in rows] == ["workspace", "main", "  a-rather-long-experiment-name"]
    text = table(rows, "roc_auc")
    body = text.splitlines()[2:5]
    assert [line.split()[0] for line in body] == ["a-rather-long-experiment-name", "workspace", "main"]
    assert body[0].split()[1:4] == ["ens_w", "0.720", "0.640"]  # champion, its valid and test figure


def test_fits_a_120_column_terminal_with_six_candidates() -> None:
    text = table(rows_from(shown(), "roc_auc"), "roc_auc")
    assert max(len(line) for line in text.splitlines()) <= 120, text
    assert "lgbm_t=lgbm_train" in text  # abbreviations are spelled out


def test_lower_is_better_metrics_sort_ascending() -> None:
    rows = rows_from(shown(), "log_loss")
    assert all(r.candidates == {} for r in rows)  # no test log_loss in this data: shown as "-"
    text = table(rows, "log_loss")
    assert "lower is better" in text
    order = [line.split()[0] for line in text.splitlines()[2:5]]
    # the champions' validation log loss: main (base) 0.50, workspace (lgbm_all) 0.53, the experiment 0.54
    assert order == ["main", "workspace", "a-rather-long-experiment-name"]


def test_abbreviations_never_collide() -> None:
    assert short("lgbm_train") == "lgbm_t"
    assert short("base") == "base"
    rows = rows_from(shown(), "roc_auc")
    clash = [
        r.__class__(r.name, r.champion, r.valid, r.test, {"ens_weighted": 0.7, "ens_wobbly": 0.6})
        for r in rows
    ]
    header = table(clash, "roc_auc").splitlines()[0]
    assert "ens_weighted" in header
    assert "ens_wobbly" in header


def test_nothing_evaluated_says_how_to_get_figures() -> None:
    assert "run `dvc repro`" in table([], "roc_auc")
