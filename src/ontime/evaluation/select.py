"""select: the champion among the candidates, by walk-forward folds before the test window.

Each candidate's ``select.metric`` is computed on each fold's test window (``ontime fold``: the split
moved back, every candidate refit by its stage's function) and averaged over the folds, each fold a
period of its own: the mean, not the metric of the pooled rows, because the folds' base rates differ
(October and November 2013: 24% and 18% positive here), and a pooled ROC AUC would reward a model for
ranking one month's rows above another's, which no decision made within a period uses. The
candidate with the best mean is the best; a paired bootstrap (rows resampled within each fold, the
same rows for every candidate) gives each candidate's interval of the difference to it. Candidates
whose interval holds 0 are within noise of the best, and ``select.prefer`` picks among them: the best
mean itself (``higher_mean``), the simplest model family (``simpler``) or the cheapest to serve
(``cheaper``). With ``select.folds: []``, the champion has the best metric on the validation rows
(``evaluate.valid_part``), as before the folds. The test window never chooses anything.

Copies the chosen candidate folder to ``models/champion/`` with a model card (JSON and Markdown,
``ontime.evaluation.model_card``) that shows the decision: the fold table, the interval, the rule
that picked the champion, and the test figures beside them.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml
from sklearn.metrics import average_precision_score

from ontime import command
from ontime.candidates import CANDIDATE_FILE
from ontime.config import load_params, section
from ontime.config import seed as read_seed
from ontime.config.clean import CleanConfig
from ontime.config.data import DataConfig
from ontime.config.evaluate import EvaluateConfig
from ontime.config.select import FOLD_INFO, FOLD_PREDICTIONS, SelectConfig
from ontime.errors import DataError
from ontime.evaluation.model_card import PARTS, card_markdown, describe_model, model_card
from ontime.io import atomic_outputs, read_json, write_json
from ontime.lineage import md5, stage_params, upstream

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"log_loss", "brier"}
# select.prefer: the order of the model families, first preferred (ties: the higher mean).
FAMILY_ORDER = {
    "simpler": ("linear", "svm", "lightgbm", "torch", "ensemble"),
    # Serving cost per row: a dot product; trees; a kernel map against the landmarks; a network; the
    # sum of the members'.
    "cheaper": ("linear", "lightgbm", "svm", "torch", "ensemble"),
}


def choose(metrics: dict[str, Any], cfg: SelectConfig) -> str:
    """The candidate with the best ``valid`` value of ``cfg.metric``; ties go to the earlier one."""
    missing = [c for c in cfg.candidates if c not in metrics]
    if missing:
        raise DataError(f"select.candidates {missing} have no evaluation; have {sorted(metrics)}")
    sign = -1.0 if cfg.metric in LOWER_IS_BETTER else 1.0
    scores = {c: sign * float(metrics[c]["valid"][cfg.metric]) for c in cfg.candidates}
    return max(cfg.candidates, key=lambda c: (scores[c], -cfg.candidates.index(c)))


# ------------------------------------------------------------------------------------- folds ---
@dataclass
class Fold:
    """One fold's test rows: the labels, each candidate's probabilities, and what ``fold.json`` says."""

    k: int
    y: np.ndarray
    p: dict[str, np.ndarray]
    info: dict[str, Any]


def read_folds(
    folds_dir: str | Path, cfg: SelectConfig, target: str, ensemble_folds: str | Path | None = None
) -> list[Fold]:
    """The folds of ``select.folds`` from ``folds_dir/<k>/``, checked: both classes on each fold's
    rows, a probability for every candidate. The ensembles' fold predictions (cross-fitted: each
    fold's weighted on the other folds) come from ``ensemble_folds`` (the ensemble stage's
    ``folds.parquet``: a ``fold`` column, one column per ensemble, the folds' rows in order)."""
    if ensemble_folds is not None and not Path(ensemble_folds).is_file():
        raise DataError(f"{ensemble_folds}: not found; run the ensemble stage (dvc repro ensemble)")
    extra = pl.read_parquet(ensemble_folds) if ensemble_folds is not None else None
    out = []
    for k in cfg.folds:
        path = Path(folds_dir) / str(k) / FOLD_PREDICTIONS
        if not path.is_file():
            raise DataError(f"{path}: not found; run the fold stages (dvc repro select)")
        df = pl.read_parquet(path)
        if extra is not None:
            rows = extra.filter(pl.col("fold") == k).drop("fold")
            if rows.height != df.height:
                raise DataError(
                    f"{ensemble_folds}: {rows.height:,} rows for fold {k}, {path} has {df.height:,}; they "
                    "come from different runs: re-run the ensemble stage (dvc repro ensemble)"
                )
            df = df.hstack(rows.select([c for c in rows.columns if c not in df.columns]))
        missing = [c for c in [target, *cfg.candidates] if c not in df.columns]
        if missing:
            raise DataError(
                f"{path}: no column(s) {missing}; the fold ran with other candidates: re-run it "
                f"(dvc repro fold@{k}; the ensembles' come from the ensemble stage's --ensemble-folds file)"
            )
        y = df.get_column(target).to_numpy().astype(np.int64)
        if not 0 < y.sum() < len(y):
            raise DataError(
                f"fold {k} ({path}): its {len(y):,} test rows hold one class only, so no candidate can "
                "be rated on it; lengthen select.fold_days or choose other select.folds"
            )
        p = {c: df.get_column(c).to_numpy().astype(np.float64) for c in cfg.candidates}
        out.append(Fold(k=k, y=y, p=p, info=read_json(path.parent / FOLD_INFO)))
    return out


class _Scorer:
    """``metric`` of one candidate on one fold's rows under row weights (bootstrap counts), fast for
    ROC AUC: the probabilities are ranked once, each resample is two bincounts."""

    def __init__(self, metric: str, y: np.ndarray, p: np.ndarray) -> None:
        self.metric, self.y, self.p = metric, y.astype(np.float64), p
        if metric == "roc_auc":
            _, self.group = np.unique(p, return_inverse=True)
            self.n_groups = int(self.group.max()) + 1

    def __call__(self, w: np.ndarray) -> float:
        y, p = self.y, self.p
        if self.metric == "roc_auc":
            pos = np.bincount(self.group, weights=w * y, minlength=self.n_groups)
            neg = np.bincount(self.group, weights=w * (1.0 - y), minlength=self.n_groups)
            below = np.cumsum(neg) - neg
            return float(np.sum(pos * (below + 0.5 * neg)) / (pos.sum() * neg.sum()))
        if self.metric == "log_loss":
            q = np.clip(p, 1e-15, 1 - 1e-15)
            return float(-np.sum(w * (y * np.log(q) + (1 - y) * np.log(1 - q))) / w.sum())
        if self.metric == "brier":
            return float(np.sum(w * (p - y) ** 2) / w.sum())
        return float(average_precision_score(y, p, sample_weight=w))


def decide(folds: list[Fold], cfg: SelectConfig, kinds: dict[str, str], seed: int) -> dict[str, Any]:
    """The champion from the folds: the best mean of ``cfg.metric``, or by ``cfg.prefer`` among the
    candidates within noise of it; the fold table and every candidate's interval against the best."""
    sign = -1.0 if cfg.metric in LOWER_IS_BETTER else 1.0
    names = cfg.candidates
    scorers = {c: [_Scorer(cfg.metric, f.y, f.p[c]) for f in folds] for c in names}
    ones = [np.ones(len(f.y)) for f in folds]
    table = {c: [scorers[c][i](ones[i]) for i in range(len(folds))] for c in names}
    mean = {c: float(np.mean(table[c])) for c in names}
    ranked = sorted(names, key=lambda c: (-sign * mean[c], names.index(c)))
    best = ranked[0]
    rng = np.random.default_rng(seed)
    diffs = {c: np.empty(cfg.bootstrap) for c in names}
    for b in range(cfg.bootstrap):
        weights = [np.bincount(rng.integers(0, len(f.y), len(f.y)), minlength=len(f.y)) for f in folds]
        # a resample with one class in a fold has no ROC AUC; with thousands of rows it never happens
        score = {c: np.mean([scorers[c][i](w) for i, w in enumerate(weights)]) for c in names}
        for c in names:
            diffs[c][b] = sign * (score[c] - score[best])
    tail = (1 - cfg.confidence) / 2
    interval = {c: (float(np.quantile(d, tail)), float(np.quantile(d, 1 - tail))) for c, d in diffs.items()}
    tied = [c for c in ranked if interval[c][1] >= 0]  # best first; its own interval is (0, 0)
    if cfg.prefer == "higher_mean":
        champion = best
    else:
        order = FAMILY_ORDER[cfg.prefer]
        unknown = sorted({kinds[c] for c in tied} - set(order))
        if unknown:
            raise DataError(f"select.prefer {cfg.prefer}: no rank for the model kind(s) {unknown}")
        champion = min(tied, key=lambda c: (order.index(kinds[c]), ranked.index(c)))
    runner_up = next((c for c in ranked if c != champion), None)
    # The reported interval: champion minus the runner-up (the best, when prefer chose another).
    if runner_up is None:
        reported = None
    elif champion == best:
        reported = [-interval[runner_up][1], -interval[runner_up][0]]
    else:
        reported = list(interval[champion])
    return {
        "by": "folds",
        "metric": cfg.metric,
        "prefer": cfg.prefer,
        "confidence": cfg.confidence,
        "bootstrap": cfg.bootstrap,
        "folds": [
            {
                "fold": f.k,
                "windows": f.info.get("windows"),
                "rows": len(f.y),
                "positive_rate": _r6(f.y.mean()),
            }
            for f in folds
        ],
        "table": [
            {
                "candidate": c,
                "kind": kinds[c],
                "folds": [_r6(x) for x in table[c]],
                "mean": _r6(mean[c]),
                "versus_best": [_r6(x) for x in interval[c]],
                "within_noise": c in tied,
            }
            for c in ranked
        ],
        "best": best,
        "champion": champion,
        "runner_up": runner_up,
        "interval": None if reported is None else [_r6(x) for x in reported],
        "reason": _reason(cfg, best, champion, runner_up, mean, interval, tied, kinds),
    }


def _r6(x: float) -> float:
    return round(float(x), 6)


def _reason(
    cfg: SelectConfig,
    best: str,
    champion: str,
    runner_up: str | None,
    mean: dict[str, float],
    interval: dict[str, tuple[float, float]],
    tied: list[str],
    kinds: dict[str, str],
) -> str:
    """Why the champion won, in one sentence."""
    head = f"`{best}` has the best mean fold {cfg.metric} ({mean[best]:.4f})"
    other = "" if runner_up is None else f"the runner-up `{runner_up}` ({mean[runner_up]:.4f})"
    if champion != best:
        among = ", ".join(f"`{c}`" for c in tied)
        return (
            f"{head}, but {len(tied)} candidates are within noise of it ({among}), and select.prefer "
            f"{cfg.prefer} picks `{champion}` ({kinds[champion]}, mean {mean[champion]:.4f}) among them."
        )
    if runner_up is None:
        return f"{head}; it is the only candidate."
    low, high = interval[runner_up]
    span = f"difference interval {low:+.4f} to {high:+.4f}"
    if high < 0:
        return f"{head}; {other} trails it beyond noise ({span})."
    return (
        f"{head}; {other} is within noise of it ({span} holds 0), "
        f"and select.prefer {cfg.prefer} keeps the best mean."
    )


def by_validation(metrics: dict[str, Any], cfg: SelectConfig, valid_part: str) -> dict[str, Any]:
    """The decision without folds (``select.folds: []``): the best ``cfg.metric`` on ``valid_part``."""
    name = choose(metrics, cfg)
    return {
        "by": "validation",
        "metric": cfg.metric,
        "champion": name,
        "reason": f"`{name}` has the best {cfg.metric} on `{valid_part}` "
        f"({metrics[name]['valid'][cfg.metric]:.4f}); select.folds is empty: no folds rated the candidates.",
    }


# -------------------------------------------------------------------------------------- main ---
def _read(path: Path, columns: list[str]) -> pl.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: not found; run the pipeline up to select (dvc repro select)")
    missing = [c for c in columns if c not in pl.scan_parquet(path).collect_schema()]
    if missing:
        raise DataError(f"{path}: column(s) {missing} are missing; re-run the stage that wrote it")
    return pl.read_parquet(path, columns=columns)


def main(
    params_path: str,
    evaluation: str,
    candidate_dirs: list[str],
    split_dir: str,
    spec_path: str,
    predictions_dir: str,
    folds_dir: str | None,
    out_dir: str,
    metrics_path: str,
    ensemble_folds: str | None = None,
) -> None:
    params = load_params(params_path)
    cfg = section(params, "select", SelectConfig, source=params_path)
    data = section(params, "data", DataConfig, source=params_path)
    label = section(params, "clean", CleanConfig, source=params_path).label
    valid_part = section(params, "evaluate", EvaluateConfig, source=params_path).valid_part
    metrics = read_json(evaluation)
    folders = {read_json(Path(d) / CANDIDATE_FILE)["name"]: Path(d) for d in candidate_dirs}
    missing = [c for c in cfg.candidates if c not in folders]
    if missing:
        raise DataError(f"select.candidates {missing}: no model folder was given; pass --candidate for each")
    choose(metrics, cfg)  # every candidate has an evaluation
    spec = read_json(spec_path)
    target, time_column = spec["target"], spec.get("time_column")
    if cfg.folds:
        if folds_dir is None:
            raise DataError(f"select.folds is {cfg.folds}: pass --folds (the fold stages' folder)")
        kinds = {c: read_json(folders[c] / CANDIDATE_FILE)["kind"] for c in cfg.candidates}
        selection = decide(read_folds(folds_dir, cfg, target, ensemble_folds), cfg, kinds, read_seed(params))
    else:
        selection = by_validation(metrics, cfg, valid_part)
    name = selection["champion"]
    keep = [c for c in (time_column, target) if c]
    categorical = [f["name"] for f in spec["features"] if f["kind"] == "categorical"]
    parts = {
        part: _read(Path(split_dir) / f"{part}.parquet", [*(categorical if part == "test" else []), *keep])
        for part in PARTS
    }
    predictions = {
        part: _read(Path(predictions_dir) / f"{part}.parquet", [target, name]) for part in ("valid", "test")
    }
    if not predictions["test"].get_column(target).equals(parts["test"].get_column(target)):
        raise DataError(
            f"{predictions_dir}/test.parquet and {split_dir}/test.parquet do not hold the same rows in "
            "the same order; they come from different runs: re-run evaluate (dvc repro evaluate)"
        )
    inputs = {str(p): md5(p) for p in sorted(Path(split_dir).glob("*.parquet"))}
    inputs |= {str(p): md5(p) for p in sorted(Path(predictions_dir).glob("*.parquet"))}
    inputs[spec_path] = md5(Path(spec_path))
    if cfg.folds and folds_dir is not None:
        inputs |= {str(p): md5(p) for k in cfg.folds for p in [Path(folds_dir) / str(k) / FOLD_PREDICTIONS]}
        if ensemble_folds is not None:
            inputs[ensemble_folds] = md5(Path(ensemble_folds))
    lineage = upstream("select", check={evaluation: md5(Path(evaluation))})
    if lineage is None:
        log.warning("select: dvc.lock does not describe these inputs (not run by dvc repro): no lineage")
    else:
        # The params each upstream stage ran with, not whatever the workspace file says now.
        params = {**params, **stage_params(lineage)}
    card = model_card(
        name=name, cfg=cfg, metrics=metrics, params=params, inputs=inputs, spec=spec, data=data,
        label=label, valid_part=valid_part, parts=parts, model=describe_model(folders[name]),
        predictions=predictions, lineage=lineage, selection=selection,
    )  # fmt: skip
    with atomic_outputs(out_dir, metrics_path) as (tmp, tmp_metrics):
        shutil.copytree(folders[name], tmp)
        write_json(tmp / "model_card.json", card)
        (tmp / "MODEL_CARD.md").write_text(card_markdown(card))
        (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        write_json(tmp / "feature_spec.json", spec)
        write_json(
            tmp_metrics,
            {
                "champion": name,
                "metric": cfg.metric,
                "selected_by": selection["by"],
                **(
                    {
                        "fold_mean": next(r["mean"] for r in selection["table"] if r["candidate"] == name),
                        "runner_up": selection["runner_up"],
                        "interval": selection["interval"],
                    }
                    if selection["by"] == "folds"
                    else {}
                ),
                "valid": metrics[name]["valid"][cfg.metric],
                "test_roc_auc": metrics[name]["test"]["roc_auc"],
                "threshold": metrics[name]["threshold"],
            },
        )
    log.info("select: champion %s: %s", name, selection["reason"])


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Pick the champion on walk-forward folds; its model card."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime select``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "Pick the champion by its mean metric over walk-forward folds before the test window, with a paired "
        "bootstrap interval and a declared tie-break (params `select`; `select.folds: []`: by the validation "
        "metric); copy it to the output folder with a model card (JSON and Markdown)."
    )
    command.add_params(parser)
    parser.add_argument("--evaluation", required=True, help="metrics file from evaluate")
    parser.add_argument("--candidate", action="append", required=True, help=command.CANDIDATE)
    parser.add_argument("--split", required=True, help="folder of split parts (hashed into the card)")
    parser.add_argument("--spec", required=True, help=command.SPEC)
    parser.add_argument(
        "--predictions", required=True, help="evaluate's predictions folder (for the model card)"
    )
    parser.add_argument(
        "--folds", help="the fold stages' folder (data/folds/<k>/predictions.parquet); for select.folds"
    )
    parser.add_argument(
        "--ensemble-folds",
        help="the ensemble stage's folds.parquet (the ensembles' cross-fitted fold predictions)",
    )
    parser.add_argument("--out", required=True, help="champion folder")
    parser.add_argument("--metrics", required=True, help="JSON: the champion and its scores")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(
        params_path=args.params,
        evaluation=args.evaluation,
        candidate_dirs=args.candidate,
        split_dir=args.split,
        spec_path=args.spec,
        predictions_dir=args.predictions,
        folds_dir=args.folds,
        out_dir=args.out,
        metrics_path=args.metrics,
        ensemble_folds=args.ensemble_folds,
    )
