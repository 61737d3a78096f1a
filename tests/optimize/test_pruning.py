"""Structured pruning on real graphs: scikit-learn's MLP as skl2onnx writes
it (MatMul, Add, Relu) and a Gemm network; the pruned graph runs, has the
smaller widths, and keeps the units whose weights matter most."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_breast_cancer
from sklearn.preprocessing import StandardScaler

from turnout.optimize import pruning


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str] | None = None) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names, feeds)


def test_the_example_mlp_loses_half_its_hidden_units_and_still_classifies(example_repo: Path) -> None:
    model = onnx.load(str(example_repo / "cancer_risk" / "2" / "model.onnx"))  # 30 -> 32 (relu) -> 1
    layers = pruning.hidden_layers(model)
    assert len(layers) == 1 and layers[0].activation == "next_activations"
    cancer = load_breast_cancer()
    rows = StandardScaler().fit_transform(cancer.data).astype(np.float32)  # as the model takes them
    probe, names = pruning.with_activations(model)
    (seen,) = run(probe, {"input": rows}, names)
    pruned, change = pruning.prune_layer(model, "next_activations", 0.5, seen)
    assert change == ("next_activations", 32, 16)
    weights = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    assert weights["coefficient"].shape == (30, 16) and weights["coefficient1"].shape == (16, 1)
    before, after = run(model, {"input": rows}, ["label"])[0], run(pruned, {"input": rows}, ["label"])[0]
    assert (before == after).mean() > 0.9  # half the units gone, the next layer refitted: most answers the same
    weights_only, _ = pruning.prune(model, 0.5)  # no data: by weights, no refit

    def error(pruned: onnx.ModelProto) -> float:
        return float(np.square(run(pruned, {"input": rows}, ["probabilities"])[0] - probabilities).mean())

    probabilities = run(model, {"input": rows}, ["probabilities"])[0]
    assert error(pruned) < error(weights_only)  # the refit gives the next layer back more of what it had


def gemm_network(transposed: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((8, 6)).astype(np.float32)
    w1[:, [1, 4]] *= 100  # two units that matter most
    w2 = rng.standard_normal((6, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1 if transposed else 0),
        helper.make_node("Tanh", ["h"], ["a"]),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["y"]),
    ]
    inits = [numpy_helper.from_array(w1.T.copy() if transposed else w1, "w1"),
             numpy_helper.from_array(np.zeros(6, np.float32), "b1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.zeros(3, np.float32), "b2")]  # fmt: skip
    graph = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_gemm_layers_are_pruned_either_way_round_keeping_the_units_that_matter() -> None:
    for transposed in (False, True):
        pruned, changes = pruning.prune(gemm_network(transposed), 2 / 3)
        assert changes == [("a", 6, 2)]
        w1 = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}["w1"]
        assert w1.shape == ((2, 8) if transposed else (8, 2))
        kept = w1.T if transposed else w1
        assert np.abs(kept).mean() > 50  # the two scaled units are the ones left
        (y,) = run(pruned, {"x": np.ones((4, 8), np.float32)})
        assert y.shape == (4, 3)


def test_a_network_without_a_hidden_layer_has_nothing_to_prune(example_repo: Path) -> None:
    assert pruning.hidden_layers(onnx.load(str(example_repo / "diabetes" / "1" / "model.onnx"))) == []
