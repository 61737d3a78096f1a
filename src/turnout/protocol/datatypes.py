"""V2 datatypes and their numpy equivalents.

BYTES tensors are numpy ``object`` arrays holding ``bytes``; every other
datatype maps to a fixed-width numpy dtype in little-endian order, which is the
byte order of the binary extension and of gRPC ``raw_*_contents``.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from turnout.errors import InvalidRequest

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

DATATYPES: Final = frozenset(_TO_NUMPY)


def is_datatype(name: str) -> bool:
    return name in _TO_NUMPY


def check_integer_range(values: np.ndarray[Any, Any], datatype: str, name: str) -> None:
    """Refuse integers that do not fit ``datatype`` (a cast would wrap them silently)."""
    info = np.iinfo(to_numpy(datatype))  # type: ignore[type-var]
    if values.size and (values.min() < info.min or values.max() > info.max):
        raise InvalidRequest(f"input '{name}': a value is out of range for {datatype}")


def to_numpy(datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype for a V2 datatype; ``KeyError`` for an unknown one."""
    return _TO_NUMPY[datatype]
