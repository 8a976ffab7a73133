"""A torch candidate as an ONNX file, for ONNX Runtime on CPU (``ontime.candidates.onnx_model``).

``export_onnx`` writes the candidate's network (eval mode, CPU, float32) with the same interface as
its ``forward``: inputs ``x_num`` (B, n_num) float32 and ``x_cat`` (B, n_cat) int64, output
``logits`` (B,) float32, the batch dimension ``batch`` dynamic. The preprocessing stays in Python
(``Preprocessor.transform``), so :class:`~ontime.candidates.onnx_model.OnnxCandidate` pairs the file
with the candidate's preprocessor and scores polars frames exactly as ``TorchCandidate`` does,
within float32 rounding.

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): it needs only the ``onnx``
package, and on these two small networks it gives the same bytes on every export. The
``torch.export`` (dynamo) exporter would also need ``onnxscript``.

Serving runs the champion's networks this way when ``serve.runtime`` resolves to ``onnx``: the
package stage exports ``model.onnx`` into every torch candidate folder of the bundle and checks it
(:func:`parity_max_abs_diff`), and ``load_candidate(folder, runtime="onnx")`` loads each such folder
as an ``OnnxCandidate``. This module depends on ``ontime.candidates``, never the other way round.

Nothing is pickled: the file is an ONNX protobuf, the preprocessor its JSON.
"""

from __future__ import annotations

import math
import os
import secrets
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from ontime.candidates.onnx_model import INPUTS, OUTPUT, OnnxCandidate
from ontime.candidates.torch_model import (
    TorchCandidate,
    build_model,
    predict_logits,
    sigmoid,
    state_dict_cpu,
)
from ontime.models.preprocess import Preprocessor

BATCH = "batch"


# -------------------------------------------------------------------------------------------------
# export


def export_onnx(candidate: TorchCandidate, path: Path, *, opset: int | None = None) -> Path:
    """Writes ``candidate``'s network to ``path`` as ONNX, atomically; returns ``path``.

    The network is rebuilt from the candidate's architecture and keyword arguments and given a
    CPU copy of its weights, so the candidate's own model (its device, its train/eval mode) is
    left as it is. An input the network never reads (``x_cat`` without categorical columns, ``x_num``
    without numeric ones) is kept in the graph with width 0, so every file takes both inputs.

    Args:
        candidate: A trained torch candidate (MLP or FT-Transformer, adapters included).
        path: Where the ``.onnx`` file goes; its folder is created. The file is written under a
            temporary name beside it, then renamed over it.
        opset: The ONNX opset to target; None: the exporter's default.

    Returns:
        ``path``.
    """
    path = Path(path)
    model = build_model(candidate.architecture, candidate.kwargs)
    model.load_state_dict(state_dict_cpu(candidate.model))
    model.float().eval()
    # Two example rows of zeros: every categorical code 0 (unknown) exists in every column.
    n_num, n_cat = candidate.kwargs["n_num"], len(candidate.kwargs["cardinalities"])
    x_num = torch.zeros(2, n_num, dtype=torch.float32)  # (2, n_num)
    x_cat = torch.zeros(2, n_cat, dtype=torch.int64)  # (2, n_cat)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # hidden by .gitignore
    try:
        with warnings.catch_warnings():
            # The legacy exporter announces its deprecation, and the traced shape checks of
            # ``forward`` (``_check_inputs``) are constant for a fixed width: both are expected.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            torch.onnx.export(
                model,
                (x_num, x_cat),
                str(temp),
                dynamo=False,
                input_names=list(INPUTS),
                output_names=[OUTPUT],
                dynamic_axes={name: {0: BATCH} for name in (*INPUTS, OUTPUT)},
                opset_version=opset,
                do_constant_folding=True,
            )
        proto = onnx.load(str(temp))
        _restore_unused_inputs(proto, n_num=n_num, n_cat=n_cat)
        _unbounded_clips(proto)
        onnx.checker.check_model(proto)
        with open(temp, "wb") as f:
            f.write(proto.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def _unbounded_clips(proto: onnx.ModelProto) -> None:
    """``clamp_min``/``clamp_max`` export as a ``Clip`` without the other bound, which ONNX defines
    as the type's finite extreme: ONNX Runtime turns an infinite value into +-3.4e38 where PyTorch
    keeps it (the piecewise-linear embedding then gives a finite probability for an input that
    overflowed, PyTorch NaN). Give every float ``Clip`` its missing bound as +-inf instead."""
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*proto.graph.input, *proto.graph.value_info, *proto.graph.initializer)
        if hasattr(v, "type")
    }
    inferred = onnx.shape_inference.infer_shapes(proto)
    types |= {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    bounds = {1: ("ontime_clip_lowest", -np.inf), 2: ("ontime_clip_highest", np.inf)}
    used: set[int] = set()
    for node in proto.graph.node:
        if node.op_type != "Clip" or types.get(node.input[0]) != onnx.TensorProto.FLOAT:
            continue
        while len(node.input) < 3:
            node.input.append("")
        for position, (name, _) in bounds.items():
            if node.input[position] == "":
                node.input[position] = name
                used.add(position)
    for position in sorted(used):
        name, value = bounds[position]
        proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array(value, dtype=np.float32), name))


def _restore_unused_inputs(proto: onnx.ModelProto, *, n_num: int, n_cat: int) -> None:
    """The TorchScript exporter drops inputs the graph never reads: add them back, width 0."""
    present = [i.name for i in proto.graph.input]
    types = {"x_num": (onnx.TensorProto.FLOAT, n_num), "x_cat": (onnx.TensorProto.INT64, n_cat)}
    for position, name in enumerate(INPUTS):
        if name not in present:
            elem_type, width = types[name]
            if width != 0:
                raise RuntimeError(f"the exported graph lacks input {name!r} of width {width}")
            info = onnx.helper.make_tensor_value_info(name, elem_type, [BATCH, 0])
            proto.graph.input.insert(position, info)


def from_torch(
    candidate: TorchCandidate, path: str | Path, *, intra_op_num_threads: int = 2
) -> OnnxCandidate:
    """Exports ``candidate`` to ``path`` and loads it with its preprocessor."""
    export_onnx(candidate, Path(path))
    return OnnxCandidate(
        name=candidate.name,
        path=path,
        preprocessor=candidate.preprocessor,
        intra_op_num_threads=intra_op_num_threads,
        batch_size=candidate.batch_size,
    )


# -------------------------------------------------------------------------------------------------
# parity


def synthetic_inputs(
    preprocessor: Preprocessor, *, n_rows: int = 2048, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded network inputs for a parity check, without any data: ``x_num`` standard normal (the
    scale of the preprocessor's output), ``x_cat`` uniform over each column's codes, the unknown
    code 0 included.

    Shape:
        x_num: (n_rows, n_num_features) float32; x_cat: (n_rows, n_categorical) int64.
    """
    rng = np.random.default_rng(seed)
    x_num = rng.standard_normal((n_rows, preprocessor.n_num_features), dtype=np.float32)
    codes = [rng.integers(0, n, n_rows, dtype=np.int64) for n in preprocessor.cardinalities]
    x_cat = np.stack(codes, axis=1) if codes else np.zeros((n_rows, 0), dtype=np.int64)
    return x_num, x_cat


def parity_max_abs_diff(
    native: TorchCandidate, exported: OnnxCandidate, x_num: np.ndarray, x_cat: np.ndarray
) -> float:
    """The largest absolute difference between the two candidates' probabilities on the given
    network inputs (logits -> sigmoid); inf when only one of them gives NaN for a row.

    Shape:
        x_num: (n, n_num) float32; x_cat: (n, n_cat) int64.
    """
    x_num = np.ascontiguousarray(x_num, dtype=np.float32)
    x_cat = np.ascontiguousarray(x_cat, dtype=np.int64)
    device = next(native.model.parameters()).device
    expected = sigmoid(
        predict_logits(native.model, x_num, x_cat, batch_size=native.batch_size, device=device)
    )  # (n,)
    got = sigmoid(exported.predict_logits(x_num, x_cat))  # (n,)
    both_nan = np.isnan(expected) & np.isnan(got)
    diff = np.where(both_nan, 0.0, np.abs(expected - got))
    if np.isnan(diff).any():
        return math.inf
    return float(diff.max()) if diff.size else 0.0
