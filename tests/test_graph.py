"""The stage graph's code dependencies are complete: every module a stage runs is one of its deps.

For each stage of dvc.yaml, the module that cli.py's table names for `ontime <stage>` is
followed through every `import ontime...` (at the top of a module or inside a function, as the lazy
imports are), and each module file reached must lie under a path the stage lists in `deps`. The
package stage also covers the service module, which the Bento runs, and its deps must match what
bentofile.yaml includes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from ontime.cli import COMMANDS
from ontime.serving.package import bentofile_includes
from tests.conftest import REPO

SRC = REPO / "src"
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
# dvc.yaml's stages and the studies' (studies/dvc.yaml, run from the repository root: wdir ..)
STAGES = {**DVC_YAML["stages"], **yaml.safe_load((REPO / "studies/dvc.yaml").read_text())["stages"]}


def module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def imported(tree: ast.AST, package: str) -> set[str]:
    """Every ontime module named by an import anywhere in ``tree`` (function bodies included)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            names |= {base, *(f"{base}.{a.name}" for a in node.names)}
    return {n for n in names if n.split(".")[0] == "ontime" and module_file(n) is not None}


def closure(roots: set[str]) -> set[Path]:
    """Module files reached from ``roots``, with the ``__init__`` of every package on the way."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            parent = ".".join(parts[:i])
            if parent not in seen:
                seen.add(parent)
                path = module_file(parent)
                assert path is not None, parent
                package = parent if path.name == "__init__.py" else parent.rpartition(".")[0]
                todo.extend(imported(ast.parse(path.read_text()), package) - seen)
    return {p for p in map(module_file, seen) if p is not None}


def runner_imports(command: str) -> set[str]:
    """The module cli.py's table names for ``ontime <command>``, plus cli.py's own imports."""
    tree = ast.parse((SRC / "ontime/cli.py").read_text())
    top = {
        n
        for stmt in tree.body
        if isinstance(stmt, ast.ImportFrom | ast.Import)
        for n in imported(stmt, "ontime")
    }
    return {*top, COMMANDS[command]}


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_module_a_stage_runs_is_a_dependency(stage: str) -> None:
    cmd = " ".join(STAGES[stage]["cmd"].split())
    assert cmd.startswith("ontime "), cmd
    roots = runner_imports(cmd.split()[1])
    if stage == "package":
        roots.add("ontime.serving.service")  # what the Bento runs
    deps = [str(d) for d in STAGES[stage]["deps"]]
    files = {SRC / "ontime/cli.py", *closure(roots)}  # cli.py: its top level and this stage's module
    missing = sorted(p.relative_to(REPO).as_posix() for p in files if not covered(p, deps))
    assert not missing, f"stage {stage} runs {missing} but does not list them in dvc.yaml deps"


def test_the_closure_sees_lazy_imports() -> None:
    # load_candidate imports the candidate kinds inside a function: they must be found.
    files = {p.relative_to(SRC).as_posix() for p in closure({"ontime.evaluation.evaluate"})}
    assert {"ontime/candidates/torch_model.py", "ontime/candidates/lightgbm_model.py"} <= files
    assert "ontime/models/mlp.py" in files
    assert not any(f.startswith("ontime/training/") for f in files), "inference code imports training code"


def test_serving_and_evaluation_never_import_training_code() -> None:
    for root in ("ontime.serving.service", "ontime.serving.package", "ontime.evaluation.evaluate"):
        files = {p.relative_to(SRC).as_posix() for p in closure({root})}
        assert not [f for f in files if f.startswith("ontime/training/")], root


def test_package_deps_cover_exactly_what_the_bento_includes() -> None:
    deps = [str(d) for d in STAGES["package"]["deps"]]
    included = bentofile_includes(REPO / "bentofile.yaml", SRC)
    assert included, "bentofile.yaml includes nothing"
    assert not [p for p in included if not covered(p, deps)], (
        "the Bento holds code package does not depend on"
    )
    assert closure({"ontime.serving.service"}) <= set(included), "the Bento lacks code the service imports"
