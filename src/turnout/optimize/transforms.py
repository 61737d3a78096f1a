"""The transformations ``turnout optimize`` applies, each an ONNX file in and
an ONNX file out (the source file is never written).

- ``fuse``: ONNX Runtime's graph optimisations at a level, saved offline, so
  the served version loads the fused graph instead of fusing at every load.
- ``int8_dynamic``: weights int8 (per channel), activations quantized at run
  time from each batch's range.
- ``int8_static``: weights int8 (per channel), activations uint8 with ranges
  calibrated on representative inputs, in QDQ form. The outputs of MatMul,
  Gemm and Conv stay float (ONNX Runtime runs them as integer products
  scaled back to float): requantizing them is what loses accuracy on
  transformers. Measured on MiniLM (200 calibration sentences, 1,000 held
  out, batch 32, one thread): outputs requantized, 1.94x rows/s and mean
  cosine 0.933; outputs float, 2.15x and 0.990.
- ``fp16``: float weights and arithmetic in half precision, the inputs and
  outputs left in their datatypes unless asked; for execution providers that
  gain from it (a GPU's); on a CPU without fp16 units it is slower.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import onnxruntime as ort

from turnout.optimize.samples import Samples

log = logging.getLogger("turnout.optimize")

GRAPH_LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
QUANTIZED_OPS = ["MatMul", "Gemm", "Conv"]
CALIBRATION_ROWS = 200  # more adds calibration time, not accuracy, for MinMax ranges (MiniLM: 100 vs 200 the same)


def fuse(source: Path, target: Path, level: str) -> None:
    options = ort.SessionOptions()
    options.graph_optimization_level = GRAPH_LEVELS[level]
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def int8_dynamic(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as temp:
        prepared = _prepared(source, Path(temp))
        quantize_dynamic(prepared, target, per_channel=True, weight_type=QuantType.QInt8)


def int8_static(source: Path, target: Path, calibration: Samples) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    options: dict[str, Any] = {"OpTypesToExcludeOutputQuantization": QUANTIZED_OPS}
    with tempfile.TemporaryDirectory() as temp:
        prepared = _prepared(source, Path(temp))

        def quantized() -> None:
            quantize_static(
                prepared,
                target,
                _Reader(calibration.take(0, CALIBRATION_ROWS)),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,  # u8 activations, s8 weights: the fast pairing on x86
                weight_type=QuantType.QInt8,
                op_types_to_quantize=QUANTIZED_OPS,
                extra_options=options,
            )

        try:
            quantized()
        except ValueError:
            # ONNX Runtime 1.32's adjustment of weight scales for int32 biases compares a per-channel
            # array as one number (a Gemm with a bias, as a scikit-learn MLP prepares into): without it
            options["QDQDisableWeightAdjustForInt32Bias"] = True
            quantized()


def fp16(source: Path, target: Path, keep_io_types: bool = True) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    onnx.save(convert_float_to_float16(model, keep_io_types=keep_io_types), str(target))


def _prepared(source: Path, temp: Path) -> Path:
    """ONNX Runtime's recommended step before quantizing (shape inference, basic
    fusions); a model it cannot prepare (some ai.onnx.ml graphs) is quantized as it is."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = temp / "prepared.onnx"
    try:
        quant_pre_process(str(source), str(prepared))
    except Exception as exc:  # symbolic shape inference does not know every operator
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        except Exception:
            log.info("quantizing %s without preparing it (%s)", source, exc)
            return source
    return prepared


class _Reader:
    """Calibration rows one at a time (batch 1, as most served requests come)."""

    def __init__(self, samples: Samples) -> None:
        self._samples, self._next = samples, 0

    def get_next(self) -> dict[str, Any] | None:
        if self._next >= len(self._samples):
            return None
        row = self._samples.take(self._next, self._next + 1)
        self._next += 1
        return dict(row.inputs)

    def rewind(self) -> None:
        self._next = 0
