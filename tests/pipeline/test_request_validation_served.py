"""A packaged bundle of the smoke pipeline scores whatever the request schema accepts
(tests/component/test_request_validation.py checks the schema itself, without a bundle)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ontime.errors import DataError
from ontime.serving.online import Scorer
from tests.component.test_request_validation import GOOD, I32_MAX, I32_MIN, OPTIONAL_DERIVED
from tests.conftest import SmokeRepo


# ------------------------------------------------------------------------ end to end (a bundle) ---
def bundle_path(smoke_repo: SmokeRepo) -> Path:
    info = json.loads((smoke_repo.origin / "models/package.json").read_text())
    name, version = info["model_tag"].split(":")
    return Path(smoke_repo.environ["BENTOML_HOME"]) / "models" / name / version


def test_scoring_what_the_schema_accepts_never_raises(smoke_repo: SmokeRepo) -> None:
    scorer = Scorer(bundle_path(smoke_repo))
    good = {k: v for k, v in GOOD.items() if k in scorer.Record.model_fields}
    good["time_hour"] = "2013-02-14T14:00:00Z"  # in the smoke model's data

    def features(**change: Any) -> pl.DataFrame:
        return scorer.features(scorer.frame(scorer.validate([{**good, **change}])))

    # the same flight, however its codes are spaced or cased, and however its time is written
    plain = features()
    assert plain.get_column("carrier").item() == "UA"
    assert_frame_equal(features(carrier=" ua ", origin="ewr", dest="\tIah ", tailnum=" n14228"), plain)
    for same in ("2013-02-14T14:00:00", "2013-02-14T09:00:00-05:00", "2013-02-14T14:00:00+00:00"):
        assert_frame_equal(features(time_hour=same), plain)
    if "tailnum" in scorer.Record.model_fields and not scorer.Record.model_fields["tailnum"].is_required():
        assert_frame_equal(features(tailnum="  "), features(tailnum=None))
    # outliers become missing, as in clean
    assert features(temp=1e308).get_column("wx_temp").item() is None
    assert features(wind_speed=-5.0).get_column("wx_wind_speed").item() is None

    # every extreme the schema accepts scores to a probability (no overflow, no exception)
    extremes: list[dict[str, Any]] = [
        {"flight": I32_MAX},
        {"flight": I32_MIN},
        {"sched_dep_time": 0, "sched_arr_time": 2359},
        {"sched_dep_time": 2359, "sched_arr_time": 0},
        {"time_hour": "2013-01-01T00:00:00Z"},
        {"time_hour": "2039-12-31T23:59:59.999999Z"},
        {"distance": 1, "humid": 0, "visib": 0, "wind_dir": 0},
        {"distance": 6000, "humid": 100, "visib": 10, "wind_dir": 360},
        {"temp": 1e308, "wind_speed": -1e308, "wind_gust": 1e308},
        {"carrier": "x" * 64, "origin": "Ö", "dest": "  zz  ", "tailnum": "?"},
        {name: 10_000 for name in OPTIONAL_DERIVED if name in scorer.Record.model_fields},
        {name: 0 for name in OPTIONAL_DERIVED if name in scorer.Record.model_fields},
    ]
    rows = [{**good, **change} for change in extremes]
    probabilities = [p["delay_probability"] for p in scorer.predict(scorer.validate(rows))]
    assert all(math.isfinite(p) and 0 <= p <= 1 for p in probabilities), probabilities
    # and each problem the users found is rejected before scoring, naming the field
    for name, value in (
        ("flight", 2**31),
        ("time_hour", 1360850400),
        ("time_hour", "0001-01-01T00:00:00Z"),
        ("sched_dep_time", 960),
        ("carrier", " "),
    ):
        with pytest.raises(DataError, match=rf"row 0: .*\n{name}\n"):
            scorer.validate([{**good, name: value}])
