"""The ``ontime`` command line: its stage table agrees with dvc.yaml, and it stays light to import."""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import subprocess
import sys
import types
from typing import Any

import pytest
import yaml

from ontime import cli
from ontime.errors import ConfigError, Interrupted
from tests.conftest import REPO

MAIN_STAGES: dict[str, Any] = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
STUDY_STAGES: dict[str, Any] = yaml.safe_load((REPO / "studies/dvc.yaml").read_text())["stages"]
DVC_STAGES = {**MAIN_STAGES, **STUDY_STAGES}
TABLE = {stage.name: stage for stage in (*cli.STAGES, *cli.STUDIES)}
# main's parameter for an option, where its name does not start as the option's does
ALIASES = {("ensemble", "candidate"): "member_dirs"}


def dvc_argv(stage: str) -> list[str]:
    """The arguments dvc.yaml passes to ``ontime`` for ``stage``, ``${...}`` interpolations as "x"."""
    cmd = re.sub(r"\$\{[^}]*\}", "x", str(DVC_STAGES[stage]["cmd"]))
    words = shlex.split(cmd)
    return words[words.index("ontime") + 1 :]


def main_params(module: str) -> tuple[list[str], int]:
    """The parameter names of ``module.main`` and how many are required, read without importing it."""
    path = REPO / "src" / (module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    names = [a.arg for a in fn.args.posonlyargs + fn.args.args]
    return names, len(names) - len(fn.args.defaults)


def test_the_table_has_exactly_the_dvc_stages() -> None:
    assert [s.name for s in cli.STAGES] == list(MAIN_STAGES), (
        "cli.STAGES lists dvc.yaml's stages, in its order"
    )
    assert [s.name for s in cli.STUDIES] == list(STUDY_STAGES), "cli.STUDIES: studies/dvc.yaml's, in order"


@pytest.mark.parametrize("stage", sorted(DVC_STAGES))
def test_dvc_command_parses_to_its_stage(stage: str) -> None:
    argv = dvc_argv(stage)
    assert argv[0] == stage
    ns = cli.build_parser().parse_args(argv)
    assert ns.command == stage
    assert ns.run is TABLE[stage]
    assert ns.params == "params.yaml"
    # every option main receives is one dvc.yaml passes (or has a default)
    for name, dest in zip(ns.run.args, ns.run.dests, strict=True):
        assert getattr(ns, dest) is not None, f"{stage}: {name} is missing"


@pytest.mark.parametrize("stage", sorted(DVC_STAGES))
def test_the_stage_module_is_a_dependency_and_takes_the_options_in_order(stage: str) -> None:
    row = TABLE[stage]
    rel = "src/" + row.module.replace(".", "/") + ".py"
    deps = [str(d).rstrip("/") for d in DVC_STAGES[stage]["deps"]]
    assert any(rel == d or rel.startswith(d + "/") for d in deps), f"{stage} runs {rel}: not in its deps"
    names, required = main_params(row.module)
    assert required <= 1 + len(row.args) <= len(names), f"{row.module}.main{tuple(names)}"
    assert names[0] == "params_path"
    for param, dest in zip(names[1:], row.dests, strict=False):
        expected = ALIASES.get((stage, dest))
        assert (param == expected) if expected else param.startswith(dest[:4]), (
            f"{stage}: main's {param} receives --{dest}; is the order in cli.STAGES right?"
        )


def test_the_runner_imports_lazily_and_passes_options_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def record(*args: Any) -> int:
        calls.append(args)
        return 3

    monkeypatch.setitem(sys.modules, "ontime.evaluation.select", types.SimpleNamespace(main=record))
    argv = dvc_argv("select")
    assert cli.main(argv) == 3  # main's int result is the exit code (monitor's way)
    ns = cli.build_parser().parse_args(argv)
    assert calls == [
        (ns.params, ns.evaluation, ns.candidate, ns.split, ns.spec, ns.predictions, ns.out, ns.metrics)
    ]
    assert len(ns.candidate) == 7


@pytest.mark.parametrize(
    ("exc", "code"), [(Interrupted("stop"), 130), (KeyboardInterrupt(), 130), (ConfigError("bad"), 2)]
)
def test_errors_become_exit_codes(monkeypatch: pytest.MonkeyPatch, exc: BaseException, code: int) -> None:
    def fail(*args: Any) -> None:
        raise exc

    monkeypatch.setitem(sys.modules, "ontime.data.collect", types.SimpleNamespace(main=fail))
    assert cli.main(["collect", "--out", "x"]) == code


def test_help_lists_every_command() -> None:
    text = cli.build_parser().format_help()
    listed = set(re.findall(r"^ {4}(\w+)", text, flags=re.MULTILINE))
    assert {*DVC_STAGES, "params", "predict", "monitor", "registry", "compare"} <= listed


def test_every_stage_help_names_its_options() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for row in cli.STAGES:
        text = sub.choices[row.name].format_help()
        assert "--params" in text
        assert all(name in text for name in row.args), row.name


def test_a_stage_option_without_help_is_refused() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    with pytest.raises(ValueError, match="--out"):
        cli._add_stage(sub, cli.Stage("x", "ontime.x", "x", ("--out",)))
    with pytest.raises(ValueError, match="--metrics"):
        cli._add_stage(sub, cli.Stage("y", "ontime.y", "y", ("--out",), helps={"--metrics": "m"}))


def test_cli_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from ontime.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'evidently', 'lightgbm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
