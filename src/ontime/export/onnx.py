"""A torch candidate as an ONNX file, scored with ONNX Runtime on CPU.

``export_onnx`` writes the candidate's network (eval mode, CPU, float32) with the same interface as
its ``forward``: inputs ``x_num`` (B, n_num) float32 and ``x_cat`` (B, n_cat) int64, output
``logits`` (B,) float32, the batch dimension ``batch`` dynamic. The preprocessing stays in Python
(``Preprocessor.transform``), so ``OnnxCandidate`` pairs the file with the candidate's preprocessor
and scores polars frames exactly as ``TorchCandidate`` does, within float32 rounding.

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): it needs only the ``onnx``
package, and on these two small networks it gives the same bytes on every export. The
``torch.export`` (dynamo) exporter would also need ``onnxscript``.

Serving runs the champion's networks this way when ``serve.runtime`` resolves to ``onnx``: the
package stage exports ``model.onnx`` into every torch candidate folder of the bundle and checks it
(:func:`parity_max_abs_diff`), and ``load_candidate(folder, runtime="onnx")`` loads each such folder
as an :class:`OnnxCandidate` (:meth:`OnnxCandidate.load`).

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
import onnxruntime as ort
import polars as pl
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from ontime.candidates import ONNX_FILE
from ontime.candidates.torch_model import (
    TorchCandidate,
    build_model,
    predict_logits,
    sigmoid,
    state_dict_cpu,
)
from ontime.errors import DataError
from ontime.models.preprocess import Preprocessor

INPUTS = ("x_num", "x_cat")
OUTPUT = "logits"
BATCH = "batch"
# What ONNX Runtime raises for a file that is not a usable model (none derive from RuntimeError).
_LOAD_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.InvalidProtobuf,
    ort_errors.NoSuchFile,
    ort_errors.RuntimeException,
)


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


# -------------------------------------------------------------------------------------------------
# scoring


class OnnxCandidate:
    """An exported network with its preprocessing; scores polars frames like ``TorchCandidate``.

    Args:
        name: The candidate's name.
        path: The ``.onnx`` file written by ``export_onnx``.
        preprocessor: The fitted preprocessor of the exported candidate.
        intra_op_num_threads: ONNX Runtime threads within an operator.
        batch_size: Rows per ``InferenceSession.run`` call.
        held_out: The exported candidate's held-out predictions (``TorchCandidate.held_out``).

    Raises:
        DataError: ``path`` is missing, is not a model ONNX Runtime can load, or its inputs do
            not fit ``preprocessor``.
    """

    def __init__(
        self,
        *,
        name: str,
        path: str | Path,
        preprocessor: Preprocessor,
        intra_op_num_threads: int = 2,
        batch_size: int = 4096,
        held_out: dict[str, np.ndarray] | None = None,
    ) -> None:
        if intra_op_num_threads < 1:
            raise ValueError(f"intra_op_num_threads must be positive, however: {intra_op_num_threads=}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, however: {batch_size=}")
        self.name = name
        self.path = Path(path)
        self.preprocessor = preprocessor
        self.batch_size = batch_size
        self.held_out = held_out or {}
        fix = (
            "export it again with ontime.export.onnx.export_onnx(TorchCandidate.load(<model folder>), "
            f"Path({str(self.path)!r}))"
        )
        if not self.path.is_file():
            raise DataError(f"{self.path}: ONNX model file is missing; {fix}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except _LOAD_ERRORS as e:
            raise DataError(f"{self.path}: not a valid ONNX model ({e}); {fix}") from e
        self._check_interface(fix)

    @classmethod
    def from_torch(
        cls, candidate: TorchCandidate, path: str | Path, *, intra_op_num_threads: int = 2
    ) -> OnnxCandidate:
        """Exports ``candidate`` to ``path`` and loads it with its preprocessor."""
        export_onnx(candidate, Path(path))
        return cls(
            name=candidate.name,
            path=path,
            preprocessor=candidate.preprocessor,
            intra_op_num_threads=intra_op_num_threads,
            batch_size=candidate.batch_size,
        )

    @classmethod
    def load(cls, folder: str | Path, *, intra_op_num_threads: int = 2) -> OnnxCandidate:
        """The torch candidate in ``folder`` scored through its ``model.onnx``: the name,
        preprocessor, batch size and held-out predictions are those of ``TorchCandidate.load``.

        Raises:
            DataError: ``folder`` has no ``model.onnx`` (it was packaged for the native runtime,
                or before ONNX serving), or the file does not fit the candidate.
        """
        folder = Path(folder)
        if not (folder / ONNX_FILE).is_file():
            raise DataError(
                f"{folder}: {ONNX_FILE} is missing, so this network cannot run in ONNX Runtime; package "
                "the champion again (`dvc repro package` with serve.runtime onnx or auto), or score it "
                "natively (ONTIME_RUNTIME=native)"
            )
        native = TorchCandidate.load(folder)
        return cls(
            name=native.name,
            path=folder / ONNX_FILE,
            preprocessor=native.preprocessor,
            intra_op_num_threads=intra_op_num_threads,
            batch_size=native.batch_size,
            held_out=native.held_out,
        )

    def _check_interface(self, fix: str) -> None:
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if sorted(inputs) != sorted(INPUTS) or outputs != [OUTPUT]:
            raise DataError(
                f"{self.path}: expected inputs {list(INPUTS)} and output {[OUTPUT]}, however: "
                f"inputs {sorted(inputs)}, outputs {outputs}; {fix}"
            )
        widths = {"x_num": self.preprocessor.n_num_features, "x_cat": len(self.preprocessor.categorical)}
        for name, width in widths.items():
            if inputs[name][1] != width:
                raise DataError(
                    f"{self.path}: input {name} has width {inputs[name][1]} but the preprocessor "
                    f"makes {width} columns; export the model together with this preprocessor"
                )

    def predict_logits(self, x_num: np.ndarray, x_cat: np.ndarray) -> np.ndarray:
        """Logits for every row, in batches of ``batch_size``.

        Shape:
            x_num: (n, n_num) float32; x_cat: (n, n_cat) int64; output: (n,) float64.
        """
        x_num = np.ascontiguousarray(x_num, dtype=np.float32)
        x_cat = np.ascontiguousarray(x_cat, dtype=np.int64)
        if x_num.ndim != 2 or x_cat.ndim != 2 or len(x_num) != len(x_cat):
            raise ValueError(
                f"x_num and x_cat must be 2-dimensional with the same number of rows, however: "
                f"{x_num.shape=}, {x_cat.shape=}"
            )
        out = [
            self.session.run(
                [OUTPUT],
                {
                    "x_num": x_num[start : start + self.batch_size],
                    "x_cat": x_cat[start : start + self.batch_size],
                },
            )[0].astype(np.float64)
            for start in range(0, len(x_num), self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros(0)

    def predict_proba(self, df: pl.DataFrame) -> np.ndarray:
        """Probability of label 1 for each row of ``df``. Shape: (n,) float64."""
        x_num, x_cat = self.preprocessor.transform(df)
        return sigmoid(self.predict_logits(x_num, x_cat))


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
