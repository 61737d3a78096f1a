"""The extra ONNX models the tests need beyond the examples: every V2
datatype through Identity, a fixed shape, slow ones (to have requests in
flight), one that fails above a threshold, and a slower copy of a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ALL_DATATYPES = {
    "BOOL": TensorProto.BOOL,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def write_model(path: Path, model: onnx.ModelProto) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=initializers or [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def identity_all_types() -> onnx.ModelProto:
    """One Identity per V2 datatype: in_<DT> [-1, 3] -> out_<DT>."""
    nodes, inputs, outputs = [], [], []
    for name, onnx_type in ALL_DATATYPES.items():
        inputs.append(helper.make_tensor_value_info(f"in_{name}", onnx_type, ["batch", 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", onnx_type, ["batch", 3]))
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
    return _model(nodes, inputs, outputs)


def fixed_shape() -> onnx.ModelProto:
    """No batch axis: x FP32 [2, 2] -> y = x + 1."""
    one = numpy_helper.from_array(np.ones((2, 2), dtype=np.float32), "one")
    return _model(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        [one],
    )


def slow(repeats: int = 150) -> onnx.ModelProto:
    """x FP32 [-1, 256, 256] multiplied by the same 256x256 matrix ``repeats``
    times: tens of milliseconds a row on one thread, for queueing tests."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((rng.standard_normal((256, 256)) / 16).astype(np.float32), "w")
    nodes = []
    previous = "x"
    for i in range(repeats):
        out = "y" if i == repeats - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [previous, "w"], [out]))
        previous = out
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 256, 256])],
        [weight],
    )


def failing_when_above(model_file: Path, input_name: str, output_name: str, threshold: float) -> onnx.ModelProto:
    """The model in ``model_file`` made to fail, inside ONNX Runtime, on rows
    whose first feature is above ``threshold``: such a row becomes an
    out-of-range Gather index. The signature is unchanged, so it can stand in
    for the original as a (bad) canary candidate."""
    model = onnx.load(str(model_file))
    graph = model.graph
    raw = f"{output_name}_before_gate"
    for node in graph.node:
        node.output[:] = [raw if name == output_name else name for name in node.output]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([0], dtype=np.int64), "gate_start"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "gate_end"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "gate_axis"),
            numpy_helper.from_array(np.array(threshold, dtype=np.float32), "gate_threshold"),
            numpy_helper.from_array(np.array(5, dtype=np.int64), "gate_far"),
            numpy_helper.from_array(np.zeros(2, dtype=np.float32), "gate_table"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Slice", [input_name, "gate_start", "gate_end", "gate_axis"], ["gate_first"]),
            helper.make_node("Greater", ["gate_first", "gate_threshold"], ["gate_above"]),
            helper.make_node("Cast", ["gate_above"], ["gate_flag"], to=TensorProto.INT64),
            helper.make_node("Mul", ["gate_flag", "gate_far"], ["gate_index"]),  # 0, or 5: out of range
            helper.make_node("Gather", ["gate_table", "gate_index"], ["gate_zero"], axis=0),
            helper.make_node("Add", [raw, "gate_zero"], [output_name]),
        ]
    )
    return model


def slower(model_file: Path, input_name: str, output_name: str, products: int = 1500) -> onnx.ModelProto:
    """The model in ``model_file`` with the same answers, made slow: a chain of
    256x256 orthogonal matrix products per row (milliseconds of CPU), whose
    sum times 1e-30 is added to ``output_name`` (far below float32's resolution
    there). A real slow candidate: it computes, it does not sleep."""
    model = onnx.load(str(model_file))
    graph = model.graph
    features = next(i for i in graph.input if i.name == input_name).type.tensor_type.shape.dim[1].dim_value
    raw = f"{output_name}_before_delay"
    for node in graph.node:
        node.output[:] = [raw if name == output_name else name for name in node.output]
    rng = np.random.default_rng(0)
    graph.initializer.extend(
        [
            numpy_helper.from_array(rng.standard_normal((features, 256)).astype(np.float32) / 16, "delay_spread"),
            numpy_helper.from_array(np.linalg.qr(rng.standard_normal((256, 256)))[0].astype(np.float32), "delay_mix"),
            numpy_helper.from_array(np.full(1, 1e-30, dtype=np.float32), "delay_tiny"),
        ]
    )
    nodes = [helper.make_node("MatMul", [input_name, "delay_spread"], ["delay_0"])]
    nodes += [helper.make_node("MatMul", [f"delay_{i}", "delay_mix"], [f"delay_{i + 1}"]) for i in range(products)]
    nodes += [
        helper.make_node("ReduceSum", [f"delay_{products}"], ["delay_sum"], keepdims=1),
        helper.make_node("Mul", ["delay_sum", "delay_tiny"], ["delay_nothing"]),
        helper.make_node("Add", [raw, "delay_nothing"], [output_name]),
    ]
    graph.node.extend(nodes)
    return model
