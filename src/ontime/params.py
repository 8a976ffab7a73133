"""Compose ``conf/`` into ``params.yaml`` exactly as ``dvc exp run`` does (Hydra + OmegaConf.to_yaml).

``dvc repro`` reads the committed ``params.yaml`` and never composes, so after editing ``conf/`` run
``ontime params`` (or a test fails): both paths then see the same parameters. Every section is
validated (the typed model of each stage) before anything is written, so a bad value is named at
once instead of when its stage runs, and ``params.yaml`` is never left holding it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ontime.errors import ConfigError
from ontime.overrides import compose


def validate(params: dict[str, Any], *, source: str = "params") -> None:
    """Check every section with the model of the stage that reads it; ConfigError names the key."""
    from ontime import config as c
    from ontime.data.analyze import AnalyzeConfig
    from ontime.live.gate import GateConfig
    from ontime.reports.monitor import MonitorConfig
    from ontime.reports.stage import ReportConfig
    from ontime.serving.online import ServeConfig
    from ontime.training.baseline import BaselineConfig
    from ontime.training.linear import LinearConfig
    from ontime.training.tune import TuneConfig, check_space

    c.seed(params)
    c.model_section(params, source=source)
    sections: dict[str, type[c.StrictModel]] = {
        "data": c.DataConfig,
        "clean": c.CleanConfig,
        "featurize": c.FeaturizeConfig,
        "split": c.SplitConfig,
        "analyze": AnalyzeConfig,
        "preprocess": c.PreprocessConfig,
        "train": c.TrainConfig,
        "finetune": c.FinetuneConfig,
        "baseline": BaselineConfig,
        "linear": LinearConfig,
        "ensemble": c.EnsembleConfig,
        "evaluate": c.EvaluateConfig,
        "select": c.SelectConfig,
        "serve": ServeConfig,
        "report": ReportConfig,
        "monitor": MonitorConfig,
        "gate": GateConfig,
    }
    for name, model in sections.items():
        c.section(params, name, model, source=source)
    check_space(c.section(params, "tune", TuneConfig, source=source), params, source=source)


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
