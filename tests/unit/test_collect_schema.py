"""Your own data with no dtypes declared: inferred and normalised types, mixed columns, unnamed index
columns, the recorded schema.json, the data.dep check and the label column's message."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import subprocess
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pytest

from ontime.data import clean, collect
from ontime.errors import ConfigError, DataError
from ontime.io import read_json
from tests.conftest import BIN, env, write_params

CSV = "data/external/mine.csv"


def write_csv(work: Path, header: str, rows: Sequence[Sequence[object]], rel: str = CSV) -> Path:
    path = work / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *(",".join(str(v) for v in row) for row in rows)]) + "\n")
    return path


def params(work: Path, *extra: str, table: str = CSV) -> Path:
    """The generic table config on ``table``, no dtypes declared (data.dep follows data.tables)."""
    return write_params(work / "params.yaml", ["data=table", f"data.tables.table={table}", *extra])


def run_collect(
    work: Path, params_path: Path, monkeypatch: pytest.MonkeyPatch, out: str = "data/raw"
) -> None:
    monkeypatch.chdir(work)
    collect.main(str(params_path), out)


def mixed_rows(n: int = 30) -> list[tuple[object, ...]]:
    """``amount``: numbers but for 3 of 30 values ('abc' twice, 'n/a'): exactly 90% numbers.
    ``code``: half numbers, half text: plain text."""
    odd = {4: "abc", 11: "n/a", 20: "abc"}
    return [(i, odd.get(i, i * 10), i if i % 2 else f"c{i}", i % 2) for i in range(n)]


MIXED_HEADER = "id,amount,code,target"


# ------------------------------------------------------------------------------ mixed columns ---
def test_mixed_column_fails_with_count_examples_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_csv(tmp_path, MIXED_HEADER, mixed_rows())
    with pytest.raises(DataError) as err:
        run_collect(tmp_path, params(tmp_path), monkeypatch)
    message = str(err.value)
    assert f"table table ({CSV}): column 'amount' looks numeric" in message
    assert "3 of its 30 value(s) are not numbers, for example 'abc', 'n/a'." in message
    for fix in (
        "data.mixed_types=missing",
        "data.mixed_types=categorical",
        "data.dtypes.table.amount: String",
    ):
        assert fix in message
    assert not (tmp_path / "data/raw").exists()


def test_mixed_column_fails_via_cli_in_one_line(tmp_path: Path) -> None:
    write_csv(tmp_path, MIXED_HEADER, mixed_rows())
    proc = subprocess.run(
        [str(BIN / "ontime"), "collect", "--params", str(params(tmp_path)), "--out", "data/raw"],
        cwd=tmp_path, env=env(), capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "ontime collect: error: table table" in proc.stderr
    assert "column 'amount' looks numeric, but 3 of its 30 value(s)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_mixed_column_missing_mode_makes_them_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    write_csv(tmp_path, MIXED_HEADER, mixed_rows())
    with caplog.at_level(logging.INFO, logger="ontime.data.collect"):
        run_collect(tmp_path, params(tmp_path, "data.mixed_types=missing"), monkeypatch)
    raw = pl.read_parquet(tmp_path / "data/raw/table.parquet")
    assert raw.schema["amount"] == pl.Int64
    assert raw.get_column("amount").null_count() == 3
    assert raw.get_column("amount").sum() == sum(i * 10 for i in range(30) if i not in (4, 11, 20))
    assert raw.schema["code"] == pl.String  # 50% numbers: text, not mixed
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "column 'amount': 3 of its 30 value(s) are not numbers, for example 'abc', 'n/a'" in warnings[0]


def test_mixed_column_missing_mode_keeps_decimals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [(i, "?" if i == 3 else i / 4, i % 2) for i in range(20)]
    write_csv(tmp_path, "id,x,target", rows)
    run_collect(tmp_path, params(tmp_path, "data.mixed_types=missing"), monkeypatch)
    raw = pl.read_parquet(tmp_path / "data/raw/table.parquet")
    assert raw.schema["x"] == pl.Float64
    assert raw.get_column("x").null_count() == 1


def test_mixed_column_categorical_mode_keeps_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    write_csv(tmp_path, MIXED_HEADER, mixed_rows())
    with caplog.at_level(logging.INFO, logger="ontime.data.collect"):
        run_collect(tmp_path, params(tmp_path, "data.mixed_types=categorical"), monkeypatch)
    raw = pl.read_parquet(tmp_path / "data/raw/table.parquet")
    assert raw.schema["amount"] == pl.String
    assert raw.get_column("amount").null_count() == 0
    assert "abc" in raw.get_column("amount").to_list()
    infos = [r.getMessage() for r in caplog.records if "data.mixed_types=categorical" in r.getMessage()]
    assert len(infos) == 1
    assert "3 of its 30 value(s)" in infos[0]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_below_ninety_percent_numbers_is_plain_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [(i, "abc" if i in (1, 2, 3) else i, i % 2) for i in range(20)]  # 17 of 20: 85% numbers
    write_csv(tmp_path, "id,x,target", rows)
    run_collect(tmp_path, params(tmp_path), monkeypatch)  # mixed_types=fail does not apply
    assert pl.read_parquet(tmp_path / "data/raw/table.parquet").schema["x"] == pl.String


def test_declared_column_is_not_treated_as_mixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_csv(tmp_path, MIXED_HEADER, mixed_rows())
    run_collect(tmp_path, params(tmp_path, "+data.dtypes.table.amount=String"), monkeypatch)
    schema = read_json(tmp_path / "data/raw/schema.json")
    assert schema["tables"]["table"]["columns"]["amount"]["dtype"] == "String"
    assert schema["tables"]["table"]["columns"]["amount"]["declared"] is True
    assert schema["tables"]["table"]["columns"]["id"]["declared"] is False


# ---------------------------------------------------------------------------- unnamed columns ---
def test_blank_header_index_column_is_dropped_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # pandas' DataFrame.to_csv: the index first, under a blank header cell
    write_csv(tmp_path, ",x,target", [(i, i * 2, i % 2) for i in range(10)])
    with caplog.at_level(logging.INFO, logger="ontime.data.collect"):
        run_collect(tmp_path, params(tmp_path), monkeypatch)
    raw = pl.read_parquet(tmp_path / "data/raw/table.parquet")
    assert raw.columns == ["x", "target"]
    dropped = read_json(tmp_path / "data/raw/schema.json")["dropped"]
    assert list(dropped) == ["table"]
    assert list(dropped["table"]) == [""]
    assert "saved row index" in dropped["table"][""]
    logged = [r.getMessage() for r in caplog.records if "dropped column" in r.getMessage()]
    assert len(logged) == 1
    assert "give the column a header" in logged[0]


def test_pandas_unnamed_columns_are_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a CSV read by pandas and written again: the old index became "Unnamed: 0", a new one is blank
    write_csv(tmp_path, ",Unnamed: 0,x,,target", [(i, i, i * 2, i, i % 2) for i in range(10)])
    run_collect(tmp_path, params(tmp_path), monkeypatch)
    raw = pl.read_parquet(tmp_path / "data/raw/table.parquet")
    assert raw.columns == ["x", "target"]
    schema = read_json(tmp_path / "data/raw/schema.json")
    assert sorted(schema["dropped"]["table"]) == sorted(["", "Unnamed: 0", "_duplicated_0"])
    assert list(schema["tables"]["table"]["columns"]) == ["target", "x"]  # write_json sorts keys


def test_declared_unnamed_column_is_kept() -> None:
    df = pl.DataFrame({"Unnamed: 0": ["0", "1"], "": ["a", "b"], "x": ["1", "2"]})
    kept, dropped = collect.drop_unnamed(df, {"Unnamed: 0": "Int64"}, table="t", origin="t.csv")
    assert kept.columns == ["Unnamed: 0", "x"]
    assert list(dropped) == [""]


# ----------------------------------------------------------------------------- recorded schema ---
SMALL = [
    ("2013-01-02", 3, 1.5, "b", "yes", 1),
    ("2013-01-01", 1, "NA", "a", "no", 0),
    ("2013-01-03", "NA", -2.25, "NA", "yes", 1),
    ("2013-01-04", 7, 10.0, "b", "NA", 0),
]
SMALL_HEADER = "day,n,x,cat,flag,target"


def test_schema_json_records_types_nulls_ranges_categories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_csv(tmp_path, SMALL_HEADER, SMALL)
    run_collect(tmp_path, params(tmp_path, "+data.dtypes.table.day=Date"), monkeypatch)
    schema = read_json(tmp_path / "data/raw/schema.json")
    assert schema["version"] == 1
    assert schema["dropped"] == {}
    table = schema["tables"]["table"]
    assert table["rows"] == 4
    cols = table["columns"]
    assert cols["day"] == {
        "dtype": "Date", "declared": True, "nulls": 0, "min": "2013-01-01", "max": "2013-01-04",
        "median": None, "distinct": 4, "categories": None, "mode": None,
    }  # fmt: skip
    assert cols["n"] == {
        "dtype": "Int64", "declared": False, "nulls": 1, "min": 1, "max": 7, "median": 3.0,
        "distinct": 3, "categories": None, "mode": None,
    }  # fmt: skip
    assert cols["x"] == {
        "dtype": "Float64", "declared": False, "nulls": 1, "min": -2.25, "max": 10.0, "median": 1.5,
        "distinct": 3, "categories": None, "mode": None,
    }  # fmt: skip
    assert cols["cat"] == {
        "dtype": "String", "declared": False, "nulls": 1, "min": None, "max": None, "median": None,
        "distinct": 2, "categories": ["a", "b"], "mode": "b",
    }  # fmt: skip
    assert cols["flag"]["categories"] == ["no", "yes"]
    assert cols["flag"]["mode"] == "yes"  # the most frequent value
    assert cols["target"]["dtype"] == "Int64"
    # the parquet files are the tables; schema.json sits beside them
    assert sorted(p.name for p in (tmp_path / "data/raw").iterdir()) == ["schema.json", "table.parquet"]


def test_schema_json_is_byte_identical_across_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_csv(tmp_path, SMALL_HEADER, SMALL)
    p = params(tmp_path)
    run_collect(tmp_path, p, monkeypatch, out="data/raw")
    run_collect(tmp_path, p, monkeypatch, out="data/raw2")
    first = (tmp_path / "data/raw/schema.json").read_bytes()
    assert first == (tmp_path / "data/raw2/schema.json").read_bytes()
    assert first.endswith(b"\n")
    assert b'"dtype": "Date"' not in first  # undeclared dates stay text: only declared types are forced


def test_many_distinct_values_record_no_categories() -> None:
    df = pl.DataFrame({"id": [f"k{i}" for i in range(51)], "few": ["a", "b", "c"] * 17})
    cols = collect.record_schema({"t": df}, {})["tables"]["t"]["columns"]
    assert cols["id"]["distinct"] == 51
    assert cols["id"]["categories"] is None
    assert cols["few"]["categories"] == ["a", "b", "c"]


def test_record_schema_keeps_column_order_and_skips_non_finite() -> None:
    df = pl.DataFrame(
        {"z": [1.0, float("nan"), float("inf"), None], "a": [True, False, None, True]},
    )
    schema = collect.record_schema({"t2": df, "t1": df.select("a")}, {"t2": {"a": "Boolean"}})
    assert list(schema["tables"]) == ["t1", "t2"]
    cols = schema["tables"]["t2"]["columns"]
    assert list(cols) == ["z", "a"]
    assert cols["z"]["min"] == cols["z"]["max"] == 1.0
    assert cols["a"] == {
        "dtype": "Boolean", "declared": True, "nulls": 1, "min": None, "max": None, "median": None,
        "distinct": 2, "categories": ["false", "true"], "mode": "true",
    }  # fmt: skip


def test_clean_writes_schema_of_cleaned_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_csv(tmp_path, ",n,cat,target", [(i, i, "ab"[i % 2], i % 2) for i in range(12)])
    p = params(tmp_path, "+data.dtypes.table.n=Int32", "clean.tables.table.key=[n]")
    run_collect(tmp_path, p, monkeypatch)
    clean.main(str(p), "data/raw", "data/clean", "metrics/clean.json")
    schema = read_json(tmp_path / "data/clean/schema.json")
    cols = schema["tables"]["table"]["columns"]
    assert cols["label"]["dtype"] == "Int8"
    assert cols["label"]["declared"] is False
    assert (cols["label"]["min"], cols["label"]["max"]) == (0, 1)
    assert cols["n"]["dtype"] == "Int32"
    assert cols["n"]["declared"] is True  # from data/raw/schema.json: clean's params hold no data section
    assert schema["dropped"] == {"table": read_json(tmp_path / "data/raw/schema.json")["dropped"]["table"]}
    assert sorted(p.name for p in (tmp_path / "data/clean").iterdir()) == ["schema.json", "table.parquet"]


# ------------------------------------------------------------------------- typed sources (Parquet) ---
def test_parquet_types_are_normalised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "data/external/mine.parquet"
    path.parent.mkdir(parents=True)
    noon = dt.datetime(2013, 7, 1, 12, 0)
    local = pl.Series([noon, noon], dtype=pl.Datetime("ms")).dt.replace_time_zone("America/New_York")
    pl.DataFrame(
        {
            "i8": pl.Series([1, 2], dtype=pl.Int8),
            "u16": pl.Series([3, 4], dtype=pl.UInt16),
            "i32": pl.Series([5, 6], dtype=pl.Int32),
            "f32": pl.Series([0.5, 1.5], dtype=pl.Float32),
            "cat": pl.Series(["a", "b"], dtype=pl.Categorical),
            "enum": pl.Series(["x", "y"], dtype=pl.Enum(["x", "y"])),
            "naive_ns": pl.Series([noon, noon], dtype=pl.Datetime("ns")),
            "ny_ms": local,
            "day": [dt.date(2013, 7, 1), dt.date(2013, 7, 2)],
            "flag": [True, False],
            "target": [0, 1],
        }
    ).write_parquet(path)
    run_collect(tmp_path, params(tmp_path, table="data/external/mine.parquet"), monkeypatch)
    raw = pl.read_parquet(tmp_path / "data/raw/table.parquet")
    utc = pl.Datetime("us", "UTC")
    assert dict(raw.schema) == {
        "i8": pl.Int64, "u16": pl.Int64, "i32": pl.Int32, "f32": pl.Float64, "cat": pl.String,
        "enum": pl.String, "naive_ns": utc, "ny_ms": utc, "day": pl.Date, "flag": pl.Boolean,
        "target": pl.Int64,
    }  # fmt: skip
    assert raw.get_column("ny_ms")[0] == dt.datetime(2013, 7, 1, 16, 0, tzinfo=dt.UTC)  # EDT is UTC-4
    cols = read_json(tmp_path / "data/raw/schema.json")["tables"]["table"]["columns"]
    assert {c: v["dtype"] for c, v in cols.items()} == {
        "i8": "Int64", "u16": "Int64", "i32": "Int32", "f32": "Float64", "cat": "String",
        "enum": "String", "naive_ns": "Datetime", "ny_ms": "Datetime", "day": "Date",
        "flag": "Boolean", "target": "Int64",
    }  # fmt: skip
    assert cols["naive_ns"]["min"] == "2013-07-01T12:00:00+00:00"


def test_unsupported_parquet_type_names_the_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "data/external/mine.parquet"
    path.parent.mkdir(parents=True)
    pl.DataFrame({"tags": [["a"], ["b"]], "target": [0, 1]}).write_parquet(path)
    with pytest.raises(DataError, match=r"column 'tags' is List\(String\), which ontime does not read"):
        run_collect(tmp_path, params(tmp_path, table="data/external/mine.parquet"), monkeypatch)


# ----------------------------------------------------------------------------------- data.dep ---
def test_file_outside_dep_is_a_config_error_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_csv(tmp_path, SMALL_HEADER, SMALL)
    write_csv(tmp_path, "a", [(1,)], rel="data/other/unrelated.csv")
    with pytest.raises(ConfigError) as err:
        run_collect(tmp_path, params(tmp_path, "data.dep=data/other"), monkeypatch)
    message = str(err.value)
    assert f"table table: {CSV} is outside data.dep (data/other)" in message
    assert f"`-S data.dep={CSV}`" in message
    assert not (tmp_path / "data/raw").exists()


def test_glob_inside_dep_folder_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_csv(tmp_path, "x,target", [(1, 0), (2, 1)], rel="data/external/parts/a.csv")
    write_csv(tmp_path, "x,target", [(3, 0)], rel="data/external/parts/b.csv")
    p = params(tmp_path, "data.dep=data/external", table="data/external/parts/*.csv")
    run_collect(tmp_path, p, monkeypatch)
    assert pl.read_parquet(tmp_path / "data/raw/table.parquet").get_column("x").to_list() == [1, 2, 3]
    # one file of the glob outside a narrower dep fails
    p = params(tmp_path, "data.dep=data/external/parts/a.csv", table="data/external/parts/*.csv")
    with pytest.raises(ConfigError, match=r"data/external/parts/b\.csv is outside data\.dep"):
        run_collect(tmp_path, p, monkeypatch)


def test_missing_dep_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_csv(tmp_path, SMALL_HEADER, SMALL)
    with pytest.raises(
        ConfigError, match=rf"data.dep 'data/nope.csv': no such file or folder.*-S data.dep={CSV}"
    ):
        run_collect(tmp_path, params(tmp_path, "data.dep=data/nope.csv"), monkeypatch)


def test_sqlite_database_must_lie_inside_dep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "data/external/db.sqlite"
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x REAL, target INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(0.5, 0), (1.5, 1)])
    write_csv(tmp_path, "a", [(1,)], rel="data/other/unrelated.csv")
    sql = ["data.source=sql", "data.uri=sqlite:///data/external/db.sqlite"]
    query = "'SELECT * FROM t'"
    with pytest.raises(ConfigError, match=r"data/external/db\.sqlite is outside data\.dep \(data/other"):
        run_collect(tmp_path, params(tmp_path, *sql, "data.dep=data/other", table=query), monkeypatch)
    run_collect(
        tmp_path, params(tmp_path, *sql, "data.dep=data/external/db.sqlite", table=query), monkeypatch
    )
    assert pl.read_parquet(tmp_path / "data/raw/table.parquet").height == 2


# ------------------------------------------------------------------------------------- label ---
def test_missing_label_column_names_the_setting_and_a_close_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_csv(tmp_path, "x,targte", [(i, i % 2) for i in range(10)])
    p = params(tmp_path)  # clean.label.column: target
    run_collect(tmp_path, p, monkeypatch)
    proc = subprocess.run(
        [str(BIN / "ontime"), "clean", "--params", str(p), "--raw", "data/raw", "--out", "data/clean",
         "--metrics", "metrics/clean.json"],
        cwd=tmp_path, env=env(), capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "label column 'target' (clean.label.column) does not exist" in proc.stderr
    assert "['x', 'targte']" in proc.stderr
    assert "did you mean 'targte'?" in proc.stderr
    assert "-S clean.label.column=targte" in proc.stderr
    assert "clean.tables.table.label" not in proc.stderr
    assert not (tmp_path / "data/clean").exists()


def test_missing_label_column_without_a_close_match() -> None:
    cfg = clean.LabelConfig(
        table="t", column="target", threshold=None, positive_value=None, missing_positive=False
    )
    with pytest.raises(DataError) as err:
        clean.add_label(pl.DataFrame({"price": [1, 2]}), cfg)
    assert "clean.label.column" in str(err.value)
    assert "did you mean" not in str(err.value)
