"""tune: Bayesian hyperparameter search (optuna TPE) over the params of the train stage.

Each trial copies ``params.yaml``, sets its sampled values at dotted keys (``train.lr``,
``model.d_block``: the keys of ``dvc exp run -S key=value``), validates them with the train stage's
typed configs and trains on the ``train`` part, scored by its best ROC AUC on ``train_valid``. The
``test`` part is never read. Trials run one after another from a sampler seeded by ``seed``, so a
search that ``timeout_s`` does not cut short picks the same best params on every run (one machine).

``max_train_rows`` keeps the last rows of the train part in time order: the most recent weeks, the
nearest to the validation days, at a bounded cost per trial. ``best_overrides.txt`` then applies the
winner to the full train stage of the same run:
``eval "dvc exp run $(cat reports/tune/best_overrides.txt)"``. Its ``-S`` arguments first rebuild the
data side of the ``params.yaml`` the search ran with (``DATA_SECTIONS`` as overrides of ``conf/``:
``data=table``, the table, the label ...), then set the winning values; each is shell-quoted.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import polars as pl
from optuna.trial import FrozenTrial, TrialState

from ontime import command
from ontime.config import load_params, section, seed
from ontime.config.train import TrainConfig
from ontime.config.tune import TuneConfig, Value, check_space, configs, with_values
from ontime.errors import ConfigError, OntimeError
from ontime.io import atomic_outputs, write_json
from ontime.overrides import overrides_for
from ontime.spec import FeatureSpec, mask_optional, read_part
from ontime.training.loop import TrainingError, setup_runtime
from ontime.training.train import train

log = logging.getLogger(__name__)

# what best_overrides.txt rebuilds besides the winner: the data a run learned from, as conf/ overrides
DATA_SECTIONS = ("data", "clean", "featurize", "split", "serve", "seed")
TRIAL_ERRORS = (TrainingError, ConfigError, ValueError)  # a bad combination fails its trial only


class TuneError(OntimeError):
    """The search produced nothing usable (no trial completed)."""


def fmt(value: Value) -> str:
    """``value`` as Hydra's override grammar reads it back (``repr`` round-trips a float exactly)."""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def overrides_line(data: Sequence[str], values: dict[str, Value]) -> str:
    """``best_overrides.txt``: ``-S`` arguments of ``dvc exp run``, the ``data`` overrides first.

    Each override is shell-quoted (a plain word stays as it is), so ``eval "dvc exp run $(cat FILE)"``
    passes it as one argument; a line of plain words also works unquoted, ``dvc exp run $(cat FILE)``.
    """
    words = [*data, *(f"{key}={fmt(value)}" for key, value in values.items())]
    return " ".join(f"-S {shlex.quote(word)}" for word in words)


def recent_rows(df: pl.DataFrame, n: int | None, time_column: str | None) -> pl.DataFrame:
    """The last ``n`` rows in time order (all of them when ``n`` is None)."""
    if n is None or n >= df.height:
        return df
    return (df.sort(time_column, maintain_order=True) if time_column else df).tail(n)


def search(
    params: dict[str, Any],
    cfg: TuneConfig,
    *,
    spec: FeatureSpec,
    train_df: pl.DataFrame,
    valid_df: pl.DataFrame,
) -> optuna.Study:
    """Run up to ``cfg.n_trials`` trials one at a time, maximising validation ROC AUC.

    With ``cfg.pruning`` a trial stops once its ROC AUC after an epoch trails the median of earlier
    trials at that epoch; the first two trials always run in full, and no trial stops before epoch 2.
    """
    base = section(params, "train", TrainConfig)
    rt = setup_runtime(base.device, base.threads)
    seed_ = seed(params)

    def objective(trial: optuna.Trial) -> float:
        values = {key: space.suggest(trial, key) for key, space in cfg.space.items()}

        def on_epoch(epoch: int, row: dict[str, float]) -> None:
            if math.isfinite(auc := row["valid/roc_auc"]):
                trial.report(auc, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"epoch {epoch + 1}: valid ROC AUC {auc:.4f} below the median")

        try:
            trial_params = with_values(params, values, epochs=cfg.epochs)
            model_cfg, train_cfg, pre_cfg = configs(trial_params, source=f"tune trial {trial.number}")
            _, metrics = train(
                model_cfg=model_cfg, train_cfg=train_cfg, pre_cfg=pre_cfg, seed_=seed_, spec=spec,
                train_df=train_df, valid_df=valid_df, rt=rt, checkpoint_dir=None, live_dir=None,
                fingerprint_="", on_epoch=on_epoch,
            )  # fmt: skip
        except TRIAL_ERRORS as exc:
            trial.set_user_attr("error", str(exc))
            raise
        return float(metrics["valid_roc_auc"])

    def report(_: optuna.Study, t: FrozenTrial) -> None:
        value = None if t.value is None else round(t.value, 6)
        secs = t.duration.total_seconds() if t.duration else 0.0
        log.info("tune: trial %d %s, value %s, %s (%.1fs)", t.number, t.state.name, value, t.params, secs)

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial: report()
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed_),
        pruner=pruner if cfg.pruning else optuna.pruners.NopPruner(),
    )
    study.optimize(
        objective,
        n_trials=cfg.n_trials,
        timeout=cfg.timeout_s,
        n_jobs=1,
        catch=TRIAL_ERRORS,
        callbacks=[report],
    )
    return study


def write_trials(path: Path, study: optuna.Study, keys: list[str]) -> None:
    """One row per trial, in trial order: number, state, value (a pruned trial's last AUC), params.

    No wall-clock times: the file is a pipeline output and must not change between two runs of the
    same search (each trial's duration is logged instead).
    """
    rows: list[list[Any]] = [["number", "state", "value", *keys]]
    for t in sorted(study.trials, key=lambda t: t.number):
        value = "" if t.value is None else round(t.value, 6)
        rows.append(
            [t.number, t.state.name, value, *(fmt(t.params[k]) if k in t.params else "" for k in keys)]
        )
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def main(
    params_path: str,
    split_dir: str,
    spec_path: str,
    out_dir: str,
    metrics_path: str,
    config_dir: str = "conf",
) -> None:
    """Search the ``tune`` section's space, then write the results atomically.

    Args:
        params_path: ``params.yaml`` with sections ``tune``, ``model``, ``train``, ``preprocess``, ``seed``.
        split_dir: folder holding ``train.parquet`` and ``train_valid.parquet`` (never ``test``).
        spec_path: the feature spec written by featurize.
        out_dir: gets ``trials.csv``, ``best_params.json`` and ``best_overrides.txt``.
        metrics_path: JSON with ``best_valid_roc_auc``, ``best_trial`` and trial counts by state.
        config_dir: the Hydra ``conf/`` that best_overrides.txt overrides to rebuild the data sections.

    Raises:
        ConfigError: the ``tune`` section or a key of its space is invalid, or the data sections of
            ``params_path`` cannot be written as overrides of ``config_dir`` (before any trial).
        TuneError: no trial completed.
    """
    params = load_params(params_path)
    cfg = section(params, "tune", TuneConfig, source=params_path)
    configs(params, source=params_path)
    check_space(cfg, params, source=params_path)
    data_overrides = overrides_for(params, DATA_SECTIONS, config_dir)  # before the search: fail fast
    spec = FeatureSpec.load(spec_path)
    train_df = mask_optional(
        recent_rows(read_part(split_dir, "train", spec), cfg.max_train_rows, spec.time_column),
        spec,
        seed=seed(params),
        part="train",
    )
    valid_df = read_part(split_dir, "train_valid", spec)
    study = search(params, cfg, spec=spec, train_df=train_df, valid_df=valid_df)
    if len(study.trials) < cfg.n_trials:
        log.warning(
            "tune: tune.timeout_s=%s stopped the search after %d of %d trials: its outputs now depend "
            "on this machine's speed; raise tune.timeout_s for a reproducible search",
            cfg.timeout_s,
            len(study.trials),
            cfg.n_trials,
        )

    states = [t.state for t in study.trials]
    done, pruned, failed = (
        states.count(s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    )
    if not done:
        errors = [t.user_attrs["error"] for t in study.trials if "error" in t.user_attrs]
        raise TuneError(
            f"tune: no trial completed ({pruned} pruned, {failed} failed; first error: "
            f"{errors[0] if errors else None}); raise tune.timeout_s or tune.n_trials, set "
            "tune.pruning=false or narrow tune.space"
        )
    best, keys = study.best_trial, list(cfg.space)
    overrides = overrides_line(data_overrides, {k: best.params[k] for k in keys})
    metrics = {
        "best_valid_roc_auc": round(float(best.values[0]), 6),
        "best_trial": best.number,
        "n_trials_complete": done,
        "n_trials_pruned": pruned,
        "n_trials_failed": failed,
    }
    with atomic_outputs(out_dir, metrics_path) as (tmp, tmp_metrics):
        tmp.mkdir()
        write_trials(tmp / "trials.csv", study, keys)
        write_json(tmp / "best_params.json", {k: best.params[k] for k in keys})
        (tmp / "best_overrides.txt").write_text(overrides + "\n")
        write_json(tmp_metrics, metrics)
    log.info("tune: best trial %d, %s; apply it: dvc exp run %s", best.number, metrics, overrides)


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Hyperparameter search (optuna TPE) for the train stage."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime tune``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "Bayesian hyperparameter search (optuna TPE, params `tune`) on the train part, scored on "
        'train_valid; writes trials.csv, best_params.json and best_overrides.txt (apply with `eval "dvc exp '
        'run $(cat reports/tune/best_overrides.txt)"`: the data side of the run first, then the winning '
        "values)."
    )
    command.add_params(parser)
    parser.add_argument("--split", required=True, help=command.SPLIT)
    parser.add_argument("--spec", required=True, help=command.SPEC)
    parser.add_argument("--out", required=True, help="output folder for the search results")
    parser.add_argument("--metrics", required=True, help="JSON: best validation ROC AUC and trial counts")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(
        params_path=args.params,
        split_dir=args.split,
        spec_path=args.spec,
        out_dir=args.out,
        metrics_path=args.metrics,
    )
