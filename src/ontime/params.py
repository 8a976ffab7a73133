"""Compose ``conf/`` into ``params.yaml`` exactly as ``dvc exp run`` does (Hydra + OmegaConf.to_yaml).

``dvc repro`` reads the committed ``params.yaml`` and never composes, so after editing ``conf/`` run
``ontime params`` (or a test fails): both paths then see the same parameters. Every section is
validated (the typed model of each stage) before anything is written, so a bad value is named at
once instead of when its stage runs, and ``params.yaml`` is never left holding it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ontime.errors import ConfigError
from ontime.overrides import compose


def validate(params: dict[str, Any], *, source: str = "params") -> None:
    """Check every section with the model of the stage that reads it; ConfigError names the key."""
    from ontime.config import StrictModel, section, seed
    from ontime.config.analyze import AnalyzeConfig
    from ontime.config.backtest import BacktestConfig
    from ontime.config.baseline import BaselineConfig
    from ontime.config.clean import CleanConfig
    from ontime.config.data import DataConfig
    from ontime.config.ensemble import EnsembleConfig
    from ontime.config.evaluate import EvaluateConfig
    from ontime.config.featurize import FeaturizeConfig
    from ontime.config.finetune import FinetuneConfig
    from ontime.config.gate import GateConfig
    from ontime.config.learning_curve import LearningCurveConfig
    from ontime.config.linear import LinearConfig
    from ontime.config.model import model_section
    from ontime.config.monitor import MonitorConfig
    from ontime.config.preprocess import PreprocessConfig
    from ontime.config.report import ReportConfig
    from ontime.config.select import SelectConfig
    from ontime.config.serve import ServeConfig
    from ontime.config.split import SplitConfig
    from ontime.config.strategies import StrategiesConfig
    from ontime.config.svm import SVMConfig
    from ontime.config.train import TrainConfig
    from ontime.config.tune import TuneConfig, check_space

    seed(params)
    model_section(params, source=source)
    sections: dict[str, type[StrictModel]] = {
        "data": DataConfig,
        "clean": CleanConfig,
        "featurize": FeaturizeConfig,
        "split": SplitConfig,
        "analyze": AnalyzeConfig,
        "preprocess": PreprocessConfig,
        "train": TrainConfig,
        "finetune": FinetuneConfig,
        "baseline": BaselineConfig,
        "linear": LinearConfig,
        "svm": SVMConfig,
        "ensemble": EnsembleConfig,
        "evaluate": EvaluateConfig,
        "select": SelectConfig,
        "serve": ServeConfig,
        "report": ReportConfig,
        "monitor": MonitorConfig,
        "gate": GateConfig,
        "backtest": BacktestConfig,
        "strategies": StrategiesConfig,
        "learning_curve": LearningCurveConfig,
    }
    for name, model in sections.items():
        section(params, name, model, source=source)
    check_space(section(params, "tune", TuneConfig, source=source), params, source=source)


def main(config_dir: str, output: str, overrides: Sequence[str], check: bool) -> None:
    import yaml

    text = compose(config_dir, overrides)
    validate(yaml.safe_load(text), source=f"{config_dir}/ with {list(overrides)}")
    path = Path(output)
    if check:
        if not path.is_file() or path.read_text() != text:
            raise ConfigError(f"{output} differs from the composition of {config_dir}/; run `ontime params`")
        return
    path.write_text(text)


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Compose conf/ into params.yaml (run after editing conf/)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime params``: its description and options."""
    parser.description = (
        "Compose conf/ (Hydra) into params.yaml exactly as `dvc exp run` does. "
        "`dvc repro` never composes: run this after editing conf/ so both agree."
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=table seed=1")
    parser.add_argument("--conf", default="conf", help="config folder (default: %(default)s)")
    parser.add_argument("--output", default="params.yaml", help="file to write (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="only check; exit 2 when it differs")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(config_dir=args.conf, output=args.output, overrides=args.overrides, check=args.check)
