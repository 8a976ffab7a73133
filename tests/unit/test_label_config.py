"""LabelConfig.describe: the one wording of the label, shared by the model card and the service's docs."""

from __future__ import annotations

from typing import Any

import pytest

from ontime.config import section
from ontime.config.clean import CleanConfig, LabelConfig
from ontime.config.serve import ServeConfig
from ontime.serving.online import api_models, request_model
from tests.conftest import compose_params

BASE: dict[str, Any] = {"table": "t", "column": "c", "threshold": None, "positive_value": None}


def label(**settings: Any) -> LabelConfig:
    return LabelConfig.model_validate({**BASE, "missing_positive": False, **settings})


@pytest.mark.parametrize(
    ("settings", "rule"),
    [
        ({"threshold": 15.0}, "`y` is 1 when `c` (table `t`) >= 15, else 0"),
        ({"threshold": 0.5}, "`y` is 1 when `c` (table `t`) >= 0.5, else 0"),
        ({"threshold": -3}, "`y` is 1 when `c` (table `t`) >= -3, else 0"),
        ({"threshold": 1234567.5}, "`y` is 1 when `c` (table `t`) >= 1234567.5, else 0"),  # not 1.23457e+06
        ({"positive_value": "yes"}, "`y` is 1 when `c` (table `t`) equals `yes`, else 0"),
        ({"positive_value": 2}, "`y` is 1 when `c` (table `t`) equals `2`, else 0"),
        ({"positive_value": True}, "`y` is 1 when `c` (table `t`) equals `true`, else 0"),
        ({}, "`y` is `c` (table `t`) itself (a 0/1 or boolean column)"),
    ],
)
@pytest.mark.parametrize(
    ("missing_positive", "missing"), [(False, "are dropped"), (True, "count as positive (1)")]
)
def test_describe(settings: dict[str, Any], rule: str, missing_positive: bool, missing: str) -> None:
    text = label(**settings, missing_positive=missing_positive).describe("y")
    assert text == f"{rule}. Rows with no `c` value {missing}."


def test_the_card_and_the_service_use_the_same_words() -> None:
    params = compose_params([])
    serve, clean = section(params, "serve", ServeConfig), section(params, "clean", CleanConfig)
    api = api_models(serve, request_model([]), clean.label)
    described = api.prediction.model_json_schema()["properties"][serve.probability]["description"]
    assert described == f"probability of the positive class: {clean.label.describe('label')}"
    assert clean.label.describe("label") == (  # the default problem, as its model card says it
        "`label` is 1 when `arr_delay` (table `flights`) >= 15, else 0. "
        "Rows with no `arr_delay` value count as positive (1)."
    )
