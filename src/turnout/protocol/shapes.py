"""Shape arithmetic shared by codecs, validation and batching."""

from __future__ import annotations

import math
from collections.abc import Sequence


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def format_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def matches(shape: Sequence[int], pattern: Sequence[int]) -> bool:
    """Whether a concrete shape fits a signature shape where -1 is any size."""
    if len(shape) != len(pattern):
        return False
    return all(p == -1 or p == d for d, p in zip(shape, pattern, strict=True))
