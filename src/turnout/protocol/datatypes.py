"""V2 datatypes and their numpy equivalents.

BYTES tensors are numpy ``object`` arrays holding ``bytes``; every other
datatype maps to a fixed-width numpy dtype in little-endian order, which is the
byte order of the binary extension and of gRPC ``raw_*_contents``.
"""

from __future__ import annotations

from typing import Final

import numpy as np

BYTES: Final = "BYTES"

_TO_NUMPY: Final[dict[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    BYTES: np.dtype(object),
}

_FROM_NUMPY: Final[dict[np.dtype[np.generic], str]] = {
    dtype: name for name, dtype in _TO_NUMPY.items() if name != BYTES
}

DATATYPES: Final = frozenset(_TO_NUMPY)


def is_datatype(name: str) -> bool:
    return name in _TO_NUMPY


def to_numpy(datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype for a V2 datatype; ``KeyError`` for an unknown one."""
    return _TO_NUMPY[datatype]


def from_numpy(dtype: np.dtype[np.generic]) -> str:
    """The V2 datatype of a numpy dtype; strings and objects are BYTES."""
    if dtype.kind in "OSU":
        return BYTES
    found = _FROM_NUMPY.get(dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype)
    if found is None:
        raise TypeError(f"numpy dtype {dtype} has no V2 datatype")
    return found


def element_size(datatype: str) -> int:
    """Bytes per element in the binary form; 0 for BYTES (variable length)."""
    if datatype == BYTES:
        return 0
    return _TO_NUMPY[datatype].itemsize
