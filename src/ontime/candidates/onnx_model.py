"""A torch candidate scored through its ``model.onnx`` in ONNX Runtime, on CPU: the ``onnx`` runtime.

``load_candidate(folder, runtime="onnx")`` loads a torch candidate folder as an
:class:`OnnxCandidate` (:meth:`OnnxCandidate.load`): the file the package stage exported
(``ontime.export.onnx``) paired with the candidate's preprocessor, so it scores polars frames
exactly as ``TorchCandidate`` does, within float32 rounding. The file's interface is that of the
network's ``forward``: inputs ``x_num`` (B, n_num) float32 and ``x_cat`` (B, n_cat) int64, output
``logits`` (B,) float32.

Only scoring lives here (ONNX Runtime, no exporter): ``ontime.export.onnx`` writes the files and
depends on this module, never the other way round. Natively loaded candidates never import it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from ontime.candidates import ONNX_FILE
from ontime.candidates.torch_model import TorchCandidate, sigmoid
from ontime.errors import DataError
from ontime.models.preprocess import Preprocessor

INPUTS = ("x_num", "x_cat")
OUTPUT = "logits"
# What ONNX Runtime raises for a file that is not a usable model (none derive from RuntimeError).
_LOAD_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.InvalidProtobuf,
    ort_errors.NoSuchFile,
    ort_errors.RuntimeException,
)


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
