"""The model card: what the champion is for, how it was chosen, and how it scores.

The card says what the model is for and not for (``data.description``, ``intended_use``,
``out_of_scope``), how the label is defined (``clean.label``), the data windows, what the champion is
(an ensemble's members and weights), how select chose it (the fold table: every candidate's metric
on each walk-forward fold, the mean, the interval against the best, the rule and why it won), every
candidate's validation and test figures, the base rate and calibration, per-segment results, caveats
computed from those figures, the data version (the md5 of every input it read), lineage from
``dvc.lock`` (the source data's and the split's md5, and the params, code and data of every upstream
stage, as DVC recorded them), the git commit and the DVC experiment name. When select runs outside
``dvc repro`` and ``dvc.lock`` does not describe its inputs, the card says so (``lineage: null``)
rather than guess.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ontime.candidates import CANDIDATE_FILE
from ontime.config.clean import LabelConfig
from ontime.config.data import DataConfig
from ontime.config.select import SelectConfig
from ontime.errors import DataError
from ontime.evaluation.metrics import roc_auc
from ontime.io import read_json
from ontime.lineage import provenance

LOWER_IS_BETTER = {"log_loss", "brier"}
PARTS = ("train", "train_valid", "finetune", "finetune_valid", "test")
RESULT_METRICS = {"roc_auc": "ROC AUC", "pr_auc": "PR AUC", "log_loss": "log loss", "brier": "Brier"}
ARCHITECTURES = {"mlp": "MLP", "ft_transformer": "FT-Transformer"}
CALIBRATION_BINS = 10
SEGMENT_FEATURES = 3  # categorical features segmented: complete ones first, then the fewest levels
SEGMENT_LEVELS = (2, 30)  # ... among those with this many levels on the test window
MAX_MONTHS = 24  # a test window over more months is segmented by month of the year (1-12)
MIN_SEGMENT_ROWS = 100  # smaller segments are listed without a ROC AUC


NOT_DESCRIBED = "Not described yet: set `data.{key}` in conf/data/ (or `-S 'data.{key}=...'`)."


# ------------------------------------------------------------------------------ card figures ---
def _round(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 6)


def _moment(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def window_summary(df: pl.DataFrame, *, target: str, time_column: str | None) -> dict[str, Any]:
    """Rows, positive rate and (with a time column) the first and last moment of one split part."""
    times = df.get_column(time_column) if time_column and time_column in df.columns else None
    y = df.get_column(target).to_numpy()
    return {
        "rows": df.height,
        "positive_rate": _round(float(y.mean())) if df.height else None,
        "first": _moment(times.min()) if times is not None else None,
        "last": _moment(times.max()) if times is not None else None,
    }


def later_than_training(parts: dict[str, pl.DataFrame], time_column: str | None) -> bool | None:
    """Whether every test row is later than every row of the other parts (None: no time column)."""
    if not time_column or any(time_column not in df.columns for df in parts.values()):
        return None
    others = [df.get_column(time_column).max() for name, df in parts.items() if name != "test"]
    first_test = parts["test"].get_column(time_column).min()
    return all(first_test > last for last in others if last is not None)  # type: ignore[operator]


def describe_model(folder: Path) -> dict[str, Any]:
    """What a candidate folder holds: its kind, and for an ensemble its members and their weights."""
    info = read_json(folder / CANDIDATE_FILE)
    kind = info.get("kind")
    out: dict[str, Any] = {"name": info["name"], "kind": kind, "trained_on": info.get("trained_on")}
    if info.get("held_out"):  # parts answered by predictions from before a refit (or out-of-fold)
        out["held_out"] = info["held_out"]
    if kind == "torch":
        architecture = read_json(folder / "model.json")["architecture"]
        out["type"] = ARCHITECTURES.get(architecture, architecture)
        if info.get("strategy"):
            out["finetune_strategy"] = info["strategy"]
    elif kind == "lightgbm":
        out["type"] = "LightGBM"
        out["trees"] = info.get("best_iteration")
    elif kind == "linear":
        out["type"] = f"logistic regression ({str(info.get('penalty', '')).upper()}, C={info.get('C')})"
        out["nonzero_coefficients"] = info.get("nonzero_coefficients")
    elif kind == "svm":
        out["type"] = f"RBF-kernel SVM ({info.get('n_components')} Nystroem landmarks, Platt-calibrated)"
    elif kind == "ensemble":
        combiner = read_json(folder / "combiner.json")
        members = [describe_model(folder / "members" / m) for m in combiner["members"]]
        method = combiner["method"]
        weights = combiner["weights"] if method == "weighted" else combiner["coef"]
        for member, weight in zip(members, weights, strict=True):
            member["weight"] = _round(weight)
        out.update(method=method, members=members, intercept=_round(combiner.get("intercept")))
        if info.get("bagging_seeds"):
            out["type"] = f"{members[0]['type']}, {info['bagging_seeds']} seeds averaged"
        else:
            out["type"] = f"ensemble ({method})"
    else:
        raise DataError(f"{folder / CANDIDATE_FILE}: unknown candidate kind {kind!r}; re-run its stage")
    return out


def base_rate(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """The observed positive rate against the mean predicted probability."""
    return {
        "rows": len(y),
        "positive_rate": _round(float(np.mean(y))),
        "mean_predicted": _round(float(np.mean(p))),
    }


def calibration_bins(y: np.ndarray, p: np.ndarray, n_bins: int = CALIBRATION_BINS) -> list[dict[str, Any]]:
    """Equal-width probability bins ([0, 0.1), ..., [0.9, 1.0]): rows, mean predicted, observed rate."""
    index = np.clip((np.asarray(p) * n_bins).astype(np.int64), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        hit = index == b
        rows = int(hit.sum())
        bins.append(
            {
                "low": round(b / n_bins, 6),
                "high": round((b + 1) / n_bins, 6),
                "rows": rows,
                "mean_predicted": _round(float(p[hit].mean())) if rows else None,
                "observed_rate": _round(float(y[hit].mean())) if rows else None,
            }
        )
    return bins


def segment_features(test: pl.DataFrame, categorical: list[str]) -> list[str]:
    """Up to ``SEGMENT_FEATURES`` categorical features with 2..30 levels on the test rows: features
    known on every row first (a segment of an often-missing column mostly measures the missingness),
    then the fewest levels, then by name."""
    low, high = SEGMENT_LEVELS
    ranked = []
    for name in categorical:
        if name not in test.columns:
            continue
        column = test.get_column(name)
        levels = column.drop_nulls().n_unique()
        if low <= levels <= high:
            ranked.append((column.null_count() > 0, levels, name))
    return [name for *_, name in sorted(ranked)[:SEGMENT_FEATURES]]


def _segment(
    feature: str, by: str, level: str, hit: np.ndarray, y: np.ndarray, p: np.ndarray
) -> dict[str, Any]:
    rows = int(hit.sum())
    yy = y[hit]
    scored = rows >= MIN_SEGMENT_ROWS and 0 < yy.sum() < rows
    return {
        "feature": feature,
        "by": by,
        "level": level,
        "rows": rows,
        "positive_rate": _round(float(yy.mean())) if rows else None,
        "roc_auc": _round(roc_auc(yy, p[hit])) if scored else None,
    }


def segment_results(
    test: pl.DataFrame, y: np.ndarray, p: np.ndarray, *, categorical: list[str], time_column: str | None
) -> list[dict[str, Any]]:
    """Test ROC AUC, rows and positive rate per level of the chosen categorical features (missing
    values as their own level) and per calendar month of the time column (in its own time zone)."""
    out = []
    for feature in segment_features(test, categorical):
        column = test.get_column(feature)
        for level in column.drop_nulls().unique().sort().to_list():
            hit = (column == level).fill_null(False).to_numpy()
            out.append(_segment(feature, "level", str(level), hit, y, p))
        if column.null_count():
            out.append(_segment(feature, "level", "(missing)", column.is_null().to_numpy(), y, p))
    if time_column and time_column in test.columns and test.schema[time_column].is_temporal():
        times = test.get_column(time_column)
        by, months = "month", times.dt.strftime("%Y-%m")
        if months.n_unique() > MAX_MONTHS:
            by, months = "month of year", times.dt.strftime("%m")
        for month in months.drop_nulls().unique().sort().to_list():
            out.append(_segment(time_column, by, month, (months == month).fill_null(False).to_numpy(), y, p))
    return out


def _segment_name(s: dict[str, Any]) -> str:
    return f"`{s['feature']}`" + ("" if s["by"] == "level" else f" ({s['by']})")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def caveats(
    *,
    name: str,
    cfg: SelectConfig,
    metrics: dict[str, Any],
    valid_part: str,
    windows: dict[str, dict[str, Any]],
    time_ordered: bool | None,
    rates: dict[str, dict[str, Any]],
    segments: list[dict[str, Any]],
    model: dict[str, Any],
    selection: dict[str, Any] | None = None,
) -> list[str]:
    """What a reader should know before trusting the figures, computed from them."""
    chosen = metrics[name]
    valid, test = chosen["valid"], chosen["test"]
    out = [
        f"The decision threshold ({chosen['threshold']:.4f}) is chosen on `{valid_part}` at a "
        f"{_pct(valid['positive_rate'])} positive rate and applied to the test window at "
        f"{_pct(test['positive_rate'])}: it flags {_pct(valid['predicted_positive_rate'])} of "
        f"`{valid_part}` rows and {_pct(test['predicted_positive_rate'])} of test rows (test precision "
        f"{test['precision']:.3f}, recall {test['recall']:.3f})."
    ]
    w = windows["test"]
    if time_ordered:
        out.append(
            f"The test window is one period ({w['first']} to {w['last']}, {w['rows']:,} rows), later "
            "than every row of the other parts: its figures describe that period only; other seasons "
            "or a changed world may score differently."
        )
    elif time_ordered is False:
        out.append(
            "The test rows are not later than the training rows (a random or overlapping split): the "
            "figures do not show how the model ages."
        )
    else:
        out.append(
            "The data has no time column: the test rows are a random draw from the same population "
            "as the training rows, so the figures do not show how the model ages."
        )
    gap = rates["test"]["mean_predicted"] - rates["test"]["positive_rate"]
    if abs(gap) >= 0.02:
        out.append(
            f"On the test window the mean predicted probability is {_pct(rates['test']['mean_predicted'])} "
            f"against an observed {_pct(rates['test']['positive_rate'])}: the model "
            f"{'over' if gap > 0 else 'under'}-predicts the rate by {100 * abs(gap):.1f} points, so read "
            "its probabilities as a ranking, not as calibrated chances, until it is recalibrated on "
            "recent rows."
        )
    drop = valid["roc_auc"] - test["roc_auc"]
    if abs(drop) >= 0.02:
        out.append(
            f"Test ROC AUC ({test['roc_auc']:.4f}) is {'below' if drop > 0 else 'above'} validation "
            f"({valid['roc_auc']:.4f}) by {abs(drop):.4f}."
        )
    others = [c for c in cfg.candidates if c != name]
    if selection and selection["by"] == "folds":
        tied = [r["candidate"] for r in selection["table"] if r["within_noise"] and r["candidate"] != name]
        if tied:
            out.append(
                f"On the folds, {', '.join(f'`{c}`' for c in tied)} are within noise of the best mean "
                f"(their {selection['confidence']:.0%} bootstrap interval against it holds 0): "
                f"select.prefer ({selection['prefer']}) decided, and the choice among them is close to "
                "arbitrary."
            )
    elif others:
        sign = -1.0 if cfg.metric in LOWER_IS_BETTER else 1.0
        runner = max(others, key=lambda c: sign * metrics[c]["valid"][cfg.metric])
        margin = abs(valid[cfg.metric] - metrics[runner]["valid"][cfg.metric])
        if margin < 0.005:
            out.append(
                f"The champion leads the runner-up `{runner}` by only {margin:.4f} in valid.{cfg.metric}: "
                "within noise, the choice between them is close to arbitrary."
            )
    better = [c for c in metrics if c != name and metrics[c]["test"]["roc_auc"] >= test["roc_auc"] + 0.01]
    if better:
        best = max(better, key=lambda c: metrics[c]["test"]["roc_auc"])
        out.append(
            f"On the test window `{best}` scores a higher ROC AUC ({metrics[best]['test']['roc_auc']:.4f}) "
            f"than the champion ({test['roc_auc']:.4f}): selection looks at rows before the test window "
            "only, as it must, and those rank the candidates differently from the test window."
        )
    if valid_part in (model.get("held_out") or []):
        out.append(
            f"The champion's validation figures and threshold come from its predictions for `{valid_part}` "
            "by a fit that did not train on those rows (though its early stopping or settings may have been "
            "chosen on them); the model it serves was then refit on them too."
        )
    elif valid_part in (model.get("trained_on") or []):
        out.append(
            f"The champion trained on `{valid_part}`, the rows that rate it and set its threshold: its "
            "validation figures are optimistic."
        )
    scored = [s for s in segments if s["roc_auc"] is not None]
    if len(scored) >= 2:
        low = min(scored, key=lambda s: s["roc_auc"])
        high = max(scored, key=lambda s: s["roc_auc"])
        if high["roc_auc"] - low["roc_auc"] >= 0.05:
            out.append(
                f"Test ROC AUC varies by segment from {low['roc_auc']:.4f} ({_segment_name(low)} "
                f"{low['level']}) to {high['roc_auc']:.4f} ({_segment_name(high)} {high['level']})."
            )
    unscored = len(segments) - len(scored)
    if unscored:
        out.append(
            f"{unscored} segment(s) have fewer than {MIN_SEGMENT_ROWS} test rows or one class and are "
            "listed without a ROC AUC."
        )
    return out


def model_card(
    *,
    name: str,
    cfg: SelectConfig,
    metrics: dict[str, Any],
    params: dict[str, Any],
    inputs: dict[str, str],
    spec: dict[str, Any],
    data: DataConfig,
    label: LabelConfig,
    valid_part: str,
    parts: dict[str, pl.DataFrame],
    model: dict[str, Any],
    predictions: dict[str, pl.DataFrame],
    lineage: dict[str, Any] | None = None,
    selection: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The card's content. ``parts``: the split parts (the test part with its features, in the order
    evaluate scored it); ``predictions``: evaluate's ``valid`` and ``test`` frames (the target and a
    probability column per candidate)."""
    chosen = metrics[name]
    target, time_column = spec["target"], spec.get("time_column")
    windows = {
        part: window_summary(parts[part], target=target, time_column=time_column)
        for part in PARTS
        if part in parts
    }
    y = {k: df.get_column(target).to_numpy().astype(np.int64) for k, df in predictions.items()}
    p = {k: df.get_column(name).to_numpy().astype(np.float64) for k, df in predictions.items()}
    rates = {k: base_rate(y[k], p[k]) for k in ("valid", "test")}
    categorical = [f["name"] for f in spec["features"] if f["kind"] == "categorical"]
    segments = segment_results(
        parts["test"], y["test"], p["test"], categorical=categorical, time_column=time_column
    )
    time_ordered = later_than_training(parts, time_column)
    bins = calibration_bins(y["test"], p["test"])
    ece = sum(b["rows"] * abs(b["mean_predicted"] - b["observed_rate"]) for b in bins if b["rows"])
    ranked = [*cfg.candidates, *sorted(set(metrics) - set(cfg.candidates))]
    selection = selection or {"by": "validation", "metric": cfg.metric, "champion": name, "reason": ""}
    fold_mean = {r["candidate"]: r["mean"] for r in selection.get("table", [])}
    return {
        "champion": name,
        "selected_by": f"mean fold {cfg.metric}" if selection["by"] == "folds" else f"valid.{cfg.metric}",
        "selection": selection,
        "description": data.description or NOT_DESCRIBED.format(key="description"),
        "intended_use": data.intended_use or NOT_DESCRIBED.format(key="intended_use"),
        "out_of_scope": data.out_of_scope or NOT_DESCRIBED.format(key="out_of_scope"),
        "label": {**label.model_dump(), "target": target, "definition": label.describe(target)},
        "windows": windows,
        "test_after_training": time_ordered,
        "model": model,
        "candidates_valid": {c: metrics[c]["valid"][cfg.metric] for c in cfg.candidates},
        "results": [
            {
                "candidate": c,
                "eligible": c in cfg.candidates,
                "folds_mean": fold_mean.get(c),
                **{f"{part}_{m}": metrics[c][part][m] for part in ("valid", "test") for m in RESULT_METRICS},
            }
            for c in ranked
        ],
        "threshold": chosen["threshold"],
        "valid_part": valid_part,
        "valid_metrics": chosen["valid"],
        "test_metrics": chosen["test"],
        "base_rate": rates,
        "calibration": {"bins": bins, "ece": _round(ece / max(len(y["test"]), 1))},
        "segments": segments,
        "caveats": caveats(
            name=name,
            cfg=cfg,
            metrics=metrics,
            valid_part=valid_part,
            windows=windows,
            time_ordered=time_ordered,
            rates=rates,
            segments=segments,
            model=model,
            selection=selection,
        ),
        "data_version": inputs,
        "params": params,
        "feature_spec": spec,
        "lineage": lineage,
        "git": provenance(),
    }


# ---------------------------------------------------------------------------------- markdown ---
def _cell(value: Any) -> str:
    """One table cell: ``-`` for a missing figure; pipes escaped so a value never adds a cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return str(value).replace("\n", " ").replace("|", "\\|")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; every row has the header's cell count."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"table row {row} has {len(row)} cells, the header {len(header)}")
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _f(x: float | None, digits: int = 4) -> str | None:
    return None if x is None else f"{x:.{digits}f}"


def _p(x: float | None) -> str | None:
    return None if x is None else _pct(x)


def _parts(names: list[str] | None) -> str:
    return ", ".join(f"`{n}`" for n in names) if names else "-"


def _model_section(model: dict[str, Any], valid_part: str) -> str:
    head = f"`{model['name']}`: **{model['type']}**"
    if model["kind"] == "lightgbm":
        return f"{head}, {model['trees']} trees, trained on {_parts(model['trained_on'])}."
    if model["kind"] == "svm":
        return f"{head} on the neural models' preprocessing, trained on {_parts(model['trained_on'])}."
    if model["kind"] == "linear":
        return (
            f"{head} on the neural models' preprocessing (categorical codes one-hot), "
            f"{model['nonzero_coefficients']} nonzero weights, trained on {_parts(model['trained_on'])}."
        )
    if model["kind"] == "torch":
        tuned = (
            f", fine-tuned (strategy `{model['finetune_strategy']}`)"
            if model.get("finetune_strategy")
            else ""
        )
        return f"{head}{tuned}, trained on {_parts(model['trained_on'])}."
    weighted = model["method"] == "weighted"
    column = "weight" if weighted else "coefficient (on the member's logit)"
    rows = [
        [f"`{m['name']}`", m["type"], _parts(m.get("trained_on")), _f(m["weight"])] for m in model["members"]
    ]
    how = (
        "a weighted average of the members' probabilities"
        if weighted
        else f"a logistic regression on the members' logits (intercept {_f(model['intercept'])})"
    )
    fitted = (
        "equal weights, one model per seed"
        if model["type"].endswith("seeds averaged")
        else f"fitted on `{valid_part}` with out-of-fold validation scores"
    )
    return f"{head} of {len(model['members'])} members: {how}; {fitted}.\n\n" + _table(
        ["member", "kind", "trained on", column], rows
    )


def selection_section(sel: dict[str, Any]) -> str:
    """The decision in words and, with folds, the fold table (candidate x fold, mean, interval)."""
    if sel["by"] != "folds":
        return sel["reason"]
    metric = RESULT_METRICS.get(sel["metric"], sel["metric"])
    folds = "; ".join(
        f"fold {f['fold']}: {f['windows']['test']['start']} to {f['windows']['test']['end']} (end excluded), "
        f"{f['rows']:,} rows, {_pct(f['positive_rate'])} positive"
        for f in sel["folds"]
    )
    conf = f"{sel['confidence']:.0%}"
    table = _table(
        ["candidate", "kind", *(f"fold {f['fold']}" for f in sel["folds"]), "mean",
         f"{conf} interval vs best", "within noise"],
        [
            [f"`{r['candidate']}`" + (" (**champion**)" if r["candidate"] == sel["champion"] else ""),
             r["kind"], *(_f(x) for x in r["folds"]), _f(r["mean"]),
             "-" if r["candidate"] == sel["best"] else f"{r['versus_best'][0]:+.4f} to "
             f"{r['versus_best'][1]:+.4f}",
             "yes" if r["within_noise"] else ""]
            for r in sel["table"]
        ],
    )  # fmt: skip
    return (
        f"Every candidate was refit on each fold by its stage's own function (the split moved back in time) "
        f"and scored on the fold's test window ({folds}). The rule: the best mean {metric} over the folds; "
        f"a paired bootstrap ({sel['bootstrap']} resamples of each fold's rows, the same for each candidate) "
        f"gives each candidate's {conf} interval of the difference to the best; among those whose interval "
        f"holds 0, select.prefer ({sel['prefer']}) decides. {sel['reason']}\n\n{table}"
    )


def card_markdown(card: dict[str, Any]) -> str:
    name, valid_part = card["champion"], card["valid_part"]
    test = card["test_metrics"]
    metric_names = list(RESULT_METRICS.values())
    results = _table(
        [
            "candidate",
            "selected",
            f"folds mean {RESULT_METRICS.get(card['selection']['metric'], card['selection']['metric'])}",
            *(f"valid {m}" for m in metric_names),
            *(f"test {m}" for m in metric_names),
        ],
        [
            [
                f"`{r['candidate']}`",
                "**champion**"
                if r["candidate"] == name
                else ("" if r["eligible"] else "not a select.candidate"),
                _f(r.get("folds_mean")),
                *(_f(r[f"{part}_{m}"]) for part in ("valid", "test") for m in RESULT_METRICS),
            ]
            for r in card["results"]
        ],
    )
    label = card["label"]
    label_table = _table(
        ["setting", "value"],
        [
            ["table", f"`{label['table']}`"],
            ["column", f"`{label['column']}`"],
            ["threshold", None if label["threshold"] is None else f"{label['threshold']:g}"],
            ["positive_value", label["positive_value"]],
            ["missing_positive", str(label["missing_positive"]).lower()],
        ],
    )
    windows = _table(
        ["part", "first", "last", "rows", "positive rate"],
        [
            [f"`{part}`", w["first"], w["last"], f"{w['rows']:,}", _p(w["positive_rate"])]
            for part, w in sorted(card["windows"].items(), key=lambda kv: PARTS.index(kv[0]))
        ],
    )
    rates = card["base_rate"]
    base = _table(
        ["rows", "count", "positive rate", "mean predicted"],
        [
            [f"validation (`{valid_part}`)", f"{rates['valid']['rows']:,}",
             _p(rates["valid"]["positive_rate"]), _p(rates["valid"]["mean_predicted"])],
            ["test", f"{rates['test']['rows']:,}",
             _p(rates["test"]["positive_rate"]), _p(rates["test"]["mean_predicted"])],
        ],
    )  # fmt: skip
    bins = card["calibration"]["bins"]
    calibration = _table(
        ["bin", "rows", "mean predicted", "observed rate"],
        [
            [
                f"[{b['low']:.1f}, {b['high']:.1f}{']' if i == len(bins) - 1 else ')'}",
                f"{b['rows']:,}",
                _f(b["mean_predicted"], 3),
                _f(b["observed_rate"], 3),
            ]
            for i, b in enumerate(bins)
        ],
    )
    segments = card["segments"]
    if segments:
        by = ", ".join(dict.fromkeys(_segment_name(s) for s in segments))
        segment_text = (
            f"Test window, by {by}: up to {SEGMENT_FEATURES} categorical features with "
            f"{SEGMENT_LEVELS[0]} to {SEGMENT_LEVELS[1]} levels (those known on every row first, then the "
            "fewest levels) and the calendar month of the time column. Segments with fewer than "
            f"{MIN_SEGMENT_ROWS} rows or a single class have no ROC AUC.\n\n"
            + _table(
                ["feature", "level", "rows", "positive rate", "ROC AUC"],
                [
                    [
                        _segment_name(s),
                        s["level"],
                        f"{s['rows']:,}",
                        _p(s["positive_rate"]),
                        _f(s["roc_auc"]),
                    ]
                    for s in segments
                ],
            )
        )
    else:
        segment_text = (
            f"No categorical feature has {SEGMENT_LEVELS[0]} to {SEGMENT_LEVELS[1]} levels on the test "
            "window and there is no time column: no segments."
        )
    caveat_text = "\n".join(f"- {c}" for c in card["caveats"])
    features = ", ".join(f"`{f['name']}` ({f['kind']})" for f in card["feature_spec"]["features"])
    data = "\n".join(f"- `{k}`: `{v}`" for k, v in sorted(card["data_version"].items()))
    commit = card["git"].get("commit")
    exp = f", experiment `{card['git']['experiment']}`" if card["git"].get("experiment") else ""
    lineage = card.get("lineage")
    if lineage:
        source = lineage.get("collect", {}).get("outs", {})
        stages = ", ".join(f"`{s}`" for s in lineage)
        origin = (
            "Source data (DVC md5): "
            + ", ".join(f"`{k}` `{v}`" for k, v in sorted(source.items()))
            + f". Params, code and data of every upstream stage ({stages}) as `dvc.lock` recorded them "
            "are in `model_card.json` under `lineage`."
        )
    else:
        origin = "No lineage: select ran outside `dvc repro`, so `dvc.lock` does not describe its inputs."
    sel = card["selection"]
    where = (
        f"{len(sel['folds'])} walk-forward folds before the test window"
        if sel["by"] == "folds"
        else f"validation rows of `{valid_part}`"
    )
    return f"""# Model card: {name}

{card["description"]}

The champion is `{name}` (**{card["model"]["type"]}**), selected by **{card["selected_by"]}** among
the candidates below ({where}; the test window never chose anything).
Decision threshold: **{card["threshold"]:.4f}** (chosen on `{valid_part}`). On the test window: ROC AUC
{test["roc_auc"]:.4f}, PR AUC {test["pr_auc"]:.4f}, on {test["rows"]:,} rows.

## Intended use
{card["intended_use"]}

## Out of scope
{card["out_of_scope"]}

## Label
{label["definition"]}

{label_table}

## Data windows
{windows}

## What the champion is
{_model_section(card["model"], valid_part)}

## How it was chosen
{selection_section(card["selection"])}

## Results
Every candidate on the folds (mean), the validation rows (`{valid_part}`) and the test window, side by
side; the folds chose ({card["selected_by"]}), the test window is reported only.

{results}

The champion on the test window at its threshold: F1 {test["f1"]:.4f}, precision {test["precision"]:.4f},
recall {test["recall"]:.4f}, accuracy {test["accuracy"]:.4f}; it flags {_pct(test["predicted_positive_rate"])}
of the rows.

## Base rate and calibration
{base}

Calibration on the test window: {len(bins)} equal-width bins of the predicted probability (expected
calibration error {_f(card["calibration"]["ece"])}).

{calibration}

## Per-segment results
{segment_text}

## Caveats
{caveat_text}

## Features
Target `{card["feature_spec"]["target"]}`. {features}.

## Data version (DVC md5 of the inputs)
{data}

## Lineage
{origin}

## Provenance
{f"git commit `{commit}`" if commit else "git commit unknown (not run inside a git repository)"}{exp}.
"""
