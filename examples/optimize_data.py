"""Inputs for `turnout optimize` on the example models: calibration and
validation sets built from data that installed packages ship (no download).

    .venv/bin/python examples/optimize_data.py OUT_DIR

Writes:
- minilm_calibration.npz, minilm_validation.npz: English sentences from
  Python's own help topics (pydoc_data), tokenized for all-MiniLM-L6-v2
  (64 tokens at most, padded); 200 to calibrate, 1,000 others held out;
- cancer_train.npy, cancer_test.npz: scikit-learn's breast-cancer data,
  standardised as the cancer_risk model takes it, split as
  examples/build_models.py split it to train (the test part with labels);
  breast_cancer_test.npz: the same test rows as they come (breast_cancer
  standardises them itself);
- diabetes_test.npz: the diabetes regression's held-out rows and targets.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # minilm_onnx, beside this file

from minilm_onnx import model_dir as minilm_dir  # noqa: E402

TOKENS = 64
CALIBRATION, VALIDATION = 200, 1000


def sentences() -> list[str]:
    """Distinct sentences of 4 to 40 words from Python's help topics, in a fixed shuffled order."""
    from pydoc_data.topics import topics

    found: set[str] = set()
    for text in topics.values():
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
            if 4 <= len(sentence.split()) <= 40:
                found.add(sentence)
    ordered = sorted(found)
    np.random.default_rng(0).shuffle(ordered)  # type: ignore[arg-type]
    return ordered


def tokenized(texts: list[str]) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(TOKENS)
    tokenizer.enable_padding(length=TOKENS)
    encoded = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def write(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    texts = sentences()
    np.savez(out / "minilm_calibration.npz", **tokenized(texts[:CALIBRATION]))
    np.savez(out / "minilm_validation.npz", **tokenized(texts[CALIBRATION : CALIBRATION + VALIDATION]))

    cancer = load_breast_cancer()
    x_train, x_test, _, y_test = train_test_split(
        cancer.data.astype(np.float32), cancer.target, test_size=0.25, random_state=0, stratify=cancer.target
    )
    scaler = StandardScaler().fit(x_train)
    np.save(out / "cancer_train.npy", scaler.transform(x_train).astype(np.float32))
    np.savez(out / "cancer_test.npz", input=scaler.transform(x_test).astype(np.float32), label=y_test)
    np.savez(out / "breast_cancer_test.npz", input=x_test, label=y_test)

    diabetes = load_diabetes()
    _, x_test, _, y_test = train_test_split(
        diabetes.data.astype(np.float32), diabetes.target, test_size=0.25, random_state=0
    )
    np.savez(out / "diabetes_test.npz", input=x_test, label=y_test.astype(np.float32))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    write(Path(sys.argv[1]))
