"""The ``ontime`` command: one sub-command per pipeline stage (``dvc.yaml`` calls these), and tools.

Each command's module declares its own command line beside its ``main()``: ``SUMMARY`` (its line in
``ontime --help``), ``add_arguments(parser)`` (its description and options) and ``run(args)``
(``main`` called with the parsed options by keyword). This dispatcher only names the modules: it
imports the one command it runs, and reads the summaries for ``ontime --help`` from the modules'
source, so help stays fast (the stages import torch) and editing a stage's help re-runs that stage
alone (and those importing its module), not the whole graph.

To add a stage: write those three beside its ``main(params_path, ...)``, add a row to STAGES, and
add the stage to dvc.yaml with the same options and, in its deps, exactly the modules it runs
(``python dev/deps.py --write`` writes them; tests/unit/test_cli.py and tests/unit/test_graph.py check both).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ontime.errors import Interrupted, OntimeError

# The stages of dvc.yaml, in its order: command -> the module declaring it.
STAGES: dict[str, str] = {
    "collect": "ontime.data.collect",
    "clean": "ontime.data.clean",
    "featurize": "ontime.data.featurize",
    "split": "ontime.data.split",
    "analyze": "ontime.data.analyze",
    "train": "ontime.training.train",
    "finetune": "ontime.training.finetune",
    "tune": "ontime.training.tune",
    "baseline": "ontime.training.baseline",
    "linear": "ontime.training.linear",
    "svm": "ontime.training.svm",
    "ensemble": "ontime.training.ensemble",
    "fold": "ontime.training.folds",
    "evaluate": "ontime.evaluation.evaluate",
    "select": "ontime.evaluation.select",
    "package": "ontime.serving.package",
    "report": "ontime.reports.stage",
}
# The stages of studies/dvc.yaml, in its order: run by `dvc repro studies/dvc.yaml`, never by a plain
# `dvc repro` (they retrain many models; src/ontime/studies/__init__.py).
STUDIES: dict[str, str] = {
    "backtest": "ontime.studies.backtest",
    "strategies": "ontime.studies.strategies",
    "learning_curve": "ontime.studies.learning_curve",
}
# The commands outside the pipeline.
TOOLS: dict[str, str] = {
    "params": "ontime.params",
    "predict": "ontime.serving.predict",
    "monitor": "ontime.reports.monitor",
    "outcomes": "ontime.live.outcomes",
    "registry": "ontime.registry",
    "replay": "ontime.live.replay",
    "gate": "ontime.live.gate",
    "compare": "ontime.compare",
}
COMMANDS: dict[str, str] = {**STAGES, **STUDIES, **TOOLS}


def source(module: str) -> Path:
    """The file of ``module``, an ``ontime`` module, found without importing it or its packages."""
    path = Path(__file__).parent.joinpath(*module.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def summary(module: str) -> str:
    """``module``'s ``SUMMARY``, read from its source: importing it would import torch and the like."""
    for node in ast.parse(source(module).read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "SUMMARY" for t in node.targets
        ):
            return str(ast.literal_eval(node.value))
    raise ValueError(f"{module} declares no SUMMARY (its line in `ontime --help`)")


def command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs: its first word that is not an option; None when there is none, it
    is no command, or ``--help`` comes before it (``ontime --help`` lists every command)."""
    for word in argv:
        if word in ("-h", "--help"):
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``ontime`` parser; ``command``'s sub-parser holds its options (its module is imported).

    Without ``command``, no command module is imported: each is listed with its summary only.
    """
    parser = argparse.ArgumentParser(
        prog="ontime",
        description="Stages of the ontime pipeline. Normally run through `dvc repro`, which passes "
        "the paths declared in dvc.yaml; run one by hand with the same arguments.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")
    for name, module_name in COMMANDS.items():
        if name == command:
            module = importlib.import_module(module_name)
            p = sub.add_parser(name, help=module.SUMMARY)
            module.add_arguments(p)
            p.set_defaults(run=module.run)
        else:
            sub.add_parser(name, help=summary(module_name) if command is None else None)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed with the options of the command it names (``args.run`` runs it)."""
    return build_parser(command_of(argv)).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and os.environ.get("PYTHONHASHSEED") != "0":
        # String hashing is salted per process, so the iteration order of sets of strings differs
        # between runs; Evidently sums per-category values in such an order, which changes the last
        # digits of its drift scores. A fixed seed makes every stage's output independent of the
        # process. Only Python's start-up reads PYTHONHASHSEED: run again with it, in this process
        # (same pid, for dvc and torchrun). A call with an explicit argv (tests, in-process) does not.
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        os.execve(sys.executable, [sys.executable, "-m", "ontime", *sys.argv[1:]], env)
    argv = sys.argv[1:] if argv is None else list(argv)
    command = command_of(argv)
    # Fixed thread counts keep results repeatable and the machine responsive (set before the
    # command's module, which parsing imports, imports polars).
    os.environ.setdefault("POLARS_MAX_THREADS", str(os.cpu_count() or 1))
    try:
        args = build_parser(command).parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        code = args.run(args)
    except Interrupted as exc:  # Ctrl-C in a training loop: its message says how to resume
        print(f"ontime {command}: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"ontime {command}: interrupted; nothing was written (re-run to start again)", file=sys.stderr)
        return 130
    except OntimeError as exc:
        print(f"ontime {command}: error: {exc}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
