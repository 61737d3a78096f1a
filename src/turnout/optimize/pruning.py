"""Structured pruning of fully connected layers: hidden units removed whole.

A hidden layer here is a dense layer (``MatMul`` by a constant weight and
``Add`` of a constant bias, or ``Gemm``), an elementwise activation (each
unit's output depends on that unit alone), and the next dense layer reading
only it. A unit's importance is the norm of the weights into it times the
norm of the weights out of it; the least important ``ratio`` of units go,
which slices the first layer's weight columns and bias and the next layer's
weight rows: the smaller graph does less arithmetic, so it is faster.

Given the layer's activations on representative inputs, a unit's importance
is how much the next layer's input varies with it, and the next layer's
weights and bias are refitted by least squares to give, from the units kept,
the inputs it had from all of them (its mean moves into the bias): a
closed-form correction in place of retraining. Layers are pruned one at a
time, each measured on the model as the ones before it left it.

Why structured: zeroing single weights (unstructured sparsity) leaves every
matrix its shape, and ONNX Runtime's CPU kernels multiply dense matrices,
zeros included, so it is no faster; removing whole units shrinks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

ELEMENTWISE = frozenset({"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "Softplus", "Gelu", "HardSigmoid"})


@dataclass(frozen=True)
class Hidden:
    """One prunable hidden layer: the names of what pruning rewrites."""

    weight_in: str
    transposed_in: bool  # Gemm with transB = 1: the weight is [units, inputs]
    bias_in: str | None
    activation: str  # the activation's output tensor
    weight_out: str
    transposed_out: bool
    bias_out: str | None  # the next layer's bias, which takes the removed units' mean contribution


def hidden_layers(model: onnx.ModelProto) -> list[Hidden]:
    graph = model.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def only_reader(tensor: str) -> onnx.NodeProto | None:
        found = readers.get(tensor, [])
        return found[0] if len(found) == 1 and tensor not in outputs else None

    def dense(node: onnx.NodeProto) -> tuple[str, bool, str | None, str] | None:
        """(weight, transposed, bias, output) of a dense layer starting at ``node``."""
        if node.op_type == "Gemm" and len(node.input) >= 2 and node.input[1] in weights:
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if attributes.get("transA", 0) or weights[node.input[1]].ndim != 2:
                return None
            bias = node.input[2] if len(node.input) > 2 and node.input[2] in weights else None
            return node.input[1], bool(attributes.get("transB", 0)), bias, node.output[0]
        if node.op_type == "MatMul" and node.input[1] in weights and weights[node.input[1]].ndim == 2:
            add = only_reader(node.output[0])
            if add is not None and add.op_type == "Add":
                other = [name for name in add.input if name != node.output[0]]
                if len(other) == 1 and other[0] in weights:
                    return node.input[1], False, other[0], add.output[0]
            return node.input[1], False, None, node.output[0]
        return None

    found = []
    for node in graph.node:
        first = dense(node)
        if first is None:
            continue
        weight_in, transposed_in, bias_in, pre_activation = first
        activation = only_reader(pre_activation)
        if activation is None or activation.op_type not in ELEMENTWISE:
            continue
        following = only_reader(activation.output[0])
        if following is None or following.input[0] != activation.output[0]:
            continue
        second = dense(following)
        if second is None:
            continue
        weight_out, transposed_out, bias_out, _ = second
        if weight_out == weight_in or len(readers.get(weight_in, [])) != 1 or len(readers.get(weight_out, [])) != 1:
            continue  # a weight shared with another node cannot be sliced for this one alone
        found.append(Hidden(weight_in, transposed_in, bias_in, activation.output[0], weight_out, transposed_out,
                            bias_out))  # fmt: skip
    return found


def prune(model: onnx.ModelProto, ratio: float) -> tuple[onnx.ModelProto, list[tuple[str, int, int]]]:
    """Every hidden layer pruned by its weights alone (no data): see ``prune_layer``."""
    changes = []
    for layer in hidden_layers(model):
        model, change = prune_layer(model, layer.activation, ratio)
        if change is not None:
            changes.append(change)
    return model, changes


def prune_layer(
    model: onnx.ModelProto, activation: str, ratio: float, seen: np.ndarray[Any, Any] | None = None
) -> tuple[onnx.ModelProto, tuple[str, int, int] | None]:
    """A copy with ``ratio`` of one hidden layer's units removed (at least one kept); returns
    it and (activation, units before, units after), or None for a layer it could not prune.

    ``seen``: the layer's activations on representative inputs ([rows, units]). With
    them, a unit's importance is how much the next layer's input varies with it (the
    spread of its activation times the norm of its outgoing weights: its mean is not
    lost, see below), and the next layer's weights and bias are refitted by least
    squares to give, from the units kept, the inputs it had from all of them. Without
    them, importance is the norm of the unit's weights in times that of its weights out."""
    layer = next((found for found in hidden_layers(model) if found.activation == activation), None)
    if layer is None:
        return model, None
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    graph = pruned.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    w_in = weights[layer.weight_in].T if layer.transposed_in else weights[layer.weight_in]  # [inputs, units]
    w_out = weights[layer.weight_out].T if layer.transposed_out else weights[layer.weight_out]  # [units, outputs]
    units = w_in.shape[1]
    if w_out.shape[0] != units or (seen is not None and seen.shape[1] != units):
        return model, None
    keep_count = max(1, round(units * (1.0 - ratio)))
    if seen is not None:
        importance = seen.std(axis=0) * np.linalg.norm(w_out, axis=1)
    else:
        importance = np.linalg.norm(w_in, axis=0) * np.linalg.norm(w_out, axis=1)
    keep = np.sort(np.argsort(-importance, kind="stable")[:keep_count])
    new_out = w_out[keep]
    if seen is not None:  # without a bias to move the mean into, the fit has none
        bias = None if layer.bias_out is None else weights[layer.bias_out]
        refitted, new_bias = _refit(seen.astype(np.float64), keep, w_out.astype(np.float64),
                                    None if bias is None else bias.reshape(-1))  # fmt: skip
        if bias is not None and layer.bias_out is not None:
            weights[layer.bias_out] = new_bias.reshape(bias.shape).astype(bias.dtype)
        new_out = refitted.astype(w_out.dtype)
    new_in = w_in[:, keep]
    weights[layer.weight_in] = np.ascontiguousarray(new_in.T if layer.transposed_in else new_in)
    weights[layer.weight_out] = np.ascontiguousarray(new_out.T if layer.transposed_out else new_out)
    if layer.bias_in is not None:
        bias_in = weights[layer.bias_in]
        weights[layer.bias_in] = bias_in.reshape(-1)[keep].reshape(*bias_in.shape[:-1], len(keep))
    for index, tensor in enumerate(graph.initializer):
        if tensor.name in weights:
            graph.initializer[index].CopyFrom(numpy_helper.from_array(weights[tensor.name], tensor.name))
    del graph.value_info[:]  # shapes inferred before pruning name the old widths
    return pruned, (activation, units, len(keep))


def _refit(
    seen: np.ndarray[Any, Any],
    keep: np.ndarray[Any, Any],
    w_out: np.ndarray[Any, Any],
    bias: np.ndarray[Any, Any] | None,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The next layer's weights from the kept units (and its bias), by ridge least squares,
    so its input on the samples is as close as it can be to what all units gave it."""
    target = seen @ w_out + (0.0 if bias is None else bias)
    columns = [seen[:, keep]] + ([np.ones((len(seen), 1))] if bias is not None else [])
    x = np.hstack(columns)
    gram = x.T @ x
    ridge = 1e-6 * np.trace(gram) / len(gram)  # keeps the solve defined when units move together
    solution = np.linalg.solve(gram + ridge * np.eye(len(gram)), x.T @ target)
    if bias is None:
        return solution, np.zeros(0)
    return solution[:-1], solution[-1]


def with_activations(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy that also outputs every hidden layer's activation (to measure their means)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [layer.activation for layer in hidden_layers(model)]
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return probe, names
