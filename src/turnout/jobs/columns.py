"""Columns to tensors and tensors to columns, on Arrow tables: no I/O.

An input of shape ``[-1]`` or ``[-1, 1]`` takes one scalar column; ``[-1, F]``
takes one list column of F values per row or F scalar columns. An output of
shape ``[-1]`` or ``[-1, 1]`` becomes one column named after it, ``[-1, K]``
becomes ``NAME_0 .. NAME_{K-1}``.

A row that cannot feed the model (a missing value, text that is not a number,
a list of the wrong length) is a *bad row*; a column that cannot feed it at
all is a :class:`MappingError`, raised before any row runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from turnout.model.signature import Signature, TensorSpec
from turnout.protocol.datatypes import to_numpy

#: how many bad rows a report names (the count covers them all)
NAMED_BAD_ROWS = 10


class BatchError(Exception):
    """A batch job cannot go on; the message says why and what to do."""


class BadRows(BatchError):
    """Rows that cannot feed the model, with ``--on-error fail``."""


class MappingError(BatchError):
    """No way to feed an input from the file's columns, or to name an output."""


@dataclass(frozen=True, slots=True)
class InputColumns:
    """Where one input's values come from."""

    spec: TensorSpec
    columns: tuple[str, ...]
    width: int  # values per row: 0 for a [-1] input (one value, no feature axis)
    packed: bool  # one list column holds the row's `width` values
    source: str  # how the columns were chosen, for the log: "--map", "by name", "profile.json"


@dataclass(frozen=True, slots=True)
class OutputColumns:
    spec: TensorSpec
    columns: tuple[str, ...]  # one per value of the output's row


@dataclass(frozen=True, slots=True)
class BadRow:
    index: int  # 0-based, within the table it was found in
    reason: str


@dataclass(frozen=True, slots=True)
class Gathered:
    """One table made ready for the model."""

    tensors: dict[str, np.ndarray[Any, Any]]  # the good rows only
    table: pa.Table  # the good rows; text columns that fed an input parsed to numbers
    bad: tuple[BadRow, ...]  # the first NAMED_BAD_ROWS bad rows, in row order
    bad_count: int


def _is_list(type_: pa.DataType) -> bool:
    return bool(pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_))


def map_inputs(
    signature: Signature,
    schema: pa.Schema,
    explicit: Mapping[str, Sequence[str]],
    features: Mapping[str, Sequence[str]],
) -> tuple[InputColumns, ...]:
    """The columns of ``schema`` that feed each input: ``explicit`` (``--map``)
    first, then a column named like the input, then the feature names of the
    version's profile (``features``: input -> names)."""
    unknown = sorted(set(explicit) - set(signature.input_names))
    if unknown:
        raise MappingError(
            f"--map names {unknown}, which the model does not take (inputs: {list(signature.input_names)})"
        )
    found = list(schema.names)
    repeated = sorted({name for name in found if found.count(name) > 1})
    if repeated:
        raise MappingError(f"the input has more than one column named {repeated[0]!r}: column names must be unique")
    return tuple(
        _map_input(spec, schema, found, explicit.get(spec.name), features.get(spec.name)) for spec in signature.inputs
    )


def _map_input(
    spec: TensorSpec,
    schema: pa.Schema,
    found: list[str],
    explicit: Sequence[str] | None,
    features: Sequence[str] | None,
) -> InputColumns:
    width = _width(spec)
    if explicit is not None:
        missing = [c for c in explicit if c not in found]
        if missing:
            raise MappingError(f"--map {spec.name}=...: no column {missing[0]!r} in the input; columns found: {found}")
        return _fit(spec, width, tuple(explicit), schema, "--map")
    if spec.name in found:
        return _fit(spec, width, (spec.name,), schema, "by name")
    if features and width != 0 and all(f in found for f in features):
        return _fit(spec, width, tuple(features), schema, "profile.json")
    looked = f"a column named {spec.name!r}"
    if features and width != 0:
        absent = next(f for f in features if f not in found)
        looked += f", or the {len(features)} feature columns the version's profile.json names (no {absent!r})"
    raise MappingError(
        f"input {spec.describe()}: found no column to feed it: looked for {looked}; columns found: {found}; "
        f"name them with --map {spec.name}=COLUMN[,COLUMN...]"
    )


def _width(spec: TensorSpec) -> int:
    if not spec.shape or spec.shape[0] != -1:
        raise MappingError(f"input {spec.describe()}: no variable first dimension, so rows cannot be batched along it")
    if len(spec.shape) == 1:
        return 0
    if len(spec.shape) == 2:
        return spec.shape[1]  # -1: as many as the mapping gives
    raise MappingError(f"input {spec.describe()}: only [-1], [-1, 1] and [-1, F] inputs are fed from columns")


def _fit(spec: TensorSpec, width: int, columns: tuple[str, ...], schema: pa.Schema, source: str) -> InputColumns:
    if len(columns) == 1 and _is_list(schema.field(columns[0]).type):
        if width == 0:
            raise MappingError(
                f"input {spec.describe()}: column {columns[0]!r} holds lists, the input one value per row"
            )
        if width == -1:
            raise MappingError(f"input {spec.describe()}: a list column needs a fixed width; map F scalar columns")
        return InputColumns(spec, columns, width, True, source)
    lists = [c for c in columns if _is_list(schema.field(c).type)]
    if lists:
        raise MappingError(f"input {spec.describe()}: column {lists[0]!r} holds lists; map one list column or scalars")
    if width == 0 and len(columns) != 1:
        raise MappingError(f"input {spec.describe()}: takes one value per row, mapped from {len(columns)} columns")
    if width > 0 and len(columns) != width:
        raise MappingError(
            f"input {spec.describe()}: takes {width} values per row, mapped from {len(columns)} column(s) "
            f"{list(columns)}"
        )
    return InputColumns(spec, columns, width if width != -1 else len(columns), False, source)


def map_outputs(
    signature: Signature, selected: Sequence[str] | None, input_columns: Sequence[str]
) -> tuple[OutputColumns, ...]:
    """The prediction columns: every output, or the ``selected`` ones in that order."""
    names = list(signature.output_names)
    unknown = [n for n in selected or () if n not in names]
    if unknown:
        raise MappingError(f"--outputs: the model has no output {unknown[0]!r} (outputs: {names})")
    plans = []
    for name in selected or names:
        spec = signature.output(name)
        assert spec is not None
        if not spec.shape or spec.shape[0] != -1 or len(spec.shape) > 2 or (len(spec.shape) == 2 and spec.shape[1] < 1):
            raise MappingError(
                f"output {spec.describe()}: only [-1], [-1, 1] and [-1, K] outputs become columns; "
                f"leave it out with --outputs"
            )
        width = 1 if len(spec.shape) == 1 else spec.shape[1]
        plans.append(OutputColumns(spec, (name,) if width == 1 else tuple(f"{name}_{k}" for k in range(width))))
    taken = [c for plan in plans for c in plan.columns if c in input_columns]
    if taken:
        raise MappingError(
            f"prediction column {taken[0]!r} would replace the input column of that name; rename the column "
            "or leave that output out with --outputs"
        )
    return tuple(plans)


def gather(table: pa.Table, inputs: Sequence[InputColumns]) -> Gathered:
    """The model's tensors from ``table``, leaving out (and naming) bad rows."""
    rows = table.num_rows
    bad = np.zeros(rows, dtype=np.bool_)
    reasons: dict[int, str] = {}
    parsed: dict[str, pa.Array] = {}  # column -> its values as numbers, null where bad
    for plan in inputs:
        for name in plan.columns:
            if name in parsed:
                continue
            values, bad_here, why = _numbers(name, table.column(name), plan)
            parsed[name] = values
            _note(bad, reasons, bad_here, why)
    keep = ~bad
    good = table if not bad.any() else table.filter(pa.array(keep))
    for name, values in parsed.items():
        if values.type != table.schema.field(name).type:  # text parsed to numbers: keep the numbers
            column = values if not bad.any() else values.filter(pa.array(keep))
            good = good.set_column(good.schema.get_field_index(name), name, column)
    tensors = {plan.spec.name: _tensor(plan, parsed, keep, bool(bad.any())) for plan in inputs}
    named = tuple(BadRow(i, reasons[i]) for i in sorted(reasons)[:NAMED_BAD_ROWS])
    return Gathered(tensors, good, named, int(bad.sum()))


def _note(bad: np.ndarray[Any, Any], reasons: dict[int, str], bad_here: np.ndarray[Any, Any], why: list[str]) -> None:
    indices = np.flatnonzero(bad_here)
    for i, reason in zip(indices[: NAMED_BAD_ROWS * 2], why, strict=False):
        reasons.setdefault(int(i), reason)
    bad |= bad_here


def _numbers(
    name: str, column: pa.ChunkedArray, plan: InputColumns
) -> tuple[pa.Array, np.ndarray[Any, Any], list[str]]:
    """The column's values as numbers (lists of them for a packed input), which rows
    are bad, and why (for the first of them)."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if plan.packed:
        return _packed(name, array, plan)
    dtype = to_numpy(plan.spec.datatype)
    type_ = array.type
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return _parse(name, array, _natural(dtype))
    if pa.types.is_null(type_):
        return array, np.ones(len(array), dtype=np.bool_), [f"column {name!r}: missing value"] * NAMED_BAD_ROWS
    numeric = pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_boolean(type_)
    if not numeric and not (pa.types.is_decimal(type_) and dtype.kind == "f"):
        raise MappingError(f"column {name!r} holds {type_}, not numbers, so it cannot feed {plan.spec.describe()}")
    missing = _missing(array)
    return array, missing, [f"column {name!r}: missing value"] * min(int(missing.sum()), NAMED_BAD_ROWS * 2)


def _missing(array: pa.Array) -> np.ndarray[Any, Any]:
    if array.null_count == 0:
        return np.zeros(len(array), dtype=np.bool_)
    return np.asarray(array.is_null().to_numpy(zero_copy_only=False))


def _natural(dtype: np.dtype[Any]) -> pa.DataType:
    """What text is parsed to (and written back as): the widest of the input's kind."""
    return {"f": pa.float64(), "i": pa.int64(), "u": pa.uint64(), "b": pa.bool_()}.get(dtype.kind, pa.float64())


def _parse(name: str, array: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray[Any, Any], list[str]]:
    """Text to numbers: one vectorised cast, or value by value when it fails
    (only then, to find the rows that made it fail)."""
    try:
        values = pc.cast(array, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    else:
        missing = _missing(values)
        return values, missing, [f"column {name!r}: missing value"] * min(int(missing.sum()), NAMED_BAD_ROWS * 2)
    out: list[Any] = []
    why: list[str] = []
    for text in array.to_pylist():
        try:
            out.append(pc.cast(pa.array([text], pa.string()), target)[0].as_py() if text is not None else None)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            out.append(None)
        if out[-1] is None and len(why) < NAMED_BAD_ROWS * 2:
            what = "missing value" if text is None or text == "" else f"{text!r} is not a {target} value"
            why.append(f"column {name!r}: {what}")
    values = pa.array(out, target)
    return values, _missing(values), why


def _packed(name: str, array: pa.Array, plan: InputColumns) -> tuple[pa.Array, np.ndarray[Any, Any], list[str]]:
    lengths = pc.list_value_length(array).fill_null(-1).to_numpy(zero_copy_only=False)
    bad = lengths != plan.width
    values = pc.list_flatten(array)
    if values.null_count:
        holes = pc.list_parent_indices(array).filter(values.is_null()).to_numpy(zero_copy_only=False)
        bad[holes] = True
    why = []
    for i in np.flatnonzero(bad)[: NAMED_BAD_ROWS * 2]:
        n = int(lengths[i])
        what = "missing value" if n < 0 else "a missing value in the list" if n == plan.width else f"{n} values"
        why.append(f"column {name!r}: {what}" + ("" if n < 0 or n == plan.width else f", not {plan.width}"))
    return array, bad, why


def _tensor(
    plan: InputColumns, parsed: Mapping[str, pa.Array], keep: np.ndarray[Any, Any], any_bad: bool
) -> np.ndarray[Any, Any]:
    dtype = to_numpy(plan.spec.datatype)
    rows = int(keep.sum())
    if plan.packed:
        array = parsed[plan.columns[0]]
        if any_bad:
            array = array.filter(pa.array(keep))
        flat = pc.list_flatten(array).to_numpy(zero_copy_only=False)
        return np.ascontiguousarray(flat.astype(dtype, copy=False).reshape(rows, plan.width))
    if plan.width == 0:
        return _values(parsed[plan.columns[0]], keep, any_bad).astype(dtype, copy=False)
    out = np.empty((rows, len(plan.columns)), dtype=dtype)
    for j, name in enumerate(plan.columns):
        out[:, j] = _values(parsed[name], keep, any_bad)  # cast while copying: no temporary per column
    return out


def _values(array: pa.Array, keep: np.ndarray[Any, Any], any_bad: bool) -> np.ndarray[Any, Any]:
    if pa.types.is_decimal(array.type):
        array = pc.cast(array, pa.float64())
    values: np.ndarray[Any, Any] = array.to_numpy(zero_copy_only=False)  # zero-copy when there are no nulls
    return values[keep] if any_bad else values


def predictions(
    results: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[OutputColumns], rows: int
) -> list[tuple[str, pa.Array]]:
    """The prediction columns from one ``predict`` result of ``rows`` rows."""
    columns: list[tuple[str, pa.Array]] = []
    for plan in outputs:
        values = np.asarray(results[plan.spec.name])
        if values.shape[:1] != (rows,) or values.size != rows * len(plan.columns):
            raise BatchError(
                f"output {plan.spec.describe()}: the model returned shape {list(values.shape)} for {rows} rows"
            )
        if len(plan.columns) == 1:
            columns.append((plan.columns[0], pa.array(values.reshape(rows))))
        else:
            matrix = values.reshape(rows, len(plan.columns))
            columns.extend((name, pa.array(matrix[:, k])) for k, name in enumerate(plan.columns))
    return columns


def empty_predictions(outputs: Sequence[OutputColumns]) -> list[tuple[str, pa.Array]]:
    """Prediction columns with no rows (a chunk whose rows were all bad)."""
    columns: list[tuple[str, pa.Array]] = []
    for plan in outputs:
        dtype = to_numpy(plan.spec.datatype)
        type_ = pa.string() if dtype.kind == "O" else pa.from_numpy_dtype(dtype)  # ORT returns text as str
        columns.extend((name, pa.array([], type_)) for name in plan.columns)
    return columns


def with_predictions(table: pa.Table, columns: Sequence[tuple[str, pa.Array]]) -> pa.Table:
    for name, values in columns:
        table = table.append_column(name, values)
    return table
