"""`ontime outcomes` on the data stages' real output (smoke config): the late labels carry the very
key the service logs for the same flight, sorted, with the feature table's labels; bad arguments
fail clearly and leave nothing half-written."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from ontime.cli import main
from ontime.serving.requestlog import flight_key

UTC = dt.UTC
LOCAL = zoneinfo.ZoneInfo("America/New_York")  # params featurize.timezone
KEY = ["carrier", "flight", "origin", "time_hour"]  # params serve.key of the default data
FIRST, LAST = dt.date(2013, 1, 10), dt.date(2013, 1, 11)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["outcomes", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def args(
    data_run: Path, out: Path, *, params: Path | None = None, days: tuple[str, str] | None = None
) -> list[str]:
    start, end = days or (FIRST.isoformat(), LAST.isoformat())
    return [
        "--params", str(params or data_run / "params.yaml"), "--from", start, "--to", end,
        "--features", str(data_run / "data/features/features.parquet"), "--out", str(out),
    ]  # fmt: skip


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def params_with(data_run: Path, path: Path, key: list[str]) -> Path:
    params = yaml.safe_load((data_run / "params.yaml").read_text())
    params["serve"]["key"] = key
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_outcomes_carry_the_service_key_and_the_feature_table_label(
    data_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "outcomes/jan.jsonl"
    code, stdout, _ = run(args(data_run, out), capsys)
    assert code == 0
    lines = read_lines(out)
    assert [list(line) for line in lines[:1]] == [["key", "scheduled", "label"]]

    # the same flights, from the feature table, as a client sends them: an integer flight number and
    # the scheduled hour in UTC; their keys by the service's own function
    table = pl.read_parquet(data_run / "data/features/features.parquet")
    wanted = []
    for row in table.select(*KEY, "label").iter_rows(named=True):
        hour = row["time_hour"]
        if FIRST <= hour.astimezone(LOCAL).date() <= LAST:
            request = {**row, "flight": int(row["flight"]), "time_hour": hour.astimezone(UTC)}
            scheduled = hour.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            wanted.append({"key": flight_key(request, KEY), "scheduled": scheduled, "label": row["label"]})
    wanted.sort(key=lambda line: (line["scheduled"], line["key"]))
    assert len(wanted) > 1000
    assert lines == wanted
    assert lines == sorted(lines, key=lambda line: (line["scheduled"], line["key"]))
    assert {line["label"] for line in lines} == {0, 1}
    # local days, not UTC ones: the evening flights of the 11th are on the 12th in UTC; none of the 12th
    assert any(line["scheduled"].startswith("2013-01-12T") for line in lines)
    local_days = {
        dt.datetime.strptime(line["scheduled"], "%Y-%m-%dT%H:%M:%SZ")
        .replace(tzinfo=UTC)
        .astimezone(LOCAL)
        .date()
        for line in lines
    }
    assert local_days == {FIRST, LAST}
    summary = json.loads(stdout)
    assert (summary["flights"], summary["positives"]) == (len(lines), sum(line["label"] for line in lines))
    assert leftovers(out.parent) == []


def test_default_out_is_named_by_the_days(
    data_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = args(data_run, tmp_path / "unused")[:-2]  # no --out
    code, stdout, _ = run(argv, capsys)
    assert code == 0
    assert json.loads(stdout)["out"] == "outcomes/2013-01-10_2013-01-11.jsonl"
    assert len(read_lines(tmp_path / "outcomes/2013-01-10_2013-01-11.jsonl")) > 1000


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("backwards", "--from 2013-01-11 is after --to 2013-01-10"),
        ("not a day", "YYYY-MM-DD"),
        ("no flights", "no flights scheduled on the local days 2014-06-01 .. 2014-06-02"),
        ("empty key", "params serve.key is empty"),
        ("missing column", "no column(s) ['gate']"),
    ],
)
def test_bad_arguments_fail_clearly_and_write_nothing(
    data_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, message: str
) -> None:
    out = tmp_path / "outcomes.jsonl"
    out.write_text("kept\n")  # an earlier run's file: a failed run must leave it as it was
    argv = {
        "backwards": lambda: args(data_run, out, days=("2013-01-11", "2013-01-10")),
        "not a day": lambda: args(data_run, out, days=("2013-13-01", "2013-01-10")),
        "no flights": lambda: args(data_run, out, days=("2014-06-01", "2014-06-02")),
        "empty key": lambda: args(data_run, out, params=params_with(data_run, tmp_path / "p.yaml", [])),
        "missing column": lambda: args(
            data_run, out, params=params_with(data_run, tmp_path / "p.yaml", ["carrier", "gate"])
        ),
    }[case]()
    code, stdout, stderr = run(argv, capsys)
    assert code == 2
    assert message in stderr
    assert stdout == ""
    assert out.read_text() == "kept\n"
    assert leftovers(tmp_path) == []


def test_a_failure_while_writing_leaves_nothing_half_written(
    data_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ontime.live import outcomes

    out = tmp_path / "outcomes.jsonl"
    out.write_text("kept\n")
    written = 0
    real = json.dumps

    def failing(obj: Any, **kw: Any) -> str:  # the disk fills up after a hundred lines
        nonlocal written
        written += 1
        if written > 100:
            raise OSError(28, "No space left on device")
        return real(obj, **kw)

    monkeypatch.setattr(outcomes.json, "dumps", failing)
    with pytest.raises(OSError, match="No space left"):
        main(["outcomes", *args(data_run, out)])
    assert written > 100
    assert out.read_text() == "kept\n"
    assert leftovers(tmp_path) == []
