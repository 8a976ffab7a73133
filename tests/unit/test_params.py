"""params.yaml is the composition of conf/, and every section is checked strictly."""

from __future__ import annotations

import copy

import pytest
import yaml

from ontime.config import section
from ontime.config.clean import CleanConfig
from ontime.config.data import DataConfig
from ontime.config.featurize import FeaturizeConfig
from ontime.config.split import SplitConfig
from ontime.errors import ConfigError
from ontime.params import compose, validate
from tests.conftest import REPO, compose_params

SECTIONS = {"data": DataConfig, "clean": CleanConfig, "featurize": FeaturizeConfig, "split": SplitConfig}


def test_committed_params_equal_composition_of_conf() -> None:
    # `dvc repro` reads params.yaml; `dvc exp run` recomposes conf/. They must agree.
    assert (REPO / "params.yaml").read_text() == compose(REPO / "conf")


@pytest.mark.parametrize("group", ["nycflights13", "table"])
def test_every_data_group_validates(group: str) -> None:
    params = compose_params([f"data={group}"])
    for name, model in SECTIONS.items():
        section(params, name, model)


def test_unknown_key_is_named() -> None:
    params = compose_params()
    bad = copy.deepcopy(params)
    bad["clean"]["tables"]["flights"]["rangez"] = {}
    with pytest.raises(ConfigError, match=r"clean\.tables\.flights\.rangez: unknown key"):
        section(bad, "clean", CleanConfig)


def test_missing_key_is_named() -> None:
    bad = copy.deepcopy(compose_params())
    del bad["split"]["valid_days"]
    with pytest.raises(ConfigError, match=r"split\.valid_days: missing key"):
        section(bad, "split", SplitConfig)


def test_wrong_value_names_key_and_value() -> None:
    bad = copy.deepcopy(compose_params())
    bad["data"]["source"] = "ftp"
    with pytest.raises(ConfigError, match=r"data\.source: .*'ftp'"):
        section(bad, "data", DataConfig)


def test_bad_hydra_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot compose"):
        compose(REPO / "conf", ["data=nope"])


def test_params_check_cli(tmp_path) -> None:
    from ontime.cli import main

    out = tmp_path / "params.yaml"
    assert main(["params", "--conf", str(REPO / "conf"), "--output", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["seed"] == 42
    assert main(["params", "--conf", str(REPO / "conf"), "--output", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace("seed: 42", "seed: 7"))
    assert main(["params", "--conf", str(REPO / "conf"), "--output", str(out), "--check"]) == 2


def test_params_validates_every_section_before_writing(tmp_path) -> None:
    from ontime.cli import main

    out = tmp_path / "params.yaml"
    assert main(["params", "--conf", str(REPO / "conf"), "--output", str(out)]) == 0
    before = out.read_text()
    for bad in ("train.lr=-1", "report.min_roc_auc=2", "serve.max_batch_size=0", "baseline.num_leaves=1"):
        assert main(["params", "--conf", str(REPO / "conf"), "--output", str(out), bad]) == 2, bad
        assert out.read_text() == before, f"{bad} reached params.yaml"
    params = yaml.safe_load(before)
    params["train"]["lr"] = -1
    with pytest.raises(ConfigError, match=r"train\.lr"):
        validate(params)
