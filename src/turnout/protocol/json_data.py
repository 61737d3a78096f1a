"""JSON ``data`` arrays <-> numpy, with the strictness the V2 protocol implies:
the values must fit the declared datatype, and there must be exactly as many
as the shape says (flat or nested, row-major).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import simdjson

from turnout.errors import InvalidRequest
from turnout.protocol.datatypes import BYTES, check_integer_range, to_numpy
from turnout.protocol.raw import as_bytes
from turnout.protocol.shapes import element_count, format_shape

_MAX_DIMENSIONS = 64
# numpy kinds a JSON array of each datatype family may parse to
_ACCEPTED_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}


# simdjson's buffer types for each numpy kind: double, int64, uint64
_BUFFER_TYPES = {"f": "d", "i": "i", "u": "u"}


def decode(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray[Any, Any]:
    """``data`` as json.loads gives it, or a simdjson Array still unconverted."""
    count = element_count(shape)
    if isinstance(data, simdjson.Array):
        fast = _from_buffer(data, datatype, count, name)
        if fast is not None:
            return fast.reshape(shape)
        data = data.as_list()  # anything unusual takes the exact path below, for its precise error
    array = _decode_bytes(data, name) if datatype == BYTES else _decode_numeric(data, datatype, name)
    if array.size != count:
        raise InvalidRequest(
            f"input '{name}': shape {format_shape(shape)} has {count} elements but data has {array.size}"
        )
    return array.reshape(shape)


def _from_buffer(data: Any, datatype: str, count: int, name: str) -> np.ndarray[Any, Any] | None:
    """A flat array of numbers, read by simdjson into one buffer: no Python
    number objects. None when the array is not that (nested, booleans,
    strings, integers for a float type's range...): the caller then decodes
    it the exact way. Nesting is recognised by the first and last elements;
    an array that nests only in between, with as many numbers as elements,
    is read flat."""
    dtype = to_numpy(datatype)
    buffer_type = _BUFFER_TYPES.get(dtype.kind)
    if buffer_type is None or len(data) != count or count == 0:
        return None
    if isinstance(data[0], simdjson.Array) or isinstance(data[count - 1], simdjson.Array):
        return None
    try:
        values = np.frombuffer(data.as_buffer(of_type=buffer_type), dtype=_WIDE[buffer_type])
    except (TypeError, ValueError):  # a value of another type or range
        return None
    if values.size != count:
        return None
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            cast = values.astype(dtype)
        if not np.isfinite(cast).all():
            raise InvalidRequest(f"input '{name}': a value is out of range for {datatype}")
        return cast
    if values.dtype != dtype:
        check_integer_range(values, datatype, name)
    return values.astype(dtype)


_WIDE = {"d": np.dtype(np.float64), "i": np.dtype(np.int64), "u": np.dtype(np.uint64)}


def _decode_numeric(data: Any, datatype: str, name: str) -> np.ndarray[Any, Any]:
    dtype = to_numpy(datatype)
    try:
        parsed = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise InvalidRequest(f"input '{name}': data is not a regular array ({exc})") from None
    if parsed.size == 0:
        return parsed.astype(dtype)
    if dtype.kind in "iu" and parsed.dtype.kind == "f":
        # numpy parses integers beyond int64 (UINT64's upper half) as floats
        parsed = _exact_integers(data, parsed, name)
    if parsed.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
        if dtype.kind in "iu" and parsed.dtype.kind == "f" and _huge_integers(parsed):
            raise InvalidRequest(f"input '{name}': a value is out of range for {datatype}")
        raise InvalidRequest(f"input '{name}': data holds {_describe(parsed)}, which is not {datatype}")
    if dtype.kind != "b" and _contains_bool(data):  # numpy reads true as 1 beside numbers
        raise InvalidRequest(f"input '{name}': data holds booleans, which are not {datatype}")
    if dtype.kind in "iu" and parsed.dtype != dtype:
        check_integer_range(parsed, datatype, name)
    if dtype.kind == "f":
        # JSON numbers are finite, so a non-finite result means the cast overflowed
        with np.errstate(over="ignore"):
            cast = parsed.astype(dtype, copy=False)
        if not np.isfinite(cast).all():
            raise InvalidRequest(f"input '{name}': a value is out of range for {datatype}")
        return cast
    return parsed.astype(dtype, copy=False)


def _huge_integers(parsed: np.ndarray[Any, Any]) -> bool:
    """Whether floats are whole numbers beyond 64 bits: JSON integers the parser could not hold."""
    return bool(np.all(parsed == np.floor(parsed)) and np.any(np.abs(parsed) >= 2.0**63))


def _exact_integers(data: Any, parsed: np.ndarray[Any, Any], name: str) -> np.ndarray[Any, Any]:
    """Re-read ``data`` exactly when every value is a Python int; else keep ``parsed``."""
    values = np.array(data, dtype=object).reshape(-1)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return parsed
    try:
        return np.array(values.tolist(), dtype=np.uint64).reshape(parsed.shape)
    except OverflowError:
        raise InvalidRequest(f"input '{name}': a value is out of range for 64-bit integers") from None


def _describe(parsed: np.ndarray[Any, Any]) -> str:
    return {
        "b": "booleans",
        "i": "integers",
        "u": "integers",
        "f": "floating-point numbers",
        "U": "strings",
        "O": "mixed values",
    }.get(parsed.dtype.kind, str(parsed.dtype))


def _contains_bool(data: Any) -> bool:
    """Whether a (regular, already parsed) nest of lists holds a JSON boolean."""
    stack = [data]
    while stack:
        item = stack.pop()
        if type(item) is list:
            if item and type(item[0]) is list:
                stack.extend(item)
            elif bool in set(map(type, item)):
                return True
        elif type(item) is bool:
            return True
    return False


def _decode_bytes(data: Any, name: str) -> np.ndarray[Any, Any]:
    flat = _flatten_strings(data, name)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array


def _flatten_strings(data: Any, name: str) -> list[bytes]:
    """Row-major strings of a nest of lists, iteratively: hostile nesting
    cannot exhaust the stack, and is cut at numpy's own 64 dimensions."""
    if isinstance(data, str):
        return [data.encode()]
    if not isinstance(data, list):
        raise InvalidRequest(f"input '{name}': BYTES data must be strings, got {type(data).__name__}")
    flat: list[bytes] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, str):
                flat.append(item.encode())
            elif isinstance(item, list):
                if len(stack) >= _MAX_DIMENSIONS:
                    raise InvalidRequest(f"input '{name}': data is nested deeper than {_MAX_DIMENSIONS} levels")
                stack.append(iter(item))
                break
            else:
                raise InvalidRequest(f"input '{name}': BYTES data must be strings, got {type(item).__name__}")
        else:
            stack.pop()
    return flat


def encode(array: np.ndarray[Any, Any], datatype: str, name: str) -> Any:
    """Array -> flat row-major values for a JSON ``data`` field.

    Numeric arrays are returned as contiguous numpy arrays for orjson's native
    numpy serializer; BYTES become strings, which must be UTF-8.
    """
    flat = array.reshape(-1)
    if datatype != BYTES:
        values = np.ascontiguousarray(flat, dtype=to_numpy(datatype))
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            # orjson would write null; Triton writes NaN/Infinity, which Python's
            # json and Triton's clients read back
            return orjson.Fragment(json.dumps(values.tolist(), separators=(",", ":")))
        return values
    try:
        return [as_bytes(item).decode() for item in flat]
    except UnicodeDecodeError:
        raise InvalidRequest(f"output '{name}' holds bytes that are not UTF-8; request it with binary_data") from None
