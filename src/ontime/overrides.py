"""Hydra overrides of ``conf/``: compose with them, and find those that rebuild given params.

``compose`` is what ``dvc exp run -S key=value`` does (Hydra + ``OmegaConf.to_yaml``); ``overrides_for``
goes the other way, from the values of a ``params.yaml`` to the ``-S`` overrides that give them back.
A module of its own, apart from ``ontime.params`` (which validates every stage's section and so imports
every stage): a stage that composes, such as tune, depends on this file and the parts of ``conf/`` it
composes (tune: ``conf/config.yaml`` and ``conf/data``, see dvc.yaml).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def overrides_for(
    params: dict[str, Any], sections: Sequence[str], config_dir: str | Path = "conf", *, group: str = "data"
) -> list[str]:
    """The Hydra overrides that make ``config_dir`` compose into ``params``' values of ``sections``.

    The option of ``group`` (``conf/<group>/*.yaml``) whose composition differs from ``params`` at the
    fewest leaves comes first, as ``data=NAME`` unless it is the default (a tie keeps the default);
    then one override per leaf that still differs: ``key=value`` (a list whole), ``+key=value`` for a
    key the composition lacks, ``~key`` for one that ``params`` lacks. Values are written in Hydra's
    override grammar, so an interpolation of ``conf/`` (``data.dep: ${data.tables.table}``) is
    replaced by its resolved value only where that differs. ``dvc exp run -S`` with these (and any
    other section's overrides) then writes ``params.yaml`` with the same ``sections``.

    Raises:
        ConfigError: composing ``config_dir`` with the overrides does not give back ``params``'
            ``sections`` (the keys still differing are named); nothing wrong is returned.
    """
    import yaml

    def diff(choice: list[str]) -> list[str]:
        composed = yaml.safe_load(compose(config_dir, choice))
        return [o for s in sections for o in _diff(params.get(s, _MISSING), composed.get(s, _MISSING), s)]

    options = sorted(p.stem for p in (Path(config_dir) / group).glob("*.yaml"))
    choices = [[], *([f"{group}={name}"] for name in options)]  # [] first: the default wins a tie
    found = min(([*choice, *diff(choice)] for choice in choices), key=len)
    try:
        wrong = diff(found)
    except ConfigError as exc:  # e.g. ~key of a key that is null in conf/: Hydra cannot delete it
        wrong = [str(exc)]
    if wrong:
        raise ConfigError(
            f"params {list(sections)} cannot be written as overrides of {config_dir}/: composing it with "
            f"{found} still differs at {wrong}; set these values in {config_dir}/ instead"
        )
    return found


_MISSING: Any = object()
_KEY = re.compile(r"[A-Za-z_$][\w$-]*", re.ASCII)  # a key Hydra can address in a dotted override key
_WORD = re.compile(r"[\w./-]+", re.ASCII)  # safe unquoted in a shell word and in Hydra's grammar


def _diff(want: Any, have: Any, key: str) -> list[str]:
    """Overrides turning ``have`` (composed) into ``want`` (params) at dotted ``key``."""
    if want is _MISSING or have is _MISSING:
        return [] if want is have else [f"~{key}"] if want is _MISSING else [f"+{key}={hydra_value(want)}"]
    if (
        isinstance(want, dict)
        and isinstance(have, dict)
        and all(_KEY.fullmatch(str(k)) for k in {*want, *have})
    ):
        keys = {**have, **want}
        return [o for k in keys for o in _diff(want.get(k, _MISSING), have.get(k, _MISSING), f"{key}.{k}")]
    if _same(want, have):
        return []
    if isinstance(have, dict) or (isinstance(want, dict) and have is not None):
        return [f"~{key}", f"+{key}={hydra_value(want)}"]  # a dict merges into a dict: drop it, then set
    return [f"{key}={hydra_value(want)}"]


def _same(a: Any, b: Any) -> bool:
    """Equal with equal types (15 is not 15.0 nor True: params.yaml would differ), nan equal to nan."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


@functools.cache
def _parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar, read back as the same value and type.

    A string stays unquoted only when it is a plain word (letters, digits, ``_ . / -``) Hydra reads as
    that string; else it is double-quoted, with ``${`` escaped so that it stays literal.
    """
    from hydra.core.override_parser.types import Quote, QuotedString

    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)  # a float's repr round-trips exactly; inf and nan read back too
    if isinstance(value, list):
        return "[" + ",".join(map(hydra_value, value)) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_dict_key(k)}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        if _WORD.fullmatch(value) and _parser().parse_override(f"k={value}").value() == value:
            return value
        return QuotedString(text=value.replace("${", "\\${"), quote=Quote.double).with_quotes()
    raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) as a Hydra override value")


def _dict_key(key: Any) -> str:
    return re.sub(r"([\\()\[\]{}:=, \t])", r"\\\1", str(key))  # Hydra's escapes in an unquoted key
