"""ONNX Runtime: the first and default runtime.

Its options (``[runtime.options]`` in ``model.toml``) are ONNX Runtime's own
session knobs; see :class:`OnnxOptions`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field

from turnout.errors import InvalidRequest
from turnout.model.runtimes.base import NO_PARAMETERS, LoadContext, LoadedModel, ModelRuntime, Outputs, Tensors
from turnout.model.signature import Signature, TensorSpec

log = logging.getLogger("turnout.registry")

_DATATYPES: Final = {
    "tensor(bool)": "BOOL",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

_GRAPH_LEVELS: Final = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


_EXECUTION_MODES: Final = {
    "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
    "parallel": ort.ExecutionMode.ORT_PARALLEL,
}


class OnnxOptions(BaseModel):
    """``[runtime.options]`` for ONNX Runtime."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # threads inside one operator; 0: ONNX Runtime picks (one per core)
    intra_op_threads: Annotated[int, Field(ge=0)] = 1
    # "parallel" runs independent operators at once on inter_op_threads; ONNX
    # Runtime ignores inter_op_threads in "sequential" mode
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    inter_op_threads: Annotated[int, Field(ge=0)] = 1
    graph_level: Literal["disabled", "basic", "extended", "all"] = "all"
    # execution providers, most wanted first; those this machine's onnxruntime
    # lacks are skipped (logged), and the CPU is always the last resort
    providers: list[str] = ["CPUExecutionProvider"]


class OnnxRuntime(ModelRuntime):
    platform = "onnxruntime_onnx"
    artifacts = ("model.onnx",)
    options = OnnxOptions

    def load(self, context: LoadContext) -> LoadedModel:
        path = context.version_dir / self.artifacts[0]
        knobs: OnnxOptions = context.options
        options = ort.SessionOptions()
        options.intra_op_num_threads = knobs.intra_op_threads
        options.inter_op_num_threads = knobs.inter_op_threads
        options.execution_mode = _EXECUTION_MODES[knobs.execution_mode]
        options.graph_optimization_level = _GRAPH_LEVELS[knobs.graph_level]
        # Spinning worker threads burn the cores the event loop and other models need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        providers = _available(knobs.providers, context.version_dir)
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises several unrelated types for a bad file
            raise ValueError(f"{path}: ONNX Runtime cannot load it: {_first_line(exc)}") from None
        return _OnnxModel(session)


def _available(wanted: Sequence[str], where: Path) -> list[str]:
    """The wanted providers this onnxruntime has, in order, with the CPU last."""
    present = set(ort.get_available_providers())
    missing = [p for p in wanted if p not in present]
    if missing:
        log.warning("%s: execution provider(s) %s not available here (this onnxruntime has %s); using the rest",
                    where, missing, sorted(present))  # fmt: skip
    chosen = [p for p in wanted if p in present]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class _OnnxModel(LoadedModel):
    def __init__(self, session: ort.InferenceSession) -> None:
        self._session: ort.InferenceSession | None = session
        self._signature = session_signature(session)

    @property
    def signature(self) -> Signature | None:
        return self._signature

    def close(self) -> None:
        """Drop the session: its memory goes once no call still holds it."""
        self._session = None

    def prepare(self, inputs: Tensors) -> Tensors:
        if not any(array.dtype == object for array in inputs.values()):
            return inputs
        return {name: _as_text(name, array) for name, array in inputs.items()}

    def predict(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        if self._session is None:
            raise RuntimeError("this model instance was closed")
        names = list(outputs)
        results = self._session.run(names, dict(inputs))
        return {name: np.asarray(value) for name, value in zip(names, results, strict=True)}


def _as_text(name: str, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """ORT string tensors hold UTF-8 ``str``; V2 BYTES arrive as ``bytes``."""
    if array.dtype != object:
        return array
    text = np.empty(array.shape, dtype=object)
    try:
        text.reshape(-1)[:] = [item.decode() if isinstance(item, bytes) else item for item in array.reshape(-1)]
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"input '{name}': the model takes UTF-8 text, got bytes that are not ({exc.reason})"
        ) from None
    return text


def session_signature(session: ort.InferenceSession) -> Signature:
    """The V2 signature of an ONNX Runtime session (raises ValueError for a type V2 cannot carry)."""
    return Signature(
        tuple(_spec(node) for node in session.get_inputs()), tuple(_spec(node) for node in session.get_outputs())
    )


def _spec(node: Any) -> TensorSpec:
    datatype = _DATATYPES.get(node.type)
    if datatype is None:
        problem = f"tensor '{node.name}' has type {node.type}, which the V2 protocol cannot carry"
        if node.type.startswith("seq(map("):
            # skl2onnx's default for a classifier: its ZipMap turns probabilities into one dict per row
            problem += (
                "; a scikit-learn classifier exported with skl2onnx's default ZipMap: export it again with "
                "to_onnx(model, X, options={'zipmap': False}), so probabilities are a [rows, classes] tensor"
            )
        raise ValueError(problem)
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (node.shape or []))
    return TensorSpec(node.name, datatype, shape)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
