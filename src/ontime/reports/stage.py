"""The report stage: Evidently data quality, drift and classification reports, each with pass/fail tests.

Reports, as HTML plus Evidently's JSON of metrics and tests, in ``out_dir``:

- ``data_quality``: the cleaned base table (``<clean_dir>/<featurize.base>.parquet``). Quality is a
  property of the data as collected and cleaned (missing values, duplicated or empty rows, empty
  columns), before joins add missing values by design (weather gaps, planes without a record) that
  the model's preprocessing handles; the features themselves are covered by the drift reports.
  Tests: every column's missing share <= ``report.max_missing_share``, no duplicated or empty rows,
  no empty columns.
- ``drift_train_vs_test``: the training window (``train`` + ``train_valid``) against the test window,
  over the spec's features. Test: share of drifted features <= ``report.drift_share_threshold``. Its
  page also shows ``label_drift_train_vs_test``: the target's positive rate and drift, on every row of
  both windows (not a sample).
- ``drift_<YYYY-MM>``: every calendar month of the rows outside the training window against the same
  reference, with the same test (skipped, with a note, when the data has no time column). A month whose
  rows are exactly the test window's is not reported twice: the window's report stands for it (tagged
  monthly too, so the dashboard's series has that month) and the summary's ``same_as_window`` says so.
- ``classification_test``: the champion on the test window (its probability column of
  ``<predictions_dir>/test.parquet``, the threshold from ``select``). Test: ROC AUC >=
  ``report.min_roc_auc``. One more snapshot per test month, and one per month of the validation rows
  (``classification_valid_<YYYY-MM>``: the rows that chose the champion and its threshold, so they
  flatter it), feed the dashboard's ROC AUC by month (the same rule for a month equal to the window);
  the summary's ``monthly_roc_auc`` lists them. Its page also shows ``prediction_drift_valid_vs_test``
  (the champion's probability and the positive rate, validation rows of ``valid.parquet`` against the
  test rows) and a calibration table (also in the summary; Evidently 0.7 has no calibration metric).

Every page opens with a title naming what it compares: the windows with their first and last days,
their row counts and the sample Evidently saw (the same text is each snapshot's ``title`` metadata).
Frames are sampled to ``report.sample_rows`` rows (seeded with ``seed``). Which drift test judges a
column follows the size of the smaller sample (see ``drift_methods``).

Size: the pages of one run share one copy of Evidently's 3.5 MB script, written once as
``assets/evidently-<version>.js`` beside them and loaded by a relative ``<script src>`` (the folder
stays viewable offline; move it whole). Evidently also embeds every plot twice (in its widget and in
the page's graph table); the page keeps only the table, the one its script reads.

The summary (``metrics/report.json``) is what ``dvc exp show`` displays. The workspace is a local
Evidently workspace with one project (``report.workspace_project``) whose snapshots are stamped with
the start of the period they describe, so the monthly ones form a time series, and a dashboard built
here; ``evidently ui --workspace <workspace_dir>`` opens it. The stage writes it afresh, as a pipeline
output like any other; ``ontime monitor`` keeps its own workspace (``reports/monitoring``) that holds
a copy of these snapshots next to the served-traffic ones.

Byte-identical outputs: Evidently names widgets, dashboard panels, projects and snapshots with random
(time-based) ids. Here the project's, the panels' and the snapshots' ids derive from their names, and
the random ids inside a report (HTML and workspace snapshot) are replaced, in order of appearance, by
ids derived from the report's name (``stable_ids``). Together with a fixed ``PYTHONHASHSEED`` (set by
the ``ontime`` command) the same inputs give the same bytes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from evidently.core.report import Snapshot
from evidently.legacy.model.widget import BaseWidgetInfo

from ontime import command
from ontime.config import load_params, section
from ontime.config import seed as read_seed
from ontime.config.featurize import FeaturizeConfig
from ontime.config.report import ReportConfig
from ontime.errors import DataError
from ontime.io import atomic_outputs, read_json, write_json
from ontime.reports.adapters import ASSETS, failed_tests, page, sample, script_name, title_of, write_assets
from ontime.reports.builders import (
    CALIBRATION_BINS,
    calibration,
    calibration_widget,
    classification,
    describe_window,
    drift,
    label_drift,
    prediction_drift,
    quality,
)
from ontime.reports.workspace import (
    CLASSIFICATION,
    DRIFT,
    MONTHLY,
    VALIDATION,
    WINDOW,
    add_snapshot,
    check_workspace,
    open_workspace,
    project,
)
from ontime.spec import FeatureSpec, read_part

log = logging.getLogger(__name__)


TRAINING_PARTS = ("train", "train_valid")
LATER_PARTS = ("finetune", "finetune_valid", "test")
# Groups of reports whose failed tests the summary counts.
TEST_GROUPS = (
    "data_quality",
    "drift_train_vs_test",
    "drift_monthly",
    "classification_test",
    "classification_monthly",
    "classification_validation",
)


# ------------------------------------------------------------------------------------- time ---
def period_start(df: pl.DataFrame, time_column: str | None) -> dt.datetime | None:
    """Midnight (wall clock) of the first day in ``df``: the timestamp of a snapshot about ``df``."""
    if not time_column or time_column not in df.columns or df.height == 0:
        return None
    first = df.get_column(time_column).min()
    if isinstance(first, dt.datetime):
        first = first.date()
    return dt.datetime.combine(first, dt.time()) if isinstance(first, dt.date) else None


def local_time(df: pl.DataFrame, like: pl.DataFrame, time_column: str | None) -> pl.DataFrame:
    """``df``'s time column in the time zone of ``like``'s (the cleaned table holds UTC, the split
    parts wall clock), so that both name the same days."""
    if not time_column or time_column not in df.columns or time_column not in like.columns:
        return df
    zone = getattr(like.schema[time_column], "time_zone", None)
    if zone is None or getattr(df.schema[time_column], "time_zone", None) is None:
        return df
    return df.select(pl.col(time_column).dt.convert_time_zone(zone))


def by_month(df: pl.DataFrame, time_column: str) -> dict[str, pl.DataFrame]:
    """Rows per calendar month (``YYYY-MM``, wall clock of the time column), in month order."""
    months = df.with_columns(pl.col(time_column).dt.strftime("%Y-%m").alias("_month"))
    parts = months.partition_by("_month", as_dict=True, include_key=False)
    return {str(key[0]): parts[key] for key in sorted(parts, key=lambda k: str(k[0]))}


def month_start(month: str) -> dt.datetime:
    year, mon = month.split("-")
    return dt.datetime(int(year), int(mon), 1)


# -------------------------------------------------------------------------------------- edge ---
PREDICTION_PARTS = ("valid", "test")  # files of the evaluate stage: validation rows, test rows


def read_inputs(
    clean_dir: str, base: str, predictions_dir: str, select_metrics: str, spec: FeatureSpec
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame], Selection]:
    """The cleaned base table, the predictions (``valid``, ``test``), the champion and its threshold."""
    table_path = Path(clean_dir) / f"{base}.parquet"
    if not table_path.is_file():
        raise DataError(
            f"{table_path}: cleaned base table (featurize.base={base!r}) not found; run dvc repro clean"
        )
    selection = read_json(select_metrics) if Path(select_metrics).is_file() else None
    if not isinstance(selection, dict) or not {"champion", "threshold"} <= set(selection):
        raise DataError(
            f"{select_metrics}: needs `champion` and `threshold` (written by the select stage); "
            "run dvc repro select"
        )
    champion = str(selection["champion"])
    predictions: dict[str, pl.DataFrame] = {}
    for part in PREDICTION_PARTS:
        pred_path = Path(predictions_dir) / f"{part}.parquet"
        if not pred_path.is_file():
            raise DataError(f"{pred_path}: {part} predictions not found; run dvc repro evaluate")
        predictions[part] = pl.read_parquet(pred_path)
        missing = [c for c in (spec.target, champion) if c not in predictions[part].columns]
        if missing:
            raise DataError(
                f"{pred_path}: column(s) {missing} missing (has {predictions[part].columns}); the "
                f"champion of {select_metrics} must be one of the evaluated candidates: re-run dvc repro "
                "evaluate select"
            )
    return pl.read_parquet(table_path), predictions, Selection(champion, float(selection["threshold"]))


@dataclass(frozen=True)
class Selection:
    """The champion (a probability column of the predictions) and its decision threshold."""

    champion: str
    threshold: float


@dataclass
class Page:
    """One HTML page: snapshots (by name) shown in order, under the first one's title; ``notes`` are
    header lines after the other snapshots' titles; ``extra`` widgets close the page."""

    snapshots: list[str]
    notes: list[str]
    extra: list[BaseWidgetInfo]


def same_rows(parts: dict[str, pl.DataFrame], whole: pl.DataFrame) -> str | None:
    """The key of the first of ``parts`` holding exactly the rows of ``whole`` (in order), or None."""
    return next((key for key, rows in parts.items() if rows.equals(whole)), None)


def build(
    table: pl.DataFrame,
    reference: pl.DataFrame,
    later: dict[str, pl.DataFrame],
    predictions: dict[str, pl.DataFrame],
    spec: FeatureSpec,
    cfg: ReportConfig,
    *,
    table_name: str,
    selection: Selection,
    seed: int,
) -> tuple[dict[str, Snapshot], dict[str, Page], dict[str, Any]]:
    """Every report (name -> snapshot), the HTML pages showing them, and the summary. ``later``: the
    split parts after training; ``predictions``: the ``valid`` and ``test`` rows' predictions."""
    tc = spec.time_column
    snapshots: dict[str, Snapshot] = {}
    pages: dict[str, Page] = {}
    failed = dict.fromkeys(TEST_GROUPS, 0)

    def keep(
        group: str, snapshot: Snapshot, failures: list[str], page: str | None = None, *, html: bool = True
    ) -> None:
        """Record ``snapshot``: on its own page, on ``page``'s, or (``html`` False) in the workspace only."""
        name = snapshot.get_name() or group
        snapshots[name] = snapshot
        if html and page is None:
            pages[name] = Page([name], [], [])
        elif html:
            pages[str(page)].snapshots.append(name)
        if failures:  # label and prediction drift carry no tests
            failed[group] += len(failures)
        for description in failures:
            log.warning("report: %s: test failed: %s", snapshot.get_name(), description)

    quality_table = sample(table, cfg.sample_rows, seed)
    seen = describe_window(local_time(table, reference, tc), f"table {table_name}", tc, cfg.sample_rows)
    quality_snapshot, max_missing = quality(
        quality_table, spec, max_missing_share=cfg.max_missing_share,
        name="data_quality", timestamp=period_start(table, tc), tags=["quality"],
        metadata={"table": table_name, "rows": str(table.height),
                  "title": f"Data quality: {seen.describe()}"},
    )  # fmt: skip
    keep("data_quality", quality_snapshot, failed_tests(quality_snapshot))

    options: dict[str, Any] = {
        "spec": spec, "drift_share_threshold": cfg.drift_share_threshold,
        "stattest_threshold": cfg.stattest_threshold, "sample_rows": cfg.sample_rows, "seed": seed,
        "time_column": tc,
    }  # fmt: skip
    parts = "+".join(TRAINING_PARTS)
    test = later["test"]
    later_months = {} if tc is None else by_month(pl.concat(list(later.values()), how="vertical_relaxed"), tc)
    # A month whose rows are the test window's would repeat its report byte for byte: the window's
    # report stands for it, tagged monthly too (the dashboard's series keeps that month).
    twin = same_rows(later_months, test)
    window = drift(
        reference, test, **options, name="drift_train_vs_test", names=(parts, "test"),
        timestamp=month_start(twin) if twin else period_start(test, tc),
        tags=[DRIFT, WINDOW, *([MONTHLY] if twin else [])],
        metadata={"reference": parts, "current": "test", **({"month": twin} if twin else {})},
    )  # fmt: skip
    keep("drift_train_vs_test", window.snapshot, window.failed)
    label_snapshot, label = label_drift(
        reference, test, target=spec.target, names=(parts, "test"), time_column=tc,
        name="label_drift_train_vs_test", timestamp=period_start(test, tc), tags=["label", WINDOW],
    )  # fmt: skip
    keep("label_drift", label_snapshot, [], page="drift_train_vs_test")
    same_as_window: dict[str, str] = {}
    monthly: dict[str, float] = {}
    if tc is None:
        log.info("report: no time column (featurize.time_column is null): no drift by month")
    for month, rows in later_months.items():
        if month == twin:
            monthly[month] = round(window.share, 6)
            same_as_window[f"drift_{month}"] = "drift_train_vs_test"
            pages["drift_train_vs_test"].notes.append(
                f"Also the report of month {month}: its rows are exactly the test window's."
            )
            log.info("report: drift_%s: the same rows as the test window, see drift_train_vs_test", month)
            continue
        result = drift(
            reference, rows, **options, name=f"drift_{month}", names=(parts, f"month {month}"),
            timestamp=month_start(month), tags=[DRIFT, MONTHLY],
            metadata={"reference": parts, "month": month},
        )  # fmt: skip
        monthly[month] = round(result.share, 6)
        keep("drift_monthly", result.snapshot, result.failed)

    scored: dict[str, Any] = {
        "target": spec.target, "champion": selection.champion, "threshold": selection.threshold,
        "min_roc_auc": cfg.min_roc_auc,
    }  # fmt: skip
    champion = {"champion": selection.champion}
    tested = predictions["test"]
    pred_months = by_month(tested, tc) if tc is not None and tc in tested.columns else {}
    pred_twin = same_rows(pred_months, tested)
    described = describe_window(tested, "test", tc)
    cls_snapshot, roc_auc = classification(
        tested, **scored, name="classification_test",
        timestamp=month_start(pred_twin) if pred_twin else period_start(tested, tc),
        tags=[CLASSIFICATION, WINDOW, *([MONTHLY] if pred_twin else [])],
        metadata={
            **champion, **({"month": pred_twin} if pred_twin else {}),
            "title": f"Classification quality: champion {selection.champion} on {described.describe()}, "
                     f"threshold {selection.threshold:.4f}, every row",
        },
    )  # fmt: skip
    keep("classification_test", cls_snapshot, failed_tests(cls_snapshot))
    pred_snapshot, predicted = prediction_drift(
        predictions["valid"], tested, target=spec.target, champion=selection.champion,
        names=("validation", "test"), time_column=tc, name="prediction_drift_valid_vs_test",
        timestamp=period_start(tested, tc), tags=["prediction", WINDOW],
    )  # fmt: skip
    keep("prediction_drift", pred_snapshot, [], page="classification_test")
    bins = calibration(tested, target=spec.target, champion=selection.champion)
    calibrated = (
        f"Calibration (table at the end): champion {selection.champion} on {described.describe()}, "
        f"{CALIBRATION_BINS} equal-width bins of its probability"
    )
    pages["classification_test"].extra.append(calibration_widget(bins, calibrated))
    pages["classification_test"].notes.append(calibrated)
    # Quality by month, for every month with labels the champion did not train on: the validation
    # rows' months first (they chose the champion and its threshold: flattering), then the test's.
    monthly_roc_auc: dict[str, float | None] = {}
    validated = predictions["valid"]
    valid_months = by_month(validated, tc) if tc is not None and tc in validated.columns else {}
    for month, rows in valid_months.items():
        if rows.get_column(spec.target).n_unique() < 2:
            log.info("report: %s: one class only in the validation rows, no ROC AUC", month)
            continue
        month_window = describe_window(rows, f"validation rows of {month}", tc)
        snapshot, auc = classification(
            rows, **scored, name=f"classification_valid_{month}", timestamp=period_start(rows, tc),
            tags=[CLASSIFICATION, MONTHLY, VALIDATION],
            metadata={**champion, "month": month, "rows": "validation",
                      "title": f"Classification quality: champion {selection.champion} on "
                               f"{month_window.describe()} (they chose it and its threshold), "
                               f"threshold {selection.threshold:.4f}"},
        )  # fmt: skip
        monthly_roc_auc[f"valid {month}"] = None if auc is None else round(auc, 6)
        keep("classification_validation", snapshot, failed_tests(snapshot), html=False)  # dashboard
    for month, rows in pred_months.items():
        if month == pred_twin:
            monthly_roc_auc[f"test {month}"] = None if roc_auc is None else round(roc_auc, 6)
            same_as_window[f"classification_{month}"] = "classification_test"
            pages["classification_test"].notes.append(
                f"Also the report of month {month}: its rows are exactly the test window's."
            )
            log.info("report: classification_%s: the test window's rows, see classification_test", month)
            continue
        if rows.get_column(spec.target).n_unique() < 2:
            log.info("report: %s: one class only in the test rows, no ROC AUC for this month", month)
            continue
        month_window = describe_window(rows, f"month {month}", tc)
        snapshot, auc = classification(
            rows, **scored, name=f"classification_{month}", timestamp=month_start(month),
            tags=[CLASSIFICATION, MONTHLY],
            metadata={**champion, "month": month,
                      "title": f"Classification quality: champion {selection.champion} on "
                               f"{month_window.describe()}, threshold {selection.threshold:.4f}"},
        )  # fmt: skip
        monthly_roc_auc[f"test {month}"] = None if auc is None else round(auc, 6)
        keep("classification_monthly", snapshot, failed_tests(snapshot))

    summary = {
        "drift_share": round(window.share, 6),
        "drifted_features": window.drifted,
        "features": len(spec.columns),
        "top_drifted": window.top(cfg.top_drifted),
        "monthly_drift_share": monthly,
        "label_drift": label,
        "prediction_drift": predicted,
        "champion": selection.champion,
        "champion_test_roc_auc": None if roc_auc is None else round(roc_auc, 6),
        "monthly_roc_auc": monthly_roc_auc,
        "calibration": bins,
        "max_missing_share": round(max_missing, 6),
        "failed_tests": {**failed, "total": sum(failed.values())},
        "same_as_window": same_as_window,
        "reports": {name: title_of(snap) for name, snap in snapshots.items()},
    }
    return snapshots, pages, summary


def write_pages(
    folder: Path, snapshots: dict[str, Snapshot], pages: dict[str, Page], *, script: str | None
) -> None:
    """Every page as ``<name>.html`` in ``folder``."""
    for name, spec_ in pages.items():
        shown = [snapshots[n] for n in spec_.snapshots]
        lines = [title_of(s) for s in shown[1:]] + spec_.notes
        text = page(
            shown, title=title_of(shown[0]) or name, scope=name, lines=lines, extra=spec_.extra,
            script=script,
        )  # fmt: skip
        (folder / f"{name}.html").write_text(text, encoding="utf-8")


def main(
    params_path: str,
    clean_dir: str,
    split_dir: str,
    spec_path: str,
    predictions_dir: str,
    select_metrics: str,
    out_dir: str,
    workspace_dir: str,
    summary_path: str,
) -> None:
    params = load_params(params_path)
    cfg = section(params, "report", ReportConfig, source=params_path)
    base = section(params, "featurize", FeaturizeConfig, source=params_path).base
    spec = FeatureSpec.load(spec_path)
    table, predictions, selection = read_inputs(clean_dir, base, predictions_dir, select_metrics, spec)
    check_workspace(workspace_dir)  # before the work, not after it: never replace a folder of other files
    reference = pl.concat([read_part(split_dir, p, spec) for p in TRAINING_PARTS], how="vertical_relaxed")
    later = {p: read_part(split_dir, p, spec) for p in LATER_PARTS}
    snapshots, pages, summary = build(
        table, reference, later, predictions, spec, cfg, table_name=base, selection=selection,
        seed=read_seed(params),
    )  # fmt: skip
    with atomic_outputs(out_dir, workspace_dir, summary_path) as (tmp_out, tmp_ws, tmp_summary):
        tmp_out.mkdir()
        write_assets(tmp_out)
        write_pages(tmp_out, snapshots, pages, script=f"{ASSETS}/{script_name()}")
        for name, snapshot in snapshots.items():
            snapshot.save_json(str(tmp_out / f"{name}.json"))  # Evidently ignores a Path here
        workspace = open_workspace(tmp_ws)
        proj = project(workspace, cfg.workspace_project)
        for snapshot in snapshots.values():
            add_snapshot(workspace, proj, snapshot)
        write_json(tmp_summary, summary)
    log.info(
        "report: drift share %.3f (%d of %d features), positive rate %.3f -> %.3f, champion %s test ROC "
        "AUC %s, %d failed test(s); %d page(s) in %s, %d snapshot(s) in %s",
        summary["drift_share"], summary["drifted_features"], summary["features"],
        summary["label_drift"]["reference_positive_rate"], summary["label_drift"]["current_positive_rate"],
        selection.champion, summary["champion_test_roc_auc"], summary["failed_tests"]["total"], len(pages),
        out_dir, len(snapshots), workspace_dir,
    )  # fmt: skip


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Evidently reports: data quality, drift, classification."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime report``: its description and options (the dvc.yaml stage passes them)."""
    parser.description = (
        "Evidently reports (params `report`): data quality of the cleaned data, drift of the test window "
        "and of each month against the training window, classification quality of the champion; HTML + "
        "JSON, a summary for `dvc exp show`, and snapshots in a local workspace."
    )
    command.add_params(parser)
    parser.add_argument("--clean", required=True, help=command.CLEAN)
    parser.add_argument("--split", required=True, help=command.SPLIT)
    parser.add_argument("--spec", required=True, help=command.SPEC)
    parser.add_argument("--predictions", required=True, help="folder with test.parquet from evaluate")
    parser.add_argument("--select", required=True, help="metrics/select.json (champion and threshold)")
    parser.add_argument("--out", required=True, help="output folder for the HTML and JSON reports")
    parser.add_argument(
        "--workspace", required=True, help="Evidently workspace folder (written afresh on every run)"
    )
    parser.add_argument("--summary", required=True, help="JSON summary (drift share, failed tests)")


def run(args: argparse.Namespace) -> None:
    """``main`` with the options of :func:`add_arguments`, each by its name."""
    main(
        params_path=args.params,
        clean_dir=args.clean,
        split_dir=args.split,
        spec_path=args.spec,
        predictions_dir=args.predictions,
        select_metrics=args.select,
        out_dir=args.out,
        workspace_dir=args.workspace,
        summary_path=args.summary,
    )
