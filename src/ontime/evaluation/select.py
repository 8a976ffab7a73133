"""select: the champion among the candidates, by a validation metric (never a test metric).

Copies the chosen candidate folder to ``models/champion/`` with a model card (JSON and Markdown):
data version (the md5 of every input it read), lineage from ``dvc.lock`` (the source data's and the
split's md5, and the params, code and data of every upstream stage, as DVC recorded them), params,
validation and test metrics, threshold, feature spec, the git commit and the DVC experiment name.
When select runs outside ``dvc repro`` and ``dvc.lock`` does not describe its inputs, the card says
so (``lineage: null``) rather than guess.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from ontime.candidates import CANDIDATE_FILE
from ontime.config import SelectConfig, load_params, section
from ontime.errors import DataError
from ontime.io import atomic_outputs, read_json, write_json
from ontime.lineage import md5, provenance, stage_params, upstream

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"log_loss", "brier"}


def choose(metrics: dict[str, Any], cfg: SelectConfig) -> str:
    """The candidate with the best ``valid`` value of ``cfg.metric``; ties go to the earlier one."""
    missing = [c for c in cfg.candidates if c not in metrics]
    if missing:
        raise DataError(f"select.candidates {missing} have no evaluation; have {sorted(metrics)}")
    sign = -1.0 if cfg.metric in LOWER_IS_BETTER else 1.0
    scores = {c: sign * float(metrics[c]["valid"][cfg.metric]) for c in cfg.candidates}
    return max(cfg.candidates, key=lambda c: (scores[c], -cfg.candidates.index(c)))


def model_card(
    *,
    name: str,
    cfg: SelectConfig,
    metrics: dict[str, Any],
    params: dict[str, Any],
    inputs: dict[str, str],
    spec: dict[str, Any],
    lineage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    chosen = metrics[name]
    return {
        "champion": name,
        "selected_by": f"valid.{cfg.metric}",
        "candidates_valid": {c: metrics[c]["valid"][cfg.metric] for c in cfg.candidates},
        "threshold": chosen["threshold"],
        "valid_metrics": chosen["valid"],
        "test_metrics": chosen["test"],
        "data_version": inputs,
        "params": params,
        "feature_spec": spec,
        "lineage": lineage,
        "git": provenance(),
    }


def card_markdown(card: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {c} | {v:.4f} |{' **champion**' if c == card['champion'] else ''}"
        for c, v in card["candidates_valid"].items()
    )
    test = card["test_metrics"]
    features = ", ".join(f"`{f['name']}` ({f['kind']})" for f in card["feature_spec"]["features"])
    data = "\n".join(f"- `{k}`: `{v}`" for k, v in sorted(card["data_version"].items()))
    exp = f", experiment `{card['git']['experiment']}`" if card["git"].get("experiment") else ""
    lineage = card.get("lineage")
    if lineage:
        source = lineage.get("collect", {}).get("outs", {})
        stages = ", ".join(f"`{s}`" for s in lineage)
        origin = (
            "Source data (DVC md5): "
            + ", ".join(f"`{k}` `{v}`" for k, v in sorted(source.items()))
            + f". Params, code and data of every upstream stage ({stages}) as `dvc.lock` recorded them "
            "are in `model_card.json` under `lineage`."
        )
    else:
        origin = "No lineage: select ran outside `dvc repro`, so `dvc.lock` does not describe its inputs."
    return f"""# Model card: {card["champion"]}

Selected by **{card["selected_by"]}** among the candidates below (validation rows; test never used).
Decision threshold: **{card["threshold"]:.4f}** (chosen on validation rows).

| candidate | {card["selected_by"]} |
|---|---|
{rows}

## Test window
ROC AUC {test["roc_auc"]:.4f}, PR AUC {test["pr_auc"]:.4f}, F1 {test["f1"]:.4f}, precision
{test["precision"]:.4f}, recall {test["recall"]:.4f}, accuracy {test["accuracy"]:.4f}, log loss
{test["log_loss"]:.4f}, Brier {test["brier"]:.4f} on {test["rows"]} rows
(positive rate {test["positive_rate"]:.3f}).

## Data version (DVC md5 of the inputs)
{data}

## Features
Target `{card["feature_spec"]["target"]}`. {features}.

## Provenance
git commit `{card["git"]["commit"]}`{exp}. {origin}
"""


def main(
    params_path: str,
    evaluation: str,
    candidate_dirs: list[str],
    split_dir: str,
    spec_path: str,
    out_dir: str,
    metrics_path: str,
) -> None:
    params = load_params(params_path)
    cfg = section(params, "select", SelectConfig, source=params_path)
    metrics = read_json(evaluation)
    folders = {read_json(Path(d) / CANDIDATE_FILE)["name"]: Path(d) for d in candidate_dirs}
    name = choose(metrics, cfg)
    if name not in folders:
        raise DataError(
            f"select: no model folder was given for the champion {name!r}; pass --candidate for it"
        )
    inputs = {str(p): md5(p) for p in sorted(Path(split_dir).glob("*.parquet"))}
    inputs[spec_path] = md5(Path(spec_path))
    spec = read_json(spec_path)
    lineage = upstream("select", check={evaluation: md5(Path(evaluation))})
    if lineage is None:
        log.warning("select: dvc.lock does not describe these inputs (not run by dvc repro): no lineage")
    else:
        # The params each upstream stage ran with, not whatever the workspace file says now.
        params = {**params, **stage_params(lineage)}
    card = model_card(
        name=name, cfg=cfg, metrics=metrics, params=params, inputs=inputs, spec=spec, lineage=lineage
    )
    with atomic_outputs(out_dir, metrics_path) as (tmp, tmp_metrics):
        shutil.copytree(folders[name], tmp)
        write_json(tmp / "model_card.json", card)
        (tmp / "MODEL_CARD.md").write_text(card_markdown(card))
        (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        write_json(tmp / "feature_spec.json", spec)
        write_json(
            tmp_metrics,
            {
                "champion": name,
                "metric": cfg.metric,
                "valid": metrics[name]["valid"][cfg.metric],
                "test_roc_auc": metrics[name]["test"]["roc_auc"],
                "threshold": metrics[name]["threshold"],
            },
        )
    log.info("select: champion %s (valid %s %.4f)", name, cfg.metric, metrics[name]["valid"][cfg.metric])
