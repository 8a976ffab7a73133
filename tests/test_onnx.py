"""ONNX export: tiny seeded networks of both architectures score through ONNX Runtime as in PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from ontime.candidates.torch_model import TorchCandidate, build_model, predict_logits
from ontime.errors import DataError
from ontime.export.onnx import OnnxCandidate, export_onnx
from ontime.models.mlp import MLP
from ontime.models.preprocess import Preprocessor
from ontime.training.finetune import with_adapters

NUMERIC = ["distance", "dep_hour", "temperature", "wind"]  # temperature and wind are optional: nulls
CATEGORICAL = ["carrier", "origin", "weekday"]
TOL = 1e-6
BATCHES = (1, 64, 1024)


def frame(n: int, seed: int) -> pl.DataFrame:
    """Flights-like rows: numeric columns with nulls and NaN in the optional ones, categorical ones
    with nulls and (in another seed's draw) values the preprocessor never saw."""
    rng = np.random.default_rng(seed)
    temperature = rng.normal(10, 8, n)
    temperature[rng.random(n) < 0.2] = np.nan
    return pl.DataFrame(
        {
            "distance": rng.gamma(2.0, 400.0, n),
            "dep_hour": rng.integers(0, 24, n),
            "temperature": temperature,
            "wind": pl.Series(rng.exponential(5.0, n)).set(pl.Series(rng.random(n) < 0.3), None),
            "carrier": pl.Series(rng.choice(["AA", "DL", "UA", "WN", "B6"], n)).set(
                pl.Series(rng.random(n) < 0.05), None
            ),
            "origin": [f"A{k}" for k in rng.integers(0, 40 + seed, n)],
            "weekday": rng.integers(1, 8, n),
        }
    )


def candidate(
    architecture: str, kwargs: dict[str, Any], *, numeric: list[str], categorical: list[str]
) -> TorchCandidate:
    """A seeded, untrained network on a preprocessor fitted to 2,000 synthetic rows."""
    train = frame(2000, seed=0)
    pre = Preprocessor(numeric=numeric, categorical=categorical, scaling="quantile").fit(train)
    full = {"n_num": pre.n_num_features, "cardinalities": pre.cardinalities, **kwargs}
    if kwargs.get("num_embedding") == "piecewise_linear":
        full["bin_edges"] = MLP.compute_bin_edges(pre.transform(train)[0], n_bins=8)
    torch.manual_seed(0)
    model = build_model(architecture, full).eval()
    return TorchCandidate(
        name=architecture, model=model, architecture=architecture, kwargs=full, preprocessor=pre
    )


MLP_KWARGS = {
    "d_block": 32,
    "n_blocks": 2,
    "num_embedding": "periodic",
    "n_frequencies": 4,
    "d_num_embedding": 4,
}
FT_KWARGS = {"d_token": 16, "n_heads": 4, "n_blocks": 2}
CASES = {
    "mlp": ("mlp", MLP_KWARGS),
    "mlp_plain": ("mlp", {"d_block": 32, "n_blocks": 2}),
    "mlp_piecewise": ("mlp", {**MLP_KWARGS, "num_embedding": "piecewise_linear"}),
    "ft_transformer": ("ft_transformer", FT_KWARGS),
    "ft_transformer_gelu": ("ft_transformer", {**FT_KWARGS, "ffn_activation": "gelu"}),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    architecture, kwargs = CASES[request.param]
    torch_candidate = candidate(architecture, kwargs, numeric=NUMERIC, categorical=CATEGORICAL)
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    return torch_candidate, OnnxCandidate.from_torch(torch_candidate, path)


@pytest.mark.parametrize("batch", BATCHES)
def test_onnx_runtime_scores_as_pytorch(pair: tuple, batch: int) -> None:
    torch_candidate, onnx_candidate = pair
    rows = frame(1024, seed=1).head(batch)  # seed 1: unseen origins too
    x_num, x_cat = torch_candidate.preprocessor.transform(rows)
    assert np.isnan(rows["temperature"].to_numpy()).any() or batch == 1
    expected = predict_logits(
        torch_candidate.model, x_num, x_cat, batch_size=4096, device=torch.device("cpu")
    )
    logits = onnx_candidate.predict_logits(x_num, x_cat)
    assert logits.shape == (batch,)
    assert logits.dtype == np.float64
    np.testing.assert_allclose(logits, expected, rtol=0, atol=TOL)
    probabilities = onnx_candidate.predict_proba(rows)
    assert probabilities.dtype == np.float64
    np.testing.assert_allclose(probabilities, torch_candidate.predict_proba(rows), rtol=0, atol=TOL)


@pytest.mark.parametrize("architecture", ["mlp", "ft_transformer"])
def test_a_network_with_trained_adapters_exports(architecture: str, tmp_path: Path) -> None:
    base = candidate(architecture, CASES[architecture][1], numeric=NUMERIC, categorical=CATEGORICAL)
    adapted = with_adapters(base, rank=4, seed_=1)
    with torch.no_grad():  # as if fine-tuned: adapters that are no longer the identity
        for name, param in adapted.model.named_parameters():
            if name.startswith("adapters."):
                param.normal_(0.0, 0.2)
    adapted.model.eval()
    rows = frame(256, seed=1)
    onnx_candidate = OnnxCandidate.from_torch(adapted, tmp_path / "adapted.onnx")
    expected = adapted.predict_proba(rows)
    assert np.abs(expected - base.predict_proba(rows)).max() > 1e-3  # the adapters matter
    np.testing.assert_allclose(onnx_candidate.predict_proba(rows), expected, rtol=0, atol=TOL)


@pytest.mark.parametrize("architecture", ["mlp", "ft_transformer"])
@pytest.mark.parametrize(
    ("numeric", "categorical"), [(NUMERIC, []), ([], CATEGORICAL)], ids=["no_categorical", "no_numeric"]
)
def test_inputs_without_columns_keep_their_name(
    architecture: str, numeric: list[str], categorical: list[str], tmp_path: Path
) -> None:
    torch_candidate = candidate(
        architecture, CASES[architecture][1], numeric=numeric, categorical=categorical
    )
    onnx_candidate = OnnxCandidate.from_torch(torch_candidate, tmp_path / "model.onnx")
    assert [i.name for i in onnx_candidate.session.get_inputs()] == ["x_num", "x_cat"]
    for batch in (1, 64):
        rows = frame(batch, seed=1)
        np.testing.assert_allclose(
            onnx_candidate.predict_proba(rows), torch_candidate.predict_proba(rows), rtol=0, atol=TOL
        )


def test_export_is_byte_identical_and_leaves_the_candidate_alone(tmp_path: Path) -> None:
    torch_candidate = candidate("ft_transformer", FT_KWARGS, numeric=NUMERIC, categorical=CATEGORICAL)
    torch_candidate.model.train()
    first = export_onnx(torch_candidate, tmp_path / "a" / "model.onnx").read_bytes()
    second = export_onnx(torch_candidate, tmp_path / "a" / "model.onnx").read_bytes()
    assert first == second
    assert torch_candidate.model.training
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["model.onnx"]  # no temporary left


def test_missing_or_corrupt_file_names_it_and_the_fix(tmp_path: Path) -> None:
    torch_candidate = candidate("mlp", MLP_KWARGS, numeric=NUMERIC, categorical=CATEGORICAL)
    pre = torch_candidate.preprocessor
    missing = tmp_path / "missing.onnx"
    with pytest.raises(DataError, match=r"missing\.onnx: ONNX model file is missing; export it again"):
        OnnxCandidate(name="mlp", path=missing, preprocessor=pre)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a protobuf")
    with pytest.raises(DataError, match=r"corrupt\.onnx: not a valid ONNX model .*export_onnx"):
        OnnxCandidate(name="mlp", path=corrupt, preprocessor=pre)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(export_onnx(torch_candidate, tmp_path / "good.onnx").read_bytes()[:500])
    with pytest.raises(DataError, match=r"truncated\.onnx: not a valid ONNX model"):
        OnnxCandidate(name="mlp", path=truncated, preprocessor=pre)
    other = Preprocessor(numeric=NUMERIC[:2], categorical=CATEGORICAL).fit(frame(100, seed=0))
    with pytest.raises(DataError, match=r"input x_num has width 6 but the preprocessor makes 2 columns"):
        OnnxCandidate(name="mlp", path=tmp_path / "good.onnx", preprocessor=other)
