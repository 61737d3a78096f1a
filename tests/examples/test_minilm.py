"""The MiniLM graph the examples build by hand (examples/minilm_onnx.py, numpy
and onnx only) against the same weights run by Hugging Face transformers'
own BERT in PyTorch, pooled and normalised as sentence-transformers does."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from minilm_onnx import build, model_dir  # examples/ (tests/conftest.py puts it on the path)
from tokenizers import Tokenizer

TEXTS = [
    "A man is eating food.",
    "The new movie is awesome, and the cinema was full on a Tuesday night.",
    "ok",
    "Ünïcödé and emoji 🚀 go through the same tokenizer.",
]


def test_the_hand_built_graph_matches_transformers(tmp_path: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch  # the dev extra's (make test installs it), as are transformers
    from transformers import AutoModel

    source = model_dir()
    build(source, tmp_path / "model.onnx")
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    tokenizer.enable_padding(pad_to_multiple_of=16)
    encoded = tokenizer.encode_batch(TEXTS)
    feed = {
        "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
    }
    ours = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    model = AutoModel.from_pretrained(str(source)).eval()
    with torch.no_grad():
        hidden = model(**{k: torch.tensor(v) for k, v in feed.items()}).last_hidden_state
        mask = torch.tensor(feed["attention_mask"]).unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        theirs = torch.nn.functional.normalize(pooled, dim=1).numpy()
    assert ours.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
