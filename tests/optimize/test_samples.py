"""Reading calibration and validation sets: each format, and what is wrong with a file named precisely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from turnout.model.signature import Signature, TensorSpec
from turnout.optimize import OptimizeError
from turnout.optimize.samples import read

ONE = Signature((TensorSpec("x", "FP32", (-1, 3)),), (TensorSpec("y", "FP32", (-1, 1)),))
TWO = Signature((TensorSpec("ids", "INT64", (-1, -1)), TensorSpec("mask", "INT64", (-1, -1))), ())


def test_a_table_gives_the_features_and_the_label_column(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0], "c": [5.0, 6.0], "target": [0, 1]})
    for path in (tmp_path / "rows.csv", tmp_path / "rows.parquet"):
        frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path)
        found = read(path, ONE, label_column="target")
        assert found.inputs["x"].dtype == np.float32 and found.inputs["x"].tolist() == [[1, 3, 5], [2, 4, 6]]
        assert found.labels is not None and found.labels.tolist() == [0, 1]
    with pytest.raises(OptimizeError, match="no column 'label'"):
        read(tmp_path / "rows.csv", ONE, label_column="label")


def test_arrays_by_name_are_cast_to_the_models_datatypes(tmp_path: Path) -> None:
    np.savez(tmp_path / "tokens.npz", ids=np.ones((4, 7), np.int32), mask=np.ones((4, 7), np.int32))
    found = read(tmp_path / "tokens.npz", TWO)
    assert len(found) == 4 and {a.dtype for a in found.inputs.values()} == {np.dtype(np.int64)}
    assert found.rows(10)["ids"].shape == (10, 7)  # repeated to the batch asked


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"ids": np.ones((4, 7))}, r"inputs \['ids'\]; the model takes \['ids', 'mask'\]"),
        ({"ids": np.ones((4, 7)), "mask": np.ones((3, 7))}, "the same number of rows"),
        ({"ids": np.ones((4, 7, 1)), "mask": np.ones((4, 7, 1))}, "has shape"),
        ({"ids": np.ones((4, 7)), "mask": np.ones((4, 7)), "label": np.ones(3)}, "3 labels for 4 rows"),
    ],
)
def test_what_does_not_fit_the_model_is_named(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(OptimizeError, match=message):
        read(tmp_path / "bad.npz", TWO)


def test_one_array_is_only_for_a_model_with_one_input(tmp_path: Path) -> None:
    np.save(tmp_path / "rows.npy", np.ones((2, 3), np.float32))
    assert read(tmp_path / "rows.npy", ONE).inputs["x"].shape == (2, 3)
    with pytest.raises(OptimizeError, match=r"takes 2 inputs; give them by name in a \.npz"):
        read(tmp_path / "rows.npy", TWO)
    with pytest.raises(OptimizeError, match="no such file"):
        read(tmp_path / "missing.npy", ONE)
    (tmp_path / "rows.txt").write_text("1 2 3")
    with pytest.raises(OptimizeError, match=r"expected \.npy, \.npz"):
        read(tmp_path / "rows.txt", ONE)
