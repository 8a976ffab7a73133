"""Atomic outputs and deterministic serialisation shared by every stage.

A stage writes each output under a temporary name beside its final path and renames them all at the
end, so a failed stage leaves no half-written output behind. A stage that was killed (no chance to
clean up) leaves its temporary siblings, ``.<name>.<8 random characters>.tmp``: the next run of it
removes them first, and ``.gitignore`` hides them meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _temp_path(final: Path) -> Path:
    """A new, not-yet-existing ``.<name>.<8 hex digits>.tmp`` beside ``final``."""
    while True:
        temp = final.parent / f".{final.name}.{secrets.token_hex(4)}.tmp"
        if not (temp.exists() or temp.is_symlink()):
            return temp


def stale_temps(final: Path) -> list[Path]:
    """Temporary siblings of ``final`` left by an earlier, killed run: exactly the names
    ``_temp_path`` makes (and ``tempfile.mkstemp`` made before it), nothing else."""
    pattern = re.compile(rf"\.{re.escape(final.name)}\.[a-z0-9_]{{8}}\.tmp")
    if not final.parent.is_dir():
        return []
    return sorted(p for p in final.parent.iterdir() if pattern.fullmatch(p.name))


@contextlib.contextmanager
def atomic_outputs(*paths: str | Path) -> Iterator[list[Path]]:
    """Yield temporary paths for ``paths``; on success move them into place, on error delete them.

    Each temporary path is a fresh, not-yet-existing name in the same folder as its target (so the
    final rename stays on one file system). The caller creates a file or a folder there. Temporary
    siblings of the same targets that a killed run left behind are removed first.
    """
    finals = [Path(p) for p in paths]
    temps: list[Path] = []
    for final in finals:
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in stale_temps(final):
            _remove(stale)
        temps.append(_temp_path(final))
    try:
        yield temps
    except BaseException:
        for temp in temps:
            _remove(temp)
        raise
    for temp, final in zip(temps, finals, strict=True):
        if not temp.exists():
            raise RuntimeError(f"stage did not write its output {final}")
    for temp, final in zip(temps, finals, strict=True):
        _remove(final)
        temp.rename(final)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as sorted, indented JSON with a trailing newline (stable diffs)."""
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_parquet(df: pl.DataFrame, path: str | Path) -> None:
    """Parquet with fixed settings so the same frame gives the same bytes.

    Row groups follow the frame's in-memory chunks, which depend on thread scheduling: rechunk
    and fix the row-group size so the layout depends on the data alone.
    """
    df.rechunk().write_parquet(
        path, compression="zstd", compression_level=3, statistics=True, row_group_size=131_072
    )
