"""ONNX export: tiny seeded networks of both architectures score through ONNX Runtime as in PyTorch;
serving's runtime "onnx" (``load_candidate``, the package stage's export and parity check)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from ontime.candidates import ONNX_FILE, VALID_PART, load_candidate
from ontime.candidates.ensemble_model import EnsembleCandidate
from ontime.candidates.linear_model import LinearCandidate
from ontime.candidates.onnx_model import OnnxCandidate
from ontime.candidates.torch_model import TorchCandidate, build_model, predict_logits
from ontime.errors import DataError
from ontime.export import onnx as onnx_export
from ontime.export.onnx import export_onnx, from_torch, synthetic_inputs
from ontime.lineage import tree_sha256
from ontime.models.mlp import MLP
from ontime.models.preprocess import Preprocessor
from ontime.serving.package import prepare_runtime
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
    return torch_candidate, from_torch(torch_candidate, path)


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


def test_an_overflowed_input_stays_unscorable(pair: tuple) -> None:
    # A value beyond float32 reaches the network as +-inf: PyTorch gives NaN, and so must ONNX
    # Runtime, or the service would answer with a probability instead of a 422. (An ONNX Clip without
    # its other bound once saturated inf to 3.4e38: the piecewise-linear embedding gave a number.)
    torch_candidate, onnx_candidate = pair
    x_num, x_cat = torch_candidate.preprocessor.transform(frame(4, seed=1))
    x_num[0, 2], x_num[1, 0] = -np.inf, np.inf
    expected = predict_logits(
        torch_candidate.model, x_num, x_cat, batch_size=4096, device=torch.device("cpu")
    )
    got = onnx_candidate.predict_logits(x_num, x_cat)
    assert np.isnan(expected[:2]).all(), expected
    assert np.isnan(got[:2]).all(), got
    np.testing.assert_allclose(got[2:], expected[2:], rtol=0, atol=TOL)


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
    onnx_candidate = from_torch(adapted, tmp_path / "adapted.onnx")
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
    onnx_candidate = from_torch(torch_candidate, tmp_path / "model.onnx")
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


# ------------------------------------------------------------------ serving: runtime "onnx" ---
def saved_torch(folder: Path, architecture: str = "mlp", *, name: str = "net") -> TorchCandidate:
    """A small torch candidate with held-out predictions, saved in ``folder``."""
    torch_candidate = candidate(
        architecture, CASES[architecture][1], numeric=NUMERIC, categorical=CATEGORICAL
    )
    torch_candidate.name = name
    torch_candidate.held_out = {VALID_PART: np.linspace(0.1, 0.9, 7)}
    torch_candidate.save(folder)
    return torch_candidate


def saved_linear(folder: Path, *, name: str = "lin") -> LinearCandidate:
    pre = Preprocessor(numeric=NUMERIC, categorical=CATEGORICAL).fit(frame(500, seed=0))
    rng = np.random.default_rng(3)
    linear = LinearCandidate(
        name=name,
        preprocessor=pre,
        coef_numeric=rng.normal(0, 0.3, pre.n_num_features),
        coef_categorical={
            c: rng.normal(0, 0.3, n) for c, n in zip(pre.categorical, pre.cardinalities, strict=True)
        },
        intercept=-0.5,
        trained_on=["train"],
        penalty="l2",
        C=1.0,
    )
    linear.save(folder)
    return linear


def saved_ensemble(folder: Path, tmp_path: Path, method: str) -> None:
    """A weighted or stacking ensemble of a torch network and a linear model, saved in ``folder``."""
    dirs = {"net": tmp_path / "src" / "net", "lin": tmp_path / "src" / "lin"}
    members = [saved_torch(dirs["net"], "ft_transformer"), saved_linear(dirs["lin"])]
    state = {"weights": [0.6, 0.4]} if method == "weighted" else {"coef": [0.8, 1.1], "intercept": -0.2}
    ensemble = EnsembleCandidate(name="ens", method=method, members=list(members), state=state)
    ensemble.save(folder, dirs)


def test_load_candidate_runs_a_torch_folder_in_onnx_runtime(tmp_path: Path) -> None:
    folder = tmp_path / "net"
    saved_torch(folder)
    export_onnx(TorchCandidate.load(folder), folder / ONNX_FILE)
    native, onnx_candidate = load_candidate(folder), load_candidate(folder, runtime="onnx")
    assert isinstance(native, TorchCandidate)
    assert isinstance(onnx_candidate, OnnxCandidate)
    assert (onnx_candidate.name, onnx_candidate.batch_size) == (native.name, native.batch_size)
    assert onnx_candidate.held_out.keys() == native.held_out.keys() == {VALID_PART}
    np.testing.assert_array_equal(onnx_candidate.held_out[VALID_PART], native.held_out[VALID_PART])
    rows = frame(512, seed=1)
    np.testing.assert_allclose(
        onnx_candidate.predict_proba(rows), native.predict_proba(rows), rtol=0, atol=TOL
    )


@pytest.mark.parametrize("method", ["weighted", "stacking"])
def test_an_ensemble_runs_its_torch_members_in_onnx_runtime(tmp_path: Path, method: str) -> None:
    folder = tmp_path / "ens"
    saved_ensemble(folder, tmp_path, method)
    assert prepare_runtime(folder, "auto")["runtime"] == "onnx"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob(ONNX_FILE)) == [
        "members/net/model.onnx"
    ]
    native, onnx_ensemble = load_candidate(folder), load_candidate(folder, runtime="onnx")
    assert isinstance(native, EnsembleCandidate)
    assert isinstance(onnx_ensemble, EnsembleCandidate)
    assert [type(m) for m in native.members] == [TorchCandidate, LinearCandidate]
    assert [type(m) for m in onnx_ensemble.members] == [OnnxCandidate, LinearCandidate]
    rows = frame(512, seed=1)
    np.testing.assert_allclose(
        onnx_ensemble.predict_proba(rows), native.predict_proba(rows), rtol=0, atol=TOL
    )


def test_onnx_runtime_without_model_onnx_says_to_package_again(tmp_path: Path) -> None:
    saved_torch(tmp_path / "net")
    with pytest.raises(DataError, match=r"net: model\.onnx is missing.*package the champion again"):
        load_candidate(tmp_path / "net", runtime="onnx")
    saved_ensemble(tmp_path / "ens", tmp_path, "weighted")
    with pytest.raises(DataError, match=r"members/net: model\.onnx is missing"):
        load_candidate(tmp_path / "ens", runtime="onnx")
    assert isinstance(load_candidate(tmp_path / "ens"), EnsembleCandidate)  # native needs none


def test_package_exports_the_same_bytes_and_records_the_parity(tmp_path: Path) -> None:
    # Two packagings of the same champion: the same model.onnx bytes, so the same content hash (the
    # model's version).
    saved_ensemble(tmp_path / "champion", tmp_path, "stacking")
    digests, files = [], []
    for copy in ("a", "b"):
        bundle = shutil.copytree(tmp_path / "champion", tmp_path / copy)
        info = prepare_runtime(bundle, "onnx")
        assert info["runtime"] == "onnx"
        assert 0 <= info["onnx_max_abs_diff"] <= TOL
        files.append((bundle / "members/net" / ONNX_FILE).read_bytes())
        digests.append(tree_sha256(bundle, [p for p in bundle.rglob("*") if p.is_file()]))
        assert not [p.name for p in (bundle / "members/net").iterdir() if p.name.endswith(".tmp")]
    assert files[0] == files[1]
    assert digests[0] == digests[1]


def test_package_refuses_onnx_without_a_network(tmp_path: Path) -> None:
    saved_linear(tmp_path / "linear", name="linear")
    with pytest.raises(DataError, match=r"champion 'linear' \(linear\) holds no PyTorch network.*"
                       r"set serve\.runtime: native"):  # fmt: skip
        prepare_runtime(tmp_path / "linear", "onnx")
    assert prepare_runtime(tmp_path / "linear", "auto") == {"runtime": "native"}
    saved_torch(tmp_path / "net")
    assert prepare_runtime(tmp_path / "net", "native") == {"runtime": "native"}
    assert not list(tmp_path.rglob(ONNX_FILE))


def test_package_refuses_an_export_that_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved_torch(tmp_path / "net")
    monkeypatch.setattr(onnx_export, "parity_max_abs_diff", lambda *args: 3e-4)
    with pytest.raises(
        DataError, match=r"differ from PyTorch's by up to 0\.0003.*set serve\.runtime: native"
    ):
        prepare_runtime(tmp_path / "net", "onnx")
    assert sorted(p.name for p in (tmp_path / "net").iterdir()) == sorted(
        [
            "candidate.json",
            "model.json",
            "model.safetensors",
            "preprocessor.json",
            f"held_out_{VALID_PART}.parquet",
        ]
    )  # nothing half-written: no model.onnx, no temporary


def test_synthetic_parity_inputs_cover_every_code() -> None:
    pre = candidate("mlp", MLP_KWARGS, numeric=NUMERIC, categorical=CATEGORICAL).preprocessor
    x_num, x_cat = synthetic_inputs(pre, n_rows=2048, seed=0)
    assert (x_num.shape, x_num.dtype) == ((2048, pre.n_num_features), np.float32)
    assert (x_cat.shape, x_cat.dtype) == ((2048, len(pre.cardinalities)), np.int64)
    for j, n in enumerate(pre.cardinalities):
        assert set(np.unique(x_cat[:, j])) == set(range(n))  # the unknown code 0 included
    again = synthetic_inputs(pre, n_rows=2048, seed=0)
    np.testing.assert_array_equal(again[0], x_num)
    np.testing.assert_array_equal(again[1], x_cat)


def test_loading_candidates_natively_never_imports_onnx_runtime(tmp_path: Path) -> None:
    # evaluate and select load candidates natively: they must not import onnx or onnxruntime.
    saved_ensemble(tmp_path / "ens", tmp_path, "weighted")
    code = (
        "import sys; from ontime.evaluation import evaluate; from ontime.candidates import load_candidate; "
        f"load_candidate({str(tmp_path / 'ens')!r}); "
        "onnx = ('onnx', 'onnxruntime', 'ontime.export.onnx', 'ontime.candidates.onnx_model'); "
        "print(sorted(m for m in onnx if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_per_feature_linear_is_einsum_exactly_and_exports_as_matmul(tmp_path: Path) -> None:
    """The numeric embeddings' per-feature Linear is a batched matmul: bit-identical to the einsum
    it replaces (values and gradients, so training is unchanged), and ONNX gets MatMul, not the
    Einsum ONNX Runtime runs slowly (bench/README.md, "inference.py")."""
    from ontime.models.mlp import _PerFeatureLinear

    torch.manual_seed(0)
    layer = _PerFeatureLinear(n_features=7, d_in=8, d_out=5)
    for batch in (1, 64, 1024):
        x = torch.randn(batch, 7, 8)
        got = layer(x)
        want = torch.einsum("bfi,fio->bfo", x, layer.weight) + layer.bias
        assert torch.equal(got, want)
        (g_got,) = torch.autograd.grad(got.square().sum(), layer.weight)
        (g_want,) = torch.autograd.grad(want.square().sum(), layer.weight)
        assert torch.equal(g_got, g_want)
    import onnx

    path = export_onnx(
        candidate("mlp", MLP_KWARGS, numeric=NUMERIC, categorical=CATEGORICAL), tmp_path / "m.onnx"
    )
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Einsum" not in ops
    assert "MatMul" in ops
