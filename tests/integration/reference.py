"""Expected outputs, computed by ONNX Runtime in this process on the same files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine


def run(model_file: Path, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def cancer_rows(count: int, start: int = 0) -> np.ndarray[Any, Any]:
    return load_breast_cancer().data[start : start + count].astype(np.float32)


def diabetes_rows(count: int, start: int = 0) -> np.ndarray[Any, Any]:
    return load_diabetes().data[start : start + count].astype(np.float32)


def wine_rows(count: int, start: int = 0) -> np.ndarray[Any, Any]:
    return load_wine().data[start : start + count].astype(np.float32)
