"""Tests for ontime.models.preprocess.Preprocessor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ontime.models.preprocess import NotFittedError, Preprocessor

NUMERIC = ["dep_delay", "distance", "hour"]
CATEGORICAL = ["carrier", "origin"]


def make_frame(n: int = 500, *, seed: int = 0, shift: float = 0.0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    dep_delay = rng.normal(10.0, 30.0, n) + shift
    dep_delay[rng.random(n) < 0.1] = np.nan  # NaN counts as missing
    distance = rng.exponential(800.0, n) + shift
    return pl.DataFrame(
        {
            "dep_delay": dep_delay,
            # nulls (not NaN) in an integer column
            "distance": pl.Series(distance.round().astype(np.int64)).scatter(np.arange(0, n, 17), None),
            "hour": rng.integers(5, 23, n),
            "carrier": rng.choice(["AA", "B6", "DL", "UA", "ZZ"], n, p=[0.3, 0.3, 0.2, 0.19, 0.01]),
            "origin": pl.Series(rng.choice(["EWR", "JFK", "LGA"], n)).scatter([1, 2], None),
            "unused": rng.normal(size=n),
        }
    )


def make_preprocessor(**kwargs: object) -> Preprocessor:
    return Preprocessor(numeric=NUMERIC, categorical=CATEGORICAL, **kwargs)


# -------------------------------------------------------------------------------------------------
# shapes, dtypes, round trip


@pytest.mark.parametrize("scaling", ["zscore", "minmax", "quantile"])
def test_save_load_round_trip(tmp_path: Path, scaling: str) -> None:
    train, test = make_frame(seed=0), make_frame(n=200, seed=1)
    pre = make_preprocessor(scaling=scaling, min_frequency=2).fit(train)
    path = tmp_path / "preprocessor.json"
    pre.save(path)
    loaded = Preprocessor.load(path)

    assert loaded.to_dict() == pre.to_dict()
    json.loads(path.read_text())  # plain JSON, no pickle
    for frame in (train, test):
        x_num, x_cat = pre.transform(frame)
        x_num_loaded, x_cat_loaded = loaded.transform(frame)
        np.testing.assert_array_equal(x_num, x_num_loaded)
        np.testing.assert_array_equal(x_cat, x_cat_loaded)


def test_transform_shapes_dtypes_and_indicators() -> None:
    train = make_frame()
    pre = make_preprocessor().fit(train)
    x_num, x_cat = pre.transform(train)

    # "hour" has no missing values, so it gets no indicator.
    assert pre.indicator_columns_ == ["dep_delay", "distance"]
    assert pre.n_num_features == 5
    assert pre.num_feature_names == [*NUMERIC, "dep_delay__missing", "distance__missing"]
    assert x_num.dtype == np.float32
    assert x_num.shape == (train.height, 5)
    assert x_cat.dtype == np.int64
    assert x_cat.shape == (train.height, 2)
    assert pre.cardinalities == [6, 4]  # 5 carriers + unknown, 3 airports + unknown

    missing_delay = train.get_column("dep_delay").is_nan().to_numpy()
    missing_distance = train.get_column("distance").is_null().to_numpy()
    np.testing.assert_array_equal(x_num[:, 3], missing_delay.astype(np.float32))
    np.testing.assert_array_equal(x_num[:, 4], missing_distance.astype(np.float32))
    assert np.isfinite(x_num).all()


def test_missing_values_take_the_training_median() -> None:
    train = make_frame()
    pre = make_preprocessor().fit(train)
    delay = train.get_column("dep_delay").to_numpy()
    median = float(np.median(delay[~np.isnan(delay)]))
    assert pre.numeric_stats_["dep_delay"]["fill"] == median

    x_num, _ = pre.transform(train)
    stats = pre.numeric_stats_["dep_delay"]
    expected = np.float32((median - stats["mean"]) / stats["std"])
    np.testing.assert_array_equal(x_num[np.isnan(delay), 0], expected)


# -------------------------------------------------------------------------------------------------
# scalings


def test_zscore_standardises_training_data() -> None:
    train = make_frame().fill_nan(None).drop_nulls()
    x_num, _ = make_preprocessor(scaling="zscore").fit_transform(train)
    np.testing.assert_allclose(x_num[:, :3].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_num[:, :3].std(axis=0), 1.0, atol=1e-5)


def test_minmax_maps_training_data_to_unit_interval() -> None:
    train = make_frame()
    x_num, _ = make_preprocessor(scaling="minmax").fit_transform(train)
    assert x_num.min() >= 0.0
    assert x_num.max() <= 1.0
    np.testing.assert_allclose(x_num[:, 2].min(), 0.0)
    np.testing.assert_allclose(x_num[:, 2].max(), 1.0)


def test_quantile_maps_training_data_to_a_normal() -> None:
    train = make_frame(n=2000).fill_nan(None).drop_nulls()
    pre = make_preprocessor(scaling="quantile", n_quantiles=100)
    x_num, _ = pre.fit_transform(train)
    for f in (0, 1):  # a normal and a skewed (exponential) column
        column = x_num[:, f]
        assert abs(float(np.median(column))) < 0.05
        assert abs(float(column.mean())) < 0.05
        assert 0.9 < float(column.std()) < 1.1
    assert len(pre.quantiles_["distance"]) == 100


def test_constant_column_scales_to_zero() -> None:
    train = pl.DataFrame({"c": [0.1, 0.1, 0.1], "k": ["a", "b", "a"]})
    for scaling in ("zscore", "minmax", "quantile"):
        pre = Preprocessor(numeric=["c"], categorical=["k"], scaling=scaling).fit(train)
        x_num, _ = pre.transform(train)
        np.testing.assert_array_equal(x_num, 0.0)


def test_all_null_column_imputes_zero() -> None:
    train = pl.DataFrame({"c": [None, None], "k": ["a", "b"]}, schema={"c": pl.Float64, "k": pl.String})
    pre = Preprocessor(numeric=["c"], categorical=["k"]).fit(train)
    assert pre.numeric_stats_["c"] == {"fill": 0.0, "mean": 0.0, "std": 1.0}
    x_num, _ = pre.transform(train)
    np.testing.assert_array_equal(x_num, [[0.0, 1.0], [0.0, 1.0]])


# -------------------------------------------------------------------------------------------------
# fitting sees only the rows it is given


def test_fit_sees_only_the_training_rows() -> None:
    train = make_frame(seed=0)
    test = make_frame(seed=1, shift=1000.0)
    pre = make_preprocessor().fit(train)
    before = pre.to_dict()

    x_test, _ = pre.transform(test)
    assert pre.to_dict() == before  # transform learns nothing
    delay = train.get_column("dep_delay").to_numpy()
    assert pre.numeric_stats_["dep_delay"]["mean"] == float(np.mean(delay[~np.isnan(delay)]))
    assert pre.n_rows_fitted_ == train.height
    # Shifted test data is scaled with the training statistics, so it lands far from 0.
    assert x_test[:, 0].mean() > 10.0


# -------------------------------------------------------------------------------------------------
# categories


def test_unknown_categories_and_nulls_map_to_zero() -> None:
    train = pl.DataFrame({"x": [1.0, 2.0, 3.0], "k": ["b", "a", "b"]})
    pre = Preprocessor(numeric=["x"], categorical=["k"]).fit(train)
    assert pre.vocabularies_ == {"k": ["a", "b"]}  # sorted; "a" -> 1, "b" -> 2

    test = pl.DataFrame({"x": [1.0, 1.0, 1.0, 1.0], "k": ["a", "b", "never seen", None]})
    _, x_cat = pre.transform(test)
    np.testing.assert_array_equal(x_cat[:, 0], [1, 2, 0, 0])


def test_categories_are_compared_as_strings() -> None:
    train = pl.DataFrame({"x": [1.0, 2.0, 3.0], "k": [10, 20, 10]})
    pre = Preprocessor(numeric=["x"], categorical=["k"]).fit(train)
    assert pre.vocabularies_ == {"k": ["10", "20"]}
    _, x_cat = pre.transform(pl.DataFrame({"x": [0.0, 0.0], "k": ["20", "30"]}))
    np.testing.assert_array_equal(x_cat[:, 0], [2, 0])


def test_min_frequency_drops_rare_categories() -> None:
    train = pl.DataFrame({"x": [0.0] * 6, "k": ["a", "a", "a", "b", "b", "c"]})
    pre = Preprocessor(numeric=["x"], categorical=["k"], min_frequency=2).fit(train)
    assert pre.vocabularies_ == {"k": ["a", "b"]}
    assert pre.cardinalities == [3]
    _, x_cat = pre.transform(train)
    np.testing.assert_array_equal(x_cat[:, 0], [1, 1, 1, 2, 2, 0])


def test_only_numeric_or_only_categorical() -> None:
    train = make_frame(n=50)
    x_num, x_cat = Preprocessor(numeric=["hour"], categorical=[]).fit_transform(train)
    assert x_num.shape == (50, 1)
    assert x_cat.shape == (50, 0)
    x_num, x_cat = Preprocessor(numeric=[], categorical=["carrier"]).fit_transform(train)
    assert x_num.shape == (50, 0)
    assert x_cat.shape == (50, 1)


# -------------------------------------------------------------------------------------------------
# errors


def test_unfitted_transform_raises() -> None:
    pre = make_preprocessor()
    with pytest.raises(NotFittedError, match="call fit"):
        pre.transform(make_frame(n=10))
    with pytest.raises(NotFittedError, match="call fit"):
        _ = pre.cardinalities


def test_bad_scaling_names_the_value() -> None:
    with pytest.raises(ValueError, match="'robust'"):
        make_preprocessor(scaling="robust")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_frequency": 0}, "min_frequency"),
        ({"n_quantiles": 1}, "n_quantiles"),
        ({"numeric": ["a", "a"], "categorical": []}, "more than once"),
        ({"numeric": ["a"], "categorical": ["a"]}, "both numeric and categorical"),
        ({"numeric": [], "categorical": []}, "at least one column"),
        ({"numeric": "a", "categorical": []}, "list of column names"),
    ],
)
def test_bad_params_raise(kwargs: dict[str, object], match: str) -> None:
    params: dict[str, object] = {"numeric": NUMERIC, "categorical": CATEGORICAL, **kwargs}
    with pytest.raises(ValueError, match=match):
        Preprocessor(**params)


def test_missing_columns_are_named() -> None:
    pre = make_preprocessor()
    with pytest.raises(ValueError, match=r"\['distance', 'origin'\]"):
        pre.fit(make_frame(n=10).drop("distance", "origin"))
    pre.fit(make_frame(n=10))
    with pytest.raises(ValueError, match=r"\['carrier'\]"):
        pre.transform(make_frame(n=10).drop("carrier"))


def test_infinity_is_rejected_with_the_column_name() -> None:
    train = pl.DataFrame({"x": [1.0, float("inf")], "k": ["a", "b"]})
    with pytest.raises(ValueError, match="'x'"):
        Preprocessor(numeric=["x"], categorical=["k"]).fit(train)


def test_non_numeric_column_is_rejected() -> None:
    train = pl.DataFrame({"x": ["1", "2"]})
    with pytest.raises(ValueError, match="list it under categorical"):
        Preprocessor(numeric=["x"], categorical=[]).fit(train)


def test_from_dict_rejects_other_formats() -> None:
    data = make_preprocessor().fit(make_frame(n=20)).to_dict()
    with pytest.raises(ValueError, match="version"):
        Preprocessor.from_dict({**data, "version": 999})
    with pytest.raises(ValueError, match="unknown keys"):
        Preprocessor.from_dict({**data, "extra": 1})
