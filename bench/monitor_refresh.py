"""What `ontime monitor` pays to bring the report stage's snapshots into its own workspace.

The monitor copies every snapshot of the pipeline's Evidently workspace (``reports/workspace``, after
``make repro``) into its own on every run. Two ways, in this process, on the same files:

- ``evidently API`` (the peer, how the monitor did it before): open the source as an Evidently
  ``Workspace`` (which parses every snapshot), read each with ``get_run`` and write it with
  ``state.write_snapshot``;
- ``file copy`` (``ontime.reports.monitor.refresh_pipeline_snapshots``): a local workspace keeps one
  JSON file per snapshot, so the copy is the file's bytes, the target id from its name and tags.

Both write byte-identical files (checked here). Prints the median of ``--repeats`` runs and the ratio.

    .venv/bin/python bench/monitor_refresh.py
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from machine import cpu_model  # bench/machine.py: this script's folder is on sys.path

from ontime.reports.monitor import SERVED, refresh_pipeline_snapshots
from ontime.reports.workspace import open_workspace, project, snapshot_id

ROOT = Path(__file__).resolve().parent.parent


def evidently_api(source: Path, workspace, proj) -> int:  # type: ignore[no-untyped-def]
    src = open_workspace(source)
    (origin,) = sorted(src.search_project(proj.name), key=lambda p: str(p.id))[:1]
    n = 0
    for sid in sorted(src.list_runs(origin.id), key=str):
        model = src.get_run(origin.id, sid)
        target = sid if SERVED in model.tags else snapshot_id(proj.name, model.name or str(sid))
        workspace.state.write_snapshot(proj.id, target, model)
        n += 1
    return n


def once(way, source: Path, name: str) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    folder = Path(tempfile.mkdtemp(prefix="ontime-monitor-")) / "ws"
    workspace = open_workspace(folder)
    proj = project(workspace, name)
    t0 = time.perf_counter()
    way(source, workspace, proj)
    elapsed = time.perf_counter() - t0
    files = sorted((folder / str(proj.id) / "snapshots").glob("*.json"))
    digest = hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in files)).hexdigest()
    return elapsed, digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", default=str(ROOT / "reports/workspace"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    source = Path(args.workspace)
    name = yaml.safe_load((ROOT / "params.yaml").read_text())["report"]["workspace_project"]
    snapshots = len(list(source.glob("*/snapshots/*.json")))
    if not snapshots:
        raise SystemExit(f"{source} holds no snapshots: run `make repro` first")
    times: dict[str, list[float]] = {"evidently API": [], "file copy": []}
    digests = set()
    for _ in range(args.repeats):
        for label, way in (("evidently API", evidently_api), ("file copy", refresh_pipeline_snapshots)):
            elapsed, digest = once(way, source, name)
            times[label].append(elapsed)
            digests.add(digest)
    if len(digests) != 1:
        raise SystemExit("the two ways wrote different files")
    print(f"{cpu_model()}; {snapshots} snapshots in {source}; median of {args.repeats}\n")
    print("| way | median s | x file copy |\n|---|---|---|")
    base = statistics.median(times["file copy"])
    for label, values in times.items():
        print(f"| {label} | {statistics.median(values):.2f} | {statistics.median(values) / base:.1f}x |")


if __name__ == "__main__":
    main()
