"""Tensors as raw little-endian bytes: the payload of Triton's binary extension
and of gRPC ``raw_input_contents`` / ``raw_output_contents``.

BYTES elements are each framed by a 4-byte little-endian length.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from turnout.errors import InvalidRequest
from turnout.protocol.datatypes import BYTES, to_numpy
from turnout.protocol.shapes import element_count, format_shape

_LENGTH = struct.Struct("<I")


def decode(buffer: bytes | memoryview, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray[Any, Any]:
    """Raw bytes of input ``name`` -> array of ``shape``; a size mismatch is the client's error."""
    count = element_count(shape)
    if datatype == BYTES:
        return _decode_bytes(buffer, count, name).reshape(shape)
    dtype = to_numpy(datatype)
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidRequest(
            f"input '{name}': shape {format_shape(shape)} of {datatype} needs {expected} bytes, got {len(buffer)}"
        )
    if datatype == "BOOL" and count and np.frombuffer(buffer, dtype=np.uint8).max() > 1:
        raise InvalidRequest(f"input '{name}': BOOL bytes must be 0 or 1")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _decode_bytes(buffer: bytes | memoryview, count: int, name: str) -> np.ndarray[Any, Any]:
    view = memoryview(buffer)
    items: list[bytes] = []
    offset = 0
    end = len(view)
    while offset < end:
        if offset + 4 > end:
            raise InvalidRequest(f"input '{name}': BYTES element {len(items)} has a truncated length prefix")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise InvalidRequest(
                f"input '{name}': BYTES element {len(items)} declares {length} bytes, only {end - offset} remain"
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise InvalidRequest(f"input '{name}': expected {count} BYTES elements, got {len(items)}")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def encode(array: np.ndarray[Any, Any], datatype: str) -> bytes:
    """Array -> raw bytes in the datatype's wire form."""
    if datatype == BYTES:
        parts: list[bytes] = []
        for item in array.reshape(-1):
            data = as_bytes(item)
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=to_numpy(datatype)).tobytes()


def as_bytes(item: object) -> bytes:
    """One BYTES element as bytes; runtimes may hand back ``str``."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, (bytearray, memoryview, np.bytes_)):
        return bytes(item)
    return str(item).encode()
