"""Joining requests into one batch along axis 0 and splitting the outputs back.

Pure functions over numpy arrays; the batcher decides *which* requests to join.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from turnout.model.tensors import Tensors


def batch_key(inputs: Tensors) -> Hashable:
    """Requests may share a batch only if everything but their row count agrees."""
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in inputs.items())


def rows(inputs: Tensors) -> int:
    """Rows (batch axis 0) of a request; all its inputs agree, validation made sure."""
    return int(next(iter(inputs.values())).shape[0])


def concatenate(requests: Sequence[Tensors]) -> dict[str, np.ndarray[Any, Any]]:
    if len(requests) == 1:
        return dict(requests[0])
    return {name: np.concatenate([r[name] for r in requests], axis=0) for name in requests[0]}


def split(outputs: Tensors, sizes: Sequence[int]) -> list[dict[str, np.ndarray[Any, Any]]]:
    """Cut each output back into per-request slices of ``sizes`` rows.

    Raises ``ValueError`` if an output does not have one row per input row,
    since then no slice can be attributed to a request.
    """
    if len(sizes) == 1:
        return [dict(outputs)]
    total = sum(sizes)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise ValueError(
                f"output '{name}' has shape {list(array.shape)}, not one row per input row ({total}); "
                "it cannot be split across a batch"
            )
    # plain slices (views): np.split's Python layers cost more than the slicing
    parts = []
    start = 0
    for size in sizes:
        end = start + size
        parts.append({name: array[start:end] for name, array in outputs.items()})
        start = end
    return parts
