"""The tokenizer step: text to the token ids a transformer takes, with a
Hugging Face ``tokenizers`` file (data, not code) from the version directory.

Rows are padded to the longest in the request rounded up to
``pad_to_multiple_of``: requests of similar length then have equal shapes and
join one batch at the model, which batches only equal trailing shapes.
Tokenizing runs on the event loop: a short sentence takes tens of
microseconds, less than a hand-off to a thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from turnout.errors import InvalidRequest
from turnout.model.signature import TensorSpec
from turnout.model.tensors import Outputs
from turnout.pipeline.definition import TokenizeStep
from turnout.pipeline.graph import GraphError
from turnout.pipeline.node import Accepts, Wiring

OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TokenizeNode:
    kind = "tokenize"
    calls: tuple[str, ...] = ()

    def __init__(self, step: TokenizeStep, version_dir: Path) -> None:
        self.name = step.name
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise GraphError(f"step '{step.name}': needs the tokenizers library: pip install 'turnout[text]'") from None
        path = version_dir / step.tokenizer
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises its own Exception subclass for a bad file
            raise GraphError(f"step '{step.name}': {path.name} cannot be read as a tokenizer: {exc}") from None
        tokenizer.enable_truncation(step.max_length)
        tokenizer.enable_padding(pad_to_multiple_of=step.pad_to_multiple_of)
        self._tokenizer = tokenizer
        self.wiring = Wiring(
            {"text": step.text},
            {"text": Accepts(frozenset({"BYTES"}), (-1,))},
            {name: TensorSpec(name, "INT64", (-1, -1)) for name in OUTPUTS},
        )

    async def run(
        self, feed: Mapping[str, np.ndarray[Any, Any]], wanted: frozenset[str], parameters: Mapping[str, Any]
    ) -> Outputs:
        texts = []
        for row, value in enumerate(feed["text"].tolist()):
            try:
                texts.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
            except UnicodeDecodeError:
                raise InvalidRequest(f"step '{self.name}': row {row} is not UTF-8 text") from None
        encodings = self._tokenizer.encode_batch(texts)
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
