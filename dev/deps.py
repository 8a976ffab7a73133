"""Each stage's code deps: exactly the ``src/ontime`` module files ``ontime <stage>`` runs.

A stage runs ``src/ontime/__main__.py`` and ``cli.py`` (dvc calls ``ontime``, which runs again as
``python -m ontime``), the modules cli.py imports at its top level, and the module cli.py's table
names for the stage, followed through every ``import ontime...`` (in function bodies too: the lazy
imports), with the ``__init__.py`` of every package on the way. The package stage also runs the
service module, which the Bento runs. tests/unit/test_graph.py checks dvc.yaml and studies/dvc.yaml
against these lists, both ways. This script reads the sources and never imports ``ontime``.

    python dev/deps.py            # print each stage's list
    python dev/deps.py --check    # exit 1 when a stage's src/ontime deps differ
    python dev/deps.py --write    # rewrite them; every other line stays byte for byte

``--write`` replaces the ``- src/ontime/...`` lines of each stage's ``deps`` with the sorted list,
where the first of them was; comments and every other dep stay where they are.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
DVC_FILES = ("dvc.yaml", "studies/dvc.yaml")
RUN_ALWAYS = ("ontime/__main__.py", "ontime/cli.py")  # under SRC: what `ontime <stage>` starts with
EXTRA_ROOTS = {"package": ("ontime.serving.service",)}  # what the Bento the package stage builds runs
SRC_DEP = re.compile(r"^( {6}| {8})- src/ontime/\S*\s*$")  # a code dep (no comment after it); 8: in a `do:`


def module_file(name: str) -> Path | None:
    """The file of module ``name`` (a package: its ``__init__.py``), None when it is no ontime module."""
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


def commands() -> dict[str, str]:
    """cli.py's table, command -> module, read from its source (STAGES, STUDIES and TOOLS)."""
    table: dict[str, str] = {}
    for node in ast.parse((SRC / "ontime/cli.py").read_text()).body:
        if isinstance(node, ast.AnnAssign | ast.Assign) and isinstance(node.value, ast.Dict):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id in ("STAGES", "STUDIES", "TOOLS") for t in targets):
                table.update(ast.literal_eval(node.value))
    return table


def runner_imports() -> set[str]:
    """The ontime modules cli.py imports at its top level (every command runs them)."""
    tree = ast.parse((SRC / "ontime/cli.py").read_text())
    stmts = [s for s in tree.body if isinstance(s, ast.Import | ast.ImportFrom)]
    return {n for s in stmts for n in imported(s, "ontime")}


def body(stage: dict) -> dict:
    """A stage's definition: itself, or the ``do`` of a ``foreach``/``matrix`` stage."""
    return stage.get("do", stage)


def command_of(stage: dict) -> str:
    """The ``ontime`` command a stage's ``cmd`` runs."""
    words = str(body(stage)["cmd"]).split()
    assert words[0] == "ontime", words
    return words[1]


def stage_deps(name: str, command: str) -> list[str]:
    """The code deps of stage ``name`` (running ``ontime command``), as dvc.yaml lists them."""
    roots = {*runner_imports(), commands()[command], *EXTRA_ROOTS.get(name, ())}
    files = {SRC / f for f in RUN_ALWAYS} | closure(roots)
    return sorted(p.relative_to(REPO).as_posix() for p in files)


def expected(dvc_file: str) -> dict[str, list[str]]:
    """Each stage of ``dvc_file`` (relative to the repository) -> its code deps."""
    stages = yaml.safe_load((REPO / dvc_file).read_text())["stages"]
    return {name: stage_deps(name, command_of(stage)) for name, stage in stages.items()}


def rewrite(text: str, deps: dict[str, list[str]]) -> str:
    """``text`` (a dvc.yaml) with each stage's ``- src/ontime/...`` deps replaced by ``deps[stage]``."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    stage = None
    in_stages = in_deps = placed = False
    indent = "      "
    for line in lines:
        if re.match(r"^\S", line):  # a top-level key
            in_stages = line.startswith("stages:")
            stage, in_deps = None, False
        elif in_stages and (m := re.match(r"^ {2}(\w+):\s*$", line)):
            stage, in_deps, placed = m.group(1), False, False
        elif stage and (m := re.match(r"^( {4}| {6})([A-Za-z_]\w*:.*?)\s*$", line)):  # a key, not a list item
            in_deps = m.group(2) == "deps:"
            indent = m.group(1) + "  "
        if in_deps and SRC_DEP.match(line):
            if not placed:
                out.extend(f"{indent}- {d}\n" for d in deps[stage])
                placed = True
            continue
        out.append(line)
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when a stage's code deps differ")
    mode.add_argument("--write", action="store_true", help="rewrite the code deps of every stage")
    args = parser.parse_args(argv)
    differ = False
    for dvc_file in DVC_FILES:
        deps = expected(dvc_file)
        path = REPO / dvc_file
        text = path.read_text()
        new = rewrite(text, deps)
        if args.write:
            if new != text:
                path.write_text(new)
                print(f"{dvc_file}: rewritten")
        elif args.check:
            if new != text:
                print(f"{dvc_file}: code deps differ; run python dev/deps.py --write", file=sys.stderr)
                differ = True
        else:
            for name, files in deps.items():
                print(f"{dvc_file} {name}:")
                print("".join(f"  - {f}\n" for f in files), end="")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
