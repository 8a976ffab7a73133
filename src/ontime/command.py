"""What the commands' command lines share: the ``--params`` option and the help of common options.

Each command declares its own command line beside its ``main()`` (``SUMMARY``, ``add_arguments``,
``run``; see ``ontime.cli``) with these. Every stage runs this module, so an edit here re-runs the
whole graph: keep it small and stable, and put a stage's own wording in the stage's module.
"""

from __future__ import annotations

import argparse

# The help of options several stages take with the same meaning.
SPLIT = "folder of split parts"
SPEC = "feature spec (spec.json)"
CLEAN = "folder of cleaned tables"
CANDIDATE = "a model folder; repeat"
CHECKPOINTS = "checkpoint folder (kept between runs)"
FEATURES = "folder with features.parquet and spec.json"
BASE = "the trained model folder (from train)"


def add_params(parser: argparse.ArgumentParser) -> None:
    """``--params``: the params file a command reads (``params.yaml``, as ``dvc repro`` writes it)."""
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
