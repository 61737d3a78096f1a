"""Rows from scikit-learn's breast-cancer data as files, and the answers ONNX
Runtime gives for them when run directly (what every engine must match)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest
from sklearn.datasets import load_breast_cancer


def cancer_table(copies: int = 1) -> pa.Table:
    """The 569 rows (``copies`` times over), one column per feature, named as
    scikit-learn names them (and so as the versions' profile.json does), and an id."""
    data = load_breast_cancer()
    rows = np.tile(data.data, (copies, 1))
    columns: dict[str, Any] = {name: rows[:, i] for i, name in enumerate(data.feature_names)}
    columns["id"] = np.arange(len(rows))
    return pa.table(columns)


def features(table: pa.Table) -> np.ndarray[Any, Any]:
    names = list(load_breast_cancer().feature_names)
    return np.column_stack([table.column(n).to_numpy() for n in names]).astype(np.float32)


def reference(repo: Path, version: int, rows: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
    options = ort.SessionOptions()
    # as the model.toml says: with more threads a tree ensemble sums its trees in another order
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(repo / "breast_cancer" / str(version) / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    label, probabilities = session.run(["label", "probabilities"], {"input": rows})
    return {"label": label, "probabilities": probabilities}


def assert_predictions(table: pa.Table, expected: dict[str, np.ndarray[Any, Any]]) -> None:
    np.testing.assert_array_equal(table.column("label").to_numpy(), expected["label"])
    for k in range(2):
        values = table.column(f"probabilities_{k}").to_numpy().astype(np.float32)  # text files hold float32 text
        np.testing.assert_array_equal(values, expected["probabilities"][:, k])


@pytest.fixture(scope="session")
def cancer() -> pa.Table:
    return cancer_table()
