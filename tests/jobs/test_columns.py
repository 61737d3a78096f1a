"""Which columns feed which input, what the outputs become, and which rows are bad."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from turnout.jobs.columns import MappingError, gather, map_inputs, map_outputs, predictions
from turnout.model.signature import Signature, TensorSpec

TABULAR = Signature(
    (TensorSpec("input", "FP32", (-1, 3)),),
    (TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 2))),
)
FEATURES = {"input": ("a", "b", "c")}


def schema(**types: pa.DataType) -> pa.Schema:
    return pa.schema(list(types.items()))


def test_a_column_named_like_the_input_feeds_it() -> None:
    (plan,) = map_inputs(TABULAR, schema(input=pa.list_(pa.float64(), 3), a=pa.float64()), {}, FEATURES)
    assert (plan.columns, plan.packed, plan.source) == (("input",), True, "by name")


def test_the_profiles_feature_names_feed_a_wide_input_in_their_order() -> None:
    (plan,) = map_inputs(TABULAR, schema(c=pa.float64(), b=pa.int64(), a=pa.float64()), {}, FEATURES)
    assert (plan.columns, plan.packed, plan.source, plan.width) == (("a", "b", "c"), False, "profile.json", 3)


def test_map_names_the_columns_before_anything_else() -> None:
    found = schema(input=pa.list_(pa.float64()), x=pa.float64(), y=pa.float64(), z=pa.float64())
    (plan,) = map_inputs(TABULAR, found, {"input": ("z", "y", "x")}, FEATURES)
    assert (plan.columns, plan.source) == (("z", "y", "x"), "--map")


def test_a_list_column_can_be_mapped() -> None:
    (plan,) = map_inputs(TABULAR, schema(v=pa.list_(pa.float32())), {"input": ["v"]}, {})
    assert plan.packed and plan.width == 3


def test_a_missing_column_names_the_input_what_was_looked_for_and_the_columns_found() -> None:
    with pytest.raises(MappingError) as caught:
        map_inputs(TABULAR, schema(a=pa.float64(), b=pa.float64(), x=pa.float64()), {}, FEATURES)
    message = str(caught.value)
    assert "input input FP32 [-1, 3]" in message
    assert "a column named 'input'" in message and "(no 'c')" in message
    assert "['a', 'b', 'x']" in message and "--map input=" in message


def test_a_mapping_with_the_wrong_number_of_columns_is_refused() -> None:
    with pytest.raises(MappingError, match="takes 3 values per row, mapped from 2"):
        map_inputs(TABULAR, schema(a=pa.float64(), b=pa.float64()), {"input": ["a", "b"]}, {})


def test_a_mapping_for_an_input_the_model_lacks_is_refused() -> None:
    with pytest.raises(MappingError, match="does not take"):
        map_inputs(TABULAR, schema(a=pa.float64()), {"nope": ["a"]}, {})


def test_a_scalar_column_feeds_a_one_value_input() -> None:
    signature = Signature((TensorSpec("x", "FP32", (-1, 1)),), ())
    (plan,) = map_inputs(signature, schema(x=pa.float64()), {}, {})
    tensors = gather(pa.table({"x": [1.0, 2.0]}), [plan]).tensors
    assert tensors["x"].shape == (2, 1) and tensors["x"].dtype == np.float32


def test_outputs_become_one_column_or_one_per_value() -> None:
    plans = map_outputs(TABULAR, None, ["a"])
    assert [p.columns for p in plans] == [("label",), ("probabilities_0", "probabilities_1")]
    assert [p.columns for p in map_outputs(TABULAR, ["probabilities"], ["a"])] == [
        ("probabilities_0", "probabilities_1")
    ]
    columns = predictions(
        {"label": np.array([1, 0]), "probabilities": np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)}, plans, 2
    )
    assert [(n, c.to_pylist()) for n, c in columns] == [
        ("label", [1, 0]), ("probabilities_0", [0.25, 0.5]), ("probabilities_1", [0.75, 0.5]),
    ]  # fmt: skip


def test_an_output_column_may_not_replace_an_input_column() -> None:
    with pytest.raises(MappingError, match="'probabilities_1' would replace the input column"):
        map_outputs(TABULAR, None, ["a", "probabilities_1"])


def test_an_unknown_output_is_refused() -> None:
    with pytest.raises(MappingError, match="no output 'score'"):
        map_outputs(TABULAR, ["score"], [])


def test_scalar_columns_are_stacked_into_rows() -> None:
    table = pa.table({"a": [1.0, 2.0], "b": pa.array([3, 4]), "c": pa.array([5.5, 6.5], pa.float32())})
    plans = map_inputs(TABULAR, table.schema, {}, FEATURES)
    gathered = gather(table, plans)
    np.testing.assert_array_equal(gathered.tensors["input"], np.array([[1, 3, 5.5], [2, 4, 6.5]], np.float32))
    assert gathered.bad_count == 0 and gathered.table.equals(table)


def test_missing_values_and_text_that_is_not_a_number_are_bad_rows() -> None:
    table = pa.table({"a": ["1", None, "2.5", "x", "4"], "b": [1.0, 2.0, None, 4.0, 5.0], "c": [0.0] * 5})
    gathered = gather(table, map_inputs(TABULAR, table.schema, {}, FEATURES))
    assert gathered.bad_count == 3
    assert [(b.index, b.reason) for b in gathered.bad] == [
        (1, "column 'a': missing value"),
        (2, "column 'b': missing value"),
        (3, "column 'a': 'x' is not a double value"),
    ]
    np.testing.assert_array_equal(gathered.tensors["input"], np.array([[1, 1, 0], [4, 5, 0]], np.float32))
    # the text that fed the model is kept as the numbers it was read as
    assert gathered.table.column("a").to_pylist() == [1.0, 4.0]
    assert gathered.table.column("b").to_pylist() == [1.0, 5.0]


def test_lists_of_the_wrong_length_or_with_holes_are_bad_rows() -> None:
    column = pa.array([[1.0, 2.0, 3.0], [1.0, 2.0], None, [1.0, None, 3.0], [4.0, 5.0, 6.0]], pa.list_(pa.float64()))
    table = pa.table({"input": column})
    gathered = gather(table, map_inputs(TABULAR, table.schema, {}, {}))
    assert [b.index for b in gathered.bad] == [1, 2, 3]
    assert "2 values, not 3" in gathered.bad[0].reason
    np.testing.assert_array_equal(gathered.tensors["input"], np.array([[1, 2, 3], [4, 5, 6]], np.float32))


def test_a_column_that_holds_no_numbers_at_all_is_a_mapping_error() -> None:
    table = pa.table({"a": [{"x": 1}], "b": [1.0], "c": [1.0]})
    with pytest.raises(MappingError, match="column 'a' holds struct"):
        gather(table, map_inputs(TABULAR, table.schema, {}, FEATURES))
