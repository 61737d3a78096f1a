"""Batch keys, and joining requests along axis 0 and cutting the outputs back."""

from __future__ import annotations

import numpy as np
import pytest

from turnout.model.runtimes.merge import batch_key, concatenate, rows, split


def test_batch_key_ignores_the_row_count() -> None:
    one = {"x": np.zeros((1, 3), np.float32), "m": np.zeros((1,), np.int64)}
    many = {"x": np.ones((7, 3), np.float32), "m": np.ones((7,), np.int64)}
    assert batch_key(one) == batch_key(many)
    assert hash(batch_key(one)) == hash(batch_key(many))


@pytest.mark.parametrize(
    "other",
    [
        {"x": np.zeros((2, 3), np.float64)},  # dtype
        {"x": np.zeros((2, 4), np.float32)},  # a non-batch dimension
        {"x": np.zeros((2, 3, 1), np.float32)},  # the rank
        {"z": np.zeros((2, 3), np.float32)},  # the input's name
        {"x": np.zeros((2, 3), np.float32), "m": np.zeros((2,), np.int64)},  # an extra input
    ],
    ids=["dtype", "dim", "rank", "name", "extra-input"],
)
def test_batch_key_differs_on_anything_but_rows(other: dict[str, np.ndarray]) -> None:
    assert batch_key({"x": np.zeros((2, 3), np.float32)}) != batch_key(other)


def test_batch_key_tells_byte_orders_apart() -> None:
    little = np.zeros((1, 2), np.dtype("<f4"))
    big = np.zeros((1, 2), np.dtype(">f4"))
    assert batch_key({"x": little}) != batch_key({"x": big})


def test_rows_is_the_first_dimension() -> None:
    assert rows({"x": np.zeros((5, 2)), "m": np.zeros((5,))}) == 5


def test_concatenate_then_split_gives_each_request_its_own_rows() -> None:
    sizes = [2, 1, 3]
    requests = [
        {"x": np.arange(n * 3, dtype=np.float32).reshape(n, 3) + 100 * i, "m": np.full((n,), i, np.int64)}
        for i, n in enumerate(sizes)
    ]
    joined = concatenate(requests)
    assert joined["x"].shape == (6, 3)
    assert joined["x"].dtype == np.float32
    np.testing.assert_array_equal(joined["m"], [0, 0, 1, 2, 2, 2])

    # a row-wise "model": outputs with one row per input row, of any inner shape
    outputs = {"y": joined["x"] * 2, "s": joined["x"].sum(axis=1, keepdims=True), "m": joined["m"]}
    parts = split(outputs, sizes)
    assert len(parts) == 3
    for request, part in zip(requests, parts, strict=True):
        assert set(part) == {"y", "s", "m"}
        np.testing.assert_array_equal(part["y"], request["x"] * 2)
        np.testing.assert_array_equal(part["s"], request["x"].sum(axis=1, keepdims=True))
        np.testing.assert_array_equal(part["m"], request["m"])


def test_a_single_request_passes_through_unchanged() -> None:
    request = {"x": np.arange(6.0).reshape(2, 3)}
    joined = concatenate([request])
    assert joined.keys() == request.keys()
    assert joined["x"] is request["x"]
    scalar = np.float64(3.0)
    # alone in its batch, a request may get outputs without a batch axis
    (part,) = split({"t": np.asarray(scalar)}, [2])
    assert part["t"] == scalar


@pytest.mark.parametrize(
    "output",
    [np.asarray(1.0), np.zeros((4, 2)), np.zeros((2,)), np.zeros((0,))],
    ids=["scalar", "too-many-rows", "too-few-rows", "empty"],
)
def test_split_refuses_outputs_without_one_row_per_input_row(output: np.ndarray) -> None:
    outputs = {"good": np.zeros((3, 2)), "bad": output}
    with pytest.raises(ValueError, match="'bad'"):
        split(outputs, [1, 2])
