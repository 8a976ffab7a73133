"""The stage graph's code dependencies are exact: a stage lists every module it runs, and no other.

For each stage of dvc.yaml and studies/dvc.yaml, the module that cli.py's table names for
`ontime <stage>` and cli.py's own top-level imports are followed through every `import ontime...`
(at the top of a module or inside a function, as the lazy imports are), with the `__init__.py` of
every package on the way, plus `__main__.py` and `cli.py`, which every command runs; the package
stage also covers the service module, which the Bento runs. The `src/` deps a stage lists must be
exactly these files (dev/deps.py computes them, `python dev/deps.py --write` writes them), so an
edit re-runs the stages that run the edited code and no others; bentofile.yaml must include exactly
the service's files.
"""

from __future__ import annotations

import pytest
import yaml

from ontime.serving.package import bentofile_includes
from tests.conftest import REPO, dev_tool

deps = dev_tool("deps")
SRC = REPO / "src"
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
# dvc.yaml's stages and the studies' (studies/dvc.yaml, run from the repository root: wdir ..)
STAGES = {**DVC_YAML["stages"], **yaml.safe_load((REPO / "studies/dvc.yaml").read_text())["stages"]}
COMMANDS = deps.commands()
# What each stage runs: src/ files, relative to the repository.
RUNS = {name: set(deps.stage_deps(name, deps.command_of(stage))) for name, stage in STAGES.items()}
# The file declaring each stage's command line (and its main).
MODULE = {
    name: "src/" + deps.module_file(COMMANDS[deps.command_of(stage)]).relative_to(SRC).as_posix()
    for name, stage in STAGES.items()
}
# Stages that import other stages' modules (the functions and constants they reuse): real code deps,
# so editing one of those modules (its help included) re-runs these stages too.
IMPORTS_OTHER_STAGES = {
    "clean": {"collect"},  # SCHEMA_FILE, record_schema: the recorded schema
    "finetune": {"train"},  # arrays
    "tune": {"train"},  # train(): every trial is the train stage's fit
    "package": {"clean", "collect", "featurize"},  # the service validates and featurizes requests as they do
    "svm": {"linear"},  # fit_preprocessor, FITTING: the linear candidate's inputs and rows
    "fold": {"split", "train", "finetune", "baseline", "linear", "svm"},  # each member stage's fitting
    # fit_candidates (the folds' function), the stages' fitting it calls, and the ensembles' cross-fitting
    "backtest": {"fold", "split", "train", "finetune", "baseline", "linear", "svm", "ensemble"},
    "strategies": {"train", "finetune"},  # finetune_members (finetune imports train)
    "learning_curve": {"train", "baseline"},  # train_members, fit_lightgbm
}


def src_deps(stage: str) -> set[str]:
    return {str(d) for d in deps.body(STAGES[stage])["deps"] if str(d).startswith("src/")}


def paste(files: set[str]) -> str:
    return "".join(f"\n      - {f}" for f in sorted(files))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_lists_exactly_the_modules_it_runs(stage: str) -> None:
    listed, runs = src_deps(stage), RUNS[stage]
    missing, extra = sorted(runs - listed), sorted(listed - runs)
    assert (missing, extra) == ([], []), (
        f"stage {stage} runs {missing} but does not list them, and lists {extra}, which it does not run; "
        f"its src/ deps in dvc.yaml must be exactly (or run python dev/deps.py --write):{paste(runs)}"
    )


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_module_is_a_dep_of_exactly_the_stages_that_import_it(stage: str) -> None:
    # Editing featurize.py (its help included) re-runs featurize and the stages importing it, no other.
    module = MODULE[stage]
    assert module in src_deps(stage), f"{stage} does not depend on its own module {module}"
    for other in STAGES:
        if other != stage:
            assert (module in src_deps(other)) == (module in RUNS[other]), (other, module)
    importers = {other for other in STAGES if other != stage and MODULE[stage] in RUNS[other]}
    assert importers == {s for s, imported in IMPORTS_OTHER_STAGES.items() if stage in imported}, (
        f"the stages importing {module} changed: update IMPORTS_OTHER_STAGES (and say why)"
    )


def test_a_stage_depends_only_on_the_config_sections_it_reads() -> None:
    def sections(stage: str) -> set[str]:
        prefix = "src/ontime/config/"
        return {d.removeprefix(prefix) for d in src_deps(stage) if d.startswith(prefix)}

    assert sections("collect") == {"__init__.py", "data.py"}
    assert sections("split") == {"__init__.py", "split.py"}
    assert sections("train") == {"__init__.py", "model.py", "preprocess.py", "train.py"}


def test_the_closure_sees_lazy_imports() -> None:
    # load_candidate imports the candidate kinds inside a function: they must be found.
    files = {p.relative_to(SRC).as_posix() for p in deps.closure({"ontime.evaluation.evaluate"})}
    assert {"ontime/candidates/torch_model.py", "ontime/candidates/lightgbm_model.py"} <= files
    assert "ontime/models/mlp.py" in files
    assert not any(f.startswith("ontime/training/") for f in files), "inference code imports training code"


def test_serving_and_evaluation_never_import_training_code() -> None:
    for root in ("ontime.serving.service", "ontime.serving.package", "ontime.evaluation.evaluate"):
        files = {p.relative_to(SRC).as_posix() for p in deps.closure({root})}
        assert not [f for f in files if f.startswith("ontime/training/")], root


def test_candidates_never_import_the_exporter() -> None:
    # ontime.export depends on ontime.candidates, never the other way round (no import circle);
    # evaluate and the other stages that load candidates natively never run onnx code.
    for path in sorted((SRC / "ontime/candidates").glob("*.py")):
        name = "ontime.candidates" + ("" if path.stem == "__init__" else f".{path.stem}")
        files = {p.relative_to(SRC).as_posix() for p in deps.closure({name})}
        assert not [f for f in files if f.startswith("ontime/export/")], name
    for stage in ("train", "evaluate", "select", "ensemble"):
        assert not [d for d in src_deps(stage) if "onnx" in d], stage


def test_package_deps_cover_exactly_what_the_bento_includes() -> None:
    included = {p.relative_to(REPO).as_posix() for p in bentofile_includes(REPO / "bentofile.yaml", SRC)}
    assert included, "bentofile.yaml includes nothing"
    assert included <= src_deps("package"), "the Bento holds code package does not depend on"
    service = {p.relative_to(SRC).as_posix() for p in deps.closure({"ontime.serving.service"})}
    assert included == {f"src/{f}" for f in service}, (
        "bentofile.yaml must include exactly the service's code:"
        + "".join(f'\n  - "{f}"' for f in sorted(service))
    )


def test_dvc_parses_params_with_the_c_yaml_loader() -> None:
    # DVC reads params.yaml once per stage on every `dvc status` / `dvc repro` (ruamel.yaml, typ
    # "safe"); without ruamel.yaml.clib (no longer pulled by ruamel.yaml 0.19) it falls back to the
    # pure-Python parser, 5x slower: a no-op `dvc status` took 2.8 s (bench/pipeline.py).
    from ruamel.yaml import YAML

    assert YAML(typ="safe").Parser.__name__ == "CParser"
