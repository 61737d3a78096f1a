"""JSON ``data`` arrays <-> numpy, with the strictness the V2 protocol implies:
the values must fit the declared datatype, and there must be exactly as many
as the shape says (flat or nested, row-major).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from turnout.errors import InvalidRequest
from turnout.protocol.datatypes import BYTES, to_numpy
from turnout.protocol.raw import as_bytes
from turnout.protocol.shapes import element_count, format_shape

# numpy kinds a JSON array of each datatype family may parse to
_ACCEPTED_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}


def decode(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray[Any, Any]:
    count = element_count(shape)
    array = _decode_bytes(data, name) if datatype == BYTES else _decode_numeric(data, datatype, name)
    if array.size != count:
        raise InvalidRequest(
            f"input '{name}': shape {format_shape(shape)} has {count} elements but data has {array.size}"
        )
    return array.reshape(shape)


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
        raise InvalidRequest(f"input '{name}': data holds {_describe(parsed)}, which is not {datatype}")
    if dtype.kind in "iu" and parsed.dtype != dtype:
        info = np.iinfo(dtype)  # type: ignore[type-var]
        if parsed.min() < info.min or parsed.max() > info.max:
            raise InvalidRequest(f"input '{name}': a value is out of range for {datatype}")
    if dtype.kind == "f":
        # JSON numbers are finite, so a non-finite result means the cast overflowed
        with np.errstate(over="ignore"):
            cast = parsed.astype(dtype, copy=False)
        if not np.isfinite(cast).all():
            raise InvalidRequest(f"input '{name}': a value is out of range for {datatype}")
        return cast
    return parsed.astype(dtype, copy=False)


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


def _decode_bytes(data: Any, name: str) -> np.ndarray[Any, Any]:
    flat: list[bytes] = []
    _flatten_strings(data, flat, name)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array


def _flatten_strings(data: Any, into: list[bytes], name: str) -> None:
    if isinstance(data, str):
        into.append(data.encode())
    elif isinstance(data, list):
        for item in data:
            _flatten_strings(item, into, name)
    else:
        raise InvalidRequest(f"input '{name}': BYTES data must be strings, got {type(data).__name__}")


def encode(array: np.ndarray[Any, Any], datatype: str, name: str) -> Any:
    """Array -> flat row-major values for a JSON ``data`` field.

    Numeric arrays are returned as contiguous numpy arrays for orjson's native
    numpy serializer; BYTES become strings, which must be UTF-8.
    """
    flat = array.reshape(-1)
    if datatype != BYTES:
        return np.ascontiguousarray(flat, dtype=to_numpy(datatype))
    try:
        return [as_bytes(item).decode() for item in flat]
    except UnicodeDecodeError:
        raise InvalidRequest(f"output '{name}' holds bytes that are not UTF-8; request it with binary_data") from None
