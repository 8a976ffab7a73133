"""Compose ``conf/`` into ``params.yaml`` exactly as ``dvc exp run`` does (Hydra + OmegaConf.to_yaml).

``dvc repro`` reads the committed ``params.yaml`` and never composes, so after editing ``conf/`` run
``ontime params`` (or a test fails): both paths then see the same parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ontime.errors import ConfigError


def compose(config_dir: str | Path = "conf", overrides: Sequence[str] = ()) -> str:
    """Return the YAML text DVC would write for ``conf/config.yaml`` with ``overrides``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    config_dir = Path(config_dir).resolve()
    if not (config_dir / "config.yaml").is_file():
        raise ConfigError(f"{config_dir}/config.yaml not found; run from the repository root")
    try:
        with initialize_config_dir(str(config_dir), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"cannot compose {config_dir}: {exc}") from exc
    return OmegaConf.to_yaml(cfg)


def main(config_dir: str, output: str, overrides: Sequence[str], check: bool) -> None:
    text = compose(config_dir, overrides)
    path = Path(output)
    if check:
        if not path.is_file() or path.read_text() != text:
            raise ConfigError(f"{output} differs from the composition of {config_dir}/; run `ontime params`")
        return
    path.write_text(text)
