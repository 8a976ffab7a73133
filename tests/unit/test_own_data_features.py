"""Your own data in featurize and split: time columns in any format (a year, a month, a unix time, a
strftime pattern), misspelt column names caught with a suggestion, the label's source kept for the
leakage audit, and validation parts by rows or share for coarse time. Small frames, in memory."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from ontime.config.clean import LABEL, LabelConfig
from ontime.config.featurize import FeaturizeConfig
from ontime.config.split import SplitConfig
from ontime.data import featurize as featurize_stage
from ontime.data.featurize import check_names, featurize
from ontime.data.split import split
from ontime.errors import DataError
from ontime.spec import LABEL_SOURCE
from tests.conftest import REPO, compose_params

TABLE = yaml.safe_load((REPO / "conf/data/table.yaml").read_text())
UTC = dt.UTC


def feat_cfg(**overrides: Any) -> FeaturizeConfig:
    return FeaturizeConfig.model_validate({**TABLE["featurize"], **overrides})


def label_cfg(**overrides: Any) -> LabelConfig:
    return LabelConfig.model_validate({**TABLE["clean"]["label"], **overrides})


def split_cfg(**overrides: Any) -> SplitConfig:
    return SplitConfig.model_validate({**TABLE["split"], "method": "time", **overrides})


def years_table(first: int = 2000, last: int = 2009, per_year: int = 10) -> pl.DataFrame:
    """A cleaned table: an integer ``year``, a feature, a title, the target and its 0/1 label."""
    n = (last - first + 1) * per_year
    return pl.DataFrame(
        {
            "year": [first + i // per_year for i in range(n)],
            "row": list(range(n)),
            "x": [float(i % 7) for i in range(n)],
            "title": [f"t{i % 3}" for i in range(n)],
            "target": [i % 2 for i in range(n)],
            LABEL: pl.Series([i % 2 for i in range(n)], dtype=pl.Int8),
        }
    )


def windows(*bounds: str) -> dict[str, dict[str, str]]:
    return {
        name: {"start": start, "end": end}
        for name, start, end in zip(("train", "finetune", "test"), bounds, bounds[1:], strict=False)
    }


def with_time(values: list[Any], dtype: pl.DataType | None = None) -> pl.DataFrame:
    n = len(values)
    return pl.DataFrame(
        {
            "t": pl.Series(values, dtype=dtype),
            "x": [float(i) for i in range(n)],
            "target": [i % 2 for i in range(n)],
            LABEL: pl.Series([i % 2 for i in range(n)], dtype=pl.Int8),
        }
    )


def time_values(df: pl.DataFrame, fmt: str, timezone: str | None = None) -> list[dt.datetime]:
    cfg = feat_cfg(time_column="t", time_format=fmt, timezone=timezone)
    out, spec = featurize({"table": df}, cfg, label_cfg())
    assert spec["time_column"] == "t"
    assert "t" not in {f["name"] for f in spec["features"]}
    return out.sort("x").get_column("t").to_list()


# ------------------------------------------------------------------------------- time formats ---
def test_integer_year_becomes_jan_1_and_splits_by_year_windows_with_valid_share() -> None:
    cfg = feat_cfg(time_column="year", time_format="year", derived=["calendar"])
    df, spec = featurize({"table": years_table()}, cfg, label_cfg())
    assert df.schema["year"] == pl.Datetime("us", "UTC")
    assert df.get_column("year").dt.year().unique().sort().to_list() == list(range(2000, 2010))
    assert (df.get_column("year").dt.ordinal_day() == 1).all()
    assert (df.get_column("cal_month") == 1).all()
    assert "year" not in {f["name"] for f in spec["features"]}

    split_config = split_cfg(
        windows=windows("2000-01-01", "2006-01-01", "2008-01-01", "2010-01-01"),
        valid_days=None,
        valid_share=0.2,
    )
    parts = split(df, spec, split_config, seed=0)
    assert {k: v.height for k, v in parts.items()} == {
        "train": 48,
        "train_valid": 12,  # round(0.2 * 60): the last rows of 2005
        "finetune": 16,
        "finetune_valid": 4,
        "test": 20,
    }
    # the latest year validates; within a year rows tie, so the 2 rows of 2004 are a seeded draw
    years = parts["train_valid"].get_column("year").dt.year().to_list()
    assert years == [2004] * 2 + [2005] * 10
    rows = parts["train_valid"].get_column("row").to_list()
    assert rows == sorted(rows)
    assert set(rows) >= set(range(50, 60))
    assert parts["test"].get_column("year").dt.year().unique().sort().to_list() == [2008, 2009]


def test_a_year_is_jan_1_in_the_local_zone_when_a_timezone_is_set() -> None:
    cfg = feat_cfg(time_column="year", time_format="year", timezone="America/New_York")
    df, _ = featurize({"table": years_table(2000, 2001)}, cfg, label_cfg())
    t = df.get_column("year")
    assert t.dtype == pl.Datetime("us", "America/New_York")
    assert t.dt.year().unique().sort().to_list() == [2000, 2001]  # not Dec 31 of the year before
    assert (t.dt.hour() == 0).all()
    assert (t.dt.ordinal_day() == 1).all()


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        (["1995-07", "1995/08", "199609", " 1997-1 "], pl.String),
        ([199507, 199508, 199609, 199701], pl.Int64),
    ],
)
def test_year_month_text_and_integers_become_the_first_of_the_month(
    values: list[Any], dtype: pl.DataType
) -> None:
    got = time_values(with_time(values, dtype), "year_month")
    assert got == [
        dt.datetime(1995, 7, 1, tzinfo=UTC),
        dt.datetime(1995, 8, 1, tzinfo=UTC),
        dt.datetime(1996, 9, 1, tzinfo=UTC),
        dt.datetime(1997, 1, 1, tzinfo=UTC),
    ]


def test_unix_seconds_and_milliseconds_are_utc_instants_then_local_time() -> None:
    seconds = [0, 1_700_000_000, None]
    assert time_values(with_time(seconds, pl.Int64), "unix_s") == [
        dt.datetime(1970, 1, 1, tzinfo=UTC),
        dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        None,
    ]
    millis = with_time([1_700_000_000_123, 86_400_000], pl.Int64)
    got = time_values(millis, "unix_ms", timezone="America/New_York")
    # an instant: shown in local time, not shifted like a wall-clock value
    assert [v.astimezone(UTC) for v in got] == [
        dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC),
        dt.datetime(1970, 1, 2, tzinfo=UTC),
    ]
    assert got[0].hour == 17


def test_a_strftime_pattern_reads_text_dates_at_midnight_and_with_time() -> None:
    assert time_values(with_time(["01/07/1995", "31/12/2000"]), "%d/%m/%Y") == [
        dt.datetime(1995, 7, 1, tzinfo=UTC),
        dt.datetime(2000, 12, 31, tzinfo=UTC),
    ]
    assert time_values(with_time(["01/07/1995 13:45"]), "%d/%m/%Y %H:%M") == [
        dt.datetime(1995, 7, 1, 13, 45, tzinfo=UTC)
    ]


@pytest.mark.parametrize(
    ("fmt", "values", "examples"),
    [
        ("year", [1995, 0, 12000, 0, 1996], "[0, 12000]"),
        ("year_month", ["1995-07", "1995-13", "July 1995"], "['1995-13', 'July 1995']"),
        ("unix_s", [1_700_000_000, 10**15], "[1000000000000000]"),
        ("%d/%m/%Y", ["01/07/1995", "1995-07-01", "32/01/1995"], "['1995-07-01', '32/01/1995']"),
    ],
)
def test_values_that_do_not_convert_fail_with_count_examples_and_fix(
    fmt: str, values: list[Any], examples: str
) -> None:
    n_bad = len(values) - (2 if fmt == "year" else 1)
    with pytest.raises(DataError) as err:
        time_values(with_time(values), fmt)
    message = str(err.value)
    assert f"featurize.time_column 't': {n_bad} of {len(values)} value(s)" in message
    assert f"featurize.time_format={fmt!r}" in message
    assert f"for example {examples}" in message
    assert "set featurize.time_format to the format the column has" in message


def test_more_than_five_bad_values_show_five_examples() -> None:
    with pytest.raises(DataError, match=r"7 of 8 value\(s\)") as err:
        time_values(with_time([1995, *range(10_001, 10_008)]), "year")
    assert "for example [10001, 10002, 10003, 10004, 10005];" in str(err.value)


@pytest.mark.parametrize(
    ("values", "advice"),
    [
        ([1995, 1996, 2001], "look like years: set featurize.time_format=year"),
        ([199507, 199612], "look like years and months: set featurize.time_format=year_month"),
        ([1_700_000_000, 1_700_086_400], "set featurize.time_format=unix_s"),
        ([1_700_000_000_000], "set featurize.time_format=unix_ms"),
        (["31/12/2000", "01/07/1995"], "strftime pattern they are written in, e.g. '%d/%m/%Y'"),
    ],
)
def test_a_time_column_that_is_not_a_date_without_time_format_suggests_one(
    values: list[Any], advice: str
) -> None:
    with pytest.raises(DataError) as err:
        featurize({"table": with_time(values)}, feat_cfg(time_column="t"), label_cfg())
    message = str(err.value)
    assert message.startswith("featurize.time_column 't' is ")
    assert "not a Date or Datetime" in message
    assert advice in message


def test_time_format_on_a_datetime_column_says_to_unset_it() -> None:
    df = with_time([dt.datetime(2000, 1, 1)], pl.Datetime("us", "UTC"))
    with pytest.raises(DataError, match=r"already Datetime.*set featurize.time_format=null"):
        time_values(df, "year")


def test_a_table_joined_on_a_yearly_time_column_is_read_the_same_way() -> None:
    base = years_table(2000, 2002, per_year=2)
    macro = pl.DataFrame({"yr": [2000, 2001, 2002], "gdp": [1.0, 2.0, 3.0]})
    join = {"table": "macro", "left_on": ["year"], "right_on": ["yr"], "columns": ["gdp"], "prefix": "m_"}
    cfg = feat_cfg(time_column="year", time_format="year", joins=[join])
    df, _ = featurize({"table": base, "macro": macro}, cfg, label_cfg())
    assert df.get_column("m_gdp").to_list() == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]


def test_the_service_path_reads_a_year_in_a_request() -> None:
    # Scorer.features calls featurize with the label column LABEL and no threshold: a request that
    # carries `year: 1995` gets the same conversion, and no label source.
    request = pl.DataFrame(
        {"year": [1995], "x": [1.0], "title": ["t0"], LABEL: pl.Series([0], dtype=pl.Int8)}
    )
    online_label = label_cfg(column=LABEL)
    cfg = feat_cfg(time_column="year", time_format="year", exclude=["target"])
    df, spec = featurize({"table": request}, cfg, online_label)
    assert df.get_column("year").to_list() == [dt.datetime(1995, 1, 1, tzinfo=UTC)]
    assert LABEL_SOURCE not in df.columns
    assert spec["label_source"] is None


# --------------------------------------------------------------------------------- name checks ---
def test_an_exclude_typo_is_named_with_a_suggestion() -> None:
    with pytest.raises(DataError) as err:
        check_names({"table": years_table()}, feat_cfg(exclude=["titel"]), label_cfg())
    assert str(err.value) == (
        "featurize.exclude names 'titel', which is not a column of the data (did you mean 'title'?); "
        "fix the spelling or remove it"
    )


def test_a_categorical_typo_is_named_offline_and_in_featurize() -> None:
    tables, cfg = {"table": years_table()}, feat_cfg(categorical=["rwo"])
    with pytest.raises(DataError, match=r"featurize.categorical names 'rwo'.*did you mean 'row'"):
        check_names(tables, cfg, label_cfg())
    with pytest.raises(DataError, match=r"featurize.categorical names 'rwo'.*did you mean 'row'"):
        featurize(tables, cfg, label_cfg())


def test_every_unknown_name_is_listed_at_once() -> None:
    cfg = feat_cfg(exclude=["titel", "zzz_nothing"], categorical=["x"], optional={"extra": ["xx", "title"]})
    with pytest.raises(DataError) as err:
        check_names({"table": years_table()}, cfg, label_cfg())
    message = str(err.value)
    assert message.startswith("3 unknown column names:")
    assert "'titel'" in message
    assert "'zzz_nothing', which is not a column of the data (no similar" in message
    assert "featurize.optional group 'extra' names 'xx'" in message
    assert "names 'x'" not in message
    assert "names 'title'" not in message


def test_names_of_joined_and_derived_columns_and_the_label_are_known() -> None:
    base = years_table(2000, 2001)
    macro = pl.DataFrame({"yr": [2000, 2001], "gdp": [1.0, 2.0]})
    join = {"table": "macro", "left_on": ["year"], "right_on": ["yr"], "columns": ["gdp"], "prefix": "m_"}
    cfg = feat_cfg(
        time_column="year",
        time_format="year",
        joins=[join],
        derived=["calendar", "holidays"],
        exclude=["m_gdp", "cal_hour", "days_to_holiday", "target", LABEL],
    )
    check_names({"table": base, "macro": macro}, cfg, label_cfg())  # no error
    with pytest.raises(DataError, match=r"names 'gdp'.*did you mean 'm_gdp'"):
        check_names({"table": base, "macro": macro}, cfg.model_copy(update={"exclude": ["gdp"]}), label_cfg())


def test_the_default_flights_config_passes_the_name_checks() -> None:
    params = compose_params()
    cfg = FeaturizeConfig.model_validate(params["featurize"])
    label = LabelConfig.model_validate(params["clean"]["label"])
    # the cleaned tables' columns: the declared ones, and the label on the base table
    tables = {t: pl.DataFrame(schema=list(cols)) for t, cols in params["data"]["dtypes"].items()}
    tables[cfg.base] = tables[cfg.base].with_columns(pl.lit(0).alias(LABEL))
    check_names(tables, cfg, label)  # exclude names plane_year (joined), optional names plane_age
    misspelt = cfg.model_copy(update={"exclude": [*cfg.exclude, "plane_yaer"]})
    with pytest.raises(DataError, match=r"did you mean 'plane_year'"):
        check_names(tables, misspelt, label)


def test_the_featurize_stage_runs_the_name_checks(tmp_path: Path) -> None:
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    years_table().write_parquet(clean_dir / "table.parquet")
    params = {
        "featurize": {**TABLE["featurize"], "exclude": ["titel"]},
        "clean": {"label": TABLE["clean"]["label"]},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(DataError, match=r"did you mean 'title'"):
        featurize_stage.main(str(path), str(clean_dir), str(tmp_path / "features"))
    assert not (tmp_path / "features").exists()
    params["featurize"]["exclude"] = ["title"]
    path.write_text(yaml.safe_dump(params))
    featurize_stage.main(str(path), str(clean_dir), str(tmp_path / "features"))
    assert (tmp_path / "features/spec.json").is_file()


# -------------------------------------------------------------------------------- label source ---
def test_a_threshold_label_keeps_its_source_values_beside_the_features() -> None:
    table = years_table().with_columns(score=pl.Series([i % 10 for i in range(100)], dtype=pl.Int64))
    df, spec = featurize({"table": table}, feat_cfg(), label_cfg(column="score", threshold=5))
    assert df.schema[LABEL_SOURCE] == pl.Float64
    assert df.get_column(LABEL_SOURCE).to_list() == [float(i % 10) for i in range(100)]
    assert spec["label_source"] == "score"
    names = {f["name"] for f in spec["features"]}
    assert LABEL_SOURCE not in names
    assert "score" not in names
    assert list(spec) == [
        "version",
        "target",
        "time_column",
        "label_source",
        "features",
        "optional",
        "mask_rate",
    ]


def test_no_label_source_without_a_threshold() -> None:
    df, spec = featurize({"table": years_table()}, feat_cfg(), label_cfg())
    assert LABEL_SOURCE not in df.columns
    assert spec["label_source"] is None
    assert "target" not in {f["name"] for f in spec["features"]}


# ---------------------------------------------------------------------------------------- split ---
def ticks(n: int, *, tie: bool = False) -> pl.DataFrame:
    """``n`` rows a day apart from 2000-01-01 (``tie``: rows 16-19 share day 16)."""
    days = [16 if tie and 16 <= i <= 19 else i for i in range(n)]
    return pl.DataFrame(
        {
            "t": [dt.datetime(2000, 1, 1, tzinfo=UTC) + dt.timedelta(days=d) for d in days],
            "row": list(range(n)),
            LABEL: [i % 2 for i in range(n)],
        }
    ).with_columns(pl.col("t").dt.cast_time_unit("us"))


def test_valid_rows_takes_exactly_the_last_rows_of_each_window() -> None:
    df = ticks(40, tie=True)
    cfg = split_cfg(
        windows=windows("2000-01-01", "2000-01-21", "2000-01-31", "2000-03-01"),
        valid_days=None,
        valid_rows=3,
    )
    parts = split(df, {"time_column": "t"}, cfg, seed=0)
    assert {k: v.height for k, v in parts.items()} == {
        "train": 17,
        "train_valid": 3,
        "finetune": 7,
        "finetune_valid": 3,
        "test": 10,
    }
    # rows 16-19 tie in time: the later rows validate, and among the tied ones a seeded draw
    # decides (never the file's order), the same every run, and kept in the table's order
    valid = parts["train_valid"].get_column("row").to_list()
    assert set(valid) < {16, 17, 18, 19}
    assert valid == sorted(valid)
    assert set(parts["train"].get_column("row").to_list()) == set(range(20)) - set(valid)
    assert split(df, {"time_column": "t"}, cfg, seed=0)["train_valid"].equals(parts["train_valid"])
    draws = {
        tuple(split(df, {"time_column": "t"}, cfg, seed=s)["train_valid"].get_column("row")) for s in range(8)
    }
    assert len(draws) > 1, draws  # the seed, not the file order, picks among ties
    assert parts["finetune_valid"].get_column("row").to_list() == [27, 28, 29]  # no tie at this cut


def test_valid_rows_as_large_as_the_window_hints_at_the_fix() -> None:
    cfg = split_cfg(
        windows=windows("2000-01-01", "2000-01-04", "2000-01-20", "2000-03-01"),
        valid_days=None,
        valid_rows=3,
    )
    with pytest.raises(DataError) as err:
        split(ticks(40), {"time_column": "t"}, cfg, seed=0)
    message = str(err.value)
    assert message.startswith("split part 'train' has no rows")
    assert "holds 3 rows and split.valid_rows=3 takes them all" in message
    assert "lower split.valid_rows below 3" in message


def test_valid_share_keeps_a_row_to_train_on_and_one_to_validate() -> None:
    cfg = split_cfg(
        windows=windows("2000-01-01", "2000-01-03", "2000-01-13", "2000-03-01"),
        valid_days=None,
        valid_share=0.1,
    )
    parts = split(ticks(40), {"time_column": "t"}, cfg, seed=0)
    assert (parts["train"].height, parts["train_valid"].height) == (1, 1)  # 2 rows: round(0.2) -> 1
    assert (parts["finetune"].height, parts["finetune_valid"].height) == (9, 1)


def test_coarse_yearly_time_with_valid_days_says_to_use_a_share() -> None:
    df, spec = featurize(
        {"table": years_table()}, feat_cfg(time_column="year", time_format="year"), label_cfg()
    )
    cfg = split_cfg(windows=windows("2000-01-01", "2006-01-01", "2008-01-01", "2010-01-01"), valid_days=14)
    with pytest.raises(DataError) as err:
        split(df, spec, cfg, seed=0)
    message = str(err.value)
    assert message.startswith("split part 'train_valid' has no rows")
    assert (
        "the time column is coarse (yearly): set split.valid_days=null and split.valid_share=0.2 "
        "(or valid_rows)"
    ) in message


def test_an_empty_window_names_the_window_and_the_data_span() -> None:
    cfg = split_cfg(windows=windows("1990-01-01", "1991-01-01", "2000-01-20", "2000-03-01"), valid_days=3)
    with pytest.raises(
        DataError, match=r"'train' has no rows \(split.windows.train \[1990-01-01, 1991-01-01\)"
    ):
        split(ticks(40), {"time_column": "t"}, cfg, seed=0)
