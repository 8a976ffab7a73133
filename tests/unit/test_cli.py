"""The ``ontime`` command line: each command declares its options in its own module, beside its
``main()``; the dispatcher's table agrees with dvc.yaml, passes every option by keyword, and stays
light to import."""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import re
import shlex
import subprocess
import sys
from typing import Any

import pytest
import yaml

from ontime import cli
from ontime.errors import ConfigError, Interrupted
from tests.conftest import REPO

MAIN_STAGES: dict[str, Any] = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
STUDY_STAGES: dict[str, Any] = yaml.safe_load((REPO / "studies/dvc.yaml").read_text())["stages"]
DVC_STAGES = {**MAIN_STAGES, **STUDY_STAGES}


def dvc_argv(stage: str) -> list[str]:
    """The arguments dvc.yaml passes to ``ontime`` for ``stage`` (a ``foreach``'s ``do``), ``${item}``
    as "1" and other ``${...}`` interpolations as "x"."""
    body = DVC_STAGES[stage].get("do", DVC_STAGES[stage])
    cmd = re.sub(r"\$\{[^}]*\}", "x", str(body["cmd"]).replace("${item}", "1"))
    words = shlex.split(cmd)
    return words[words.index("ontime") + 1 :]


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """``parser``'s own options and positionals (not -h)."""
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def test_the_table_has_exactly_the_dvc_stages() -> None:
    assert list(cli.STAGES) == list(MAIN_STAGES), "cli.STAGES lists dvc.yaml's stages, in its order"
    assert list(cli.STUDIES) == list(STUDY_STAGES), "cli.STUDIES: studies/dvc.yaml's, in order"
    assert list(cli.COMMANDS) == [*cli.STAGES, *cli.STUDIES, *cli.TOOLS]
    tools = {"params", "predict", "monitor", "outcomes", "registry", "replay", "gate", "compare"}
    assert tools <= set(cli.TOOLS)


@pytest.mark.parametrize("stage", sorted(DVC_STAGES))
def test_dvc_command_parses_to_its_stage(stage: str) -> None:
    argv = dvc_argv(stage)
    assert argv[0] == stage
    ns = cli.parse_args(argv)
    assert ns.command == stage
    assert ns.run is importlib.import_module(cli.COMMANDS[stage]).run
    assert ns.params == "params.yaml"
    # every option the stage declares has a value (dvc.yaml passes it, or it has a default)
    for action in options(subparser(cli.build_parser(stage), stage)):
        assert getattr(ns, action.dest) is not None, f"{stage}: {action.option_strings} is missing"


@pytest.mark.parametrize("stage", sorted(DVC_STAGES))
def test_the_stage_module_is_a_dependency_and_gets_every_option_by_keyword(
    stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module_name = cli.COMMANDS[stage]
    rel = "src/" + module_name.replace(".", "/") + ".py"
    deps = [str(d).rstrip("/") for d in DVC_STAGES[stage].get("do", DVC_STAGES[stage])["deps"]]
    assert any(rel == d or rel.startswith(d + "/") for d in deps), f"{stage} runs {rel}: not in its deps"

    module = importlib.import_module(module_name)
    signature = inspect.signature(module.main)
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(module, "main", lambda *a, **kw: calls.append((a, kw)))
    ns = cli.parse_args(dvc_argv(stage))
    ns.run(ns)
    [(positional, keywords)] = calls
    assert not positional, f"{stage}: run() passes {positional} by position; pass each option by name"
    signature.bind(**keywords)  # every name is one of main's, every required one is there
    assert keywords["params_path"] == "params.yaml"
    # each option dvc.yaml passes reaches main: no option is parsed and then dropped
    given = {a.dest for a in options(subparser(cli.build_parser(stage), stage))}
    assert len(keywords) == len(given), f"{stage}: main gets {sorted(keywords)}; options: {sorted(given)}"


def test_the_runner_passes_options_by_keyword(monkeypatch: pytest.MonkeyPatch) -> None:
    from ontime.evaluation import select

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(select, "main", lambda **kw: calls.append(kw))
    argv = dvc_argv("select")
    assert cli.main(argv) == 0
    ns = cli.parse_args(argv)
    assert calls == [
        {
            "params_path": ns.params,
            "evaluation": ns.evaluation,
            "candidate_dirs": ns.candidate,
            "split_dir": ns.split,
            "spec_path": ns.spec,
            "predictions_dir": ns.predictions,
            "folds_dir": ns.folds,
            "out_dir": ns.out,
            "metrics_path": ns.metrics,
            "ensemble_folds": ns.ensemble_folds,
        }
    ]
    assert ns.ensemble_folds == "models/ensemble/folds.parquet"
    assert len(ns.candidate) == 8


def test_main_result_is_the_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    from ontime.reports import monitor

    monkeypatch.setattr(monitor, "main", lambda **kw: 1)  # monitor's way: 1, drift above the threshold
    assert cli.main(["monitor", "--log", "x"]) == 1


def test_only_the_command_that_runs_is_imported() -> None:
    code = (
        "import sys; from ontime.cli import parse_args; parse_args(['split', '--features', 'f', "
        "'--out', 'o', '--metrics', 'm']); print(sorted(m for m in sys.modules if m.startswith('ontime.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    modules = ast.literal_eval(out.stdout)
    assert "ontime.data.split" in modules
    assert not [m for m in modules if m.split(".")[1] in ("training", "evaluation", "serving", "reports")]
    assert "ontime.data.collect" not in modules


@pytest.mark.parametrize(
    ("exc", "code"), [(Interrupted("stop"), 130), (KeyboardInterrupt(), 130), (ConfigError("bad"), 2)]
)
def test_errors_become_exit_codes(monkeypatch: pytest.MonkeyPatch, exc: BaseException, code: int) -> None:
    from ontime.data import collect

    def fail(**kw: Any) -> None:
        raise exc

    monkeypatch.setattr(collect, "main", fail)
    assert cli.main(["collect", "--out", "x"]) == code


def test_help_lists_every_command_with_a_one_line_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text = cli.build_parser().format_help()
    listed = re.findall(r"^ {4}(\w+)(?:\n {5,}| +)(\S.*)$", text, flags=re.MULTILINE)
    assert [name for name, _ in listed] == list(cli.COMMANDS)
    for name, line in listed:
        module = importlib.import_module(cli.COMMANDS[name])
        assert line == module.SUMMARY == cli.summary(cli.COMMANDS[name]), name
        assert "\n" not in module.SUMMARY, name
        assert len(module.SUMMARY) <= 60, f"{name}: SUMMARY fits one line of `ontime --help` at 80 columns"


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_a_command_declares_its_options_in_its_own_module(name: str) -> None:
    module_name = cli.COMMANDS[name]
    tree = ast.parse(cli.source(module_name).read_text())
    top = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {"main", "add_arguments", "run"} <= top, f"{module_name}: add_arguments and run beside main"

    # the command's options are exactly those its module's add_arguments adds, with its help
    fresh = argparse.ArgumentParser()
    importlib.import_module(module_name).add_arguments(fresh)
    parser = subparser(cli.build_parser(name), name)
    assert [a.option_strings or a.dest for a in options(parser)] == [
        a.option_strings or a.dest for a in options(fresh)
    ]
    assert parser.description, f"{name}: add_arguments sets no description"
    assert parser.description == fresh.description
    text = parser.format_help()
    for action in options(parser):
        if isinstance(action, argparse._SubParsersAction):  # registry's actions
            continue
        assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
        assert all(opt in text for opt in action.option_strings), name
    if name in DVC_STAGES:
        assert "--params" in text


def test_the_dispatcher_declares_no_command_options() -> None:
    # cli.py is a dependency of every stage: a stage's options and help live in the stage's module
    tree = ast.parse((REPO / "src/ontime/cli.py").read_text())
    added = [
        ast.literal_eval(node.args[0])
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "add_argument"
    ]
    assert added == ["-v"]


def test_cli_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from ontime.cli import build_parser; build_parser().format_help(); "
        "print(sorted(m for m in ('torch', 'evidently', 'lightgbm', 'polars') if m in sys.modules)); "
        "print(sorted(m for m in sys.modules if m.startswith('ontime')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    heavy, modules = out.stdout.splitlines()
    assert heavy == "[]"
    assert modules == str(["ontime", "ontime.cli", "ontime.errors"]), "ontime --help imports no command"
