"""Checking a decoded request against a model's signature, before it is queued.

Pure: a request and a signature in, the model's feed out, or an
``InvalidRequest`` that names the input and what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from turnout.errors import InvalidRequest
from turnout.model.signature import Signature
from turnout.protocol.shapes import format_shape, matches
from turnout.protocol.types import InferenceRequest


@dataclass(frozen=True, slots=True)
class ValidatedRequest:
    inputs: dict[str, np.ndarray[Any, Any]]
    outputs: tuple[str, ...]


def validate(request: InferenceRequest, signature: Signature, max_batch_size: int) -> ValidatedRequest:
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    batch: int | None = None
    batch_from = ""  # the input that set ``batch``, to name both sides of a disagreement
    for tensor in request.inputs:
        spec = signature.input(tensor.name)
        if spec is None:
            raise InvalidRequest(f"unknown input '{tensor.name}'; the model takes {_names(signature.input_names)}")
        if tensor.name in inputs:
            raise InvalidRequest(f"input '{tensor.name}' is given twice")
        if tensor.datatype != spec.datatype:
            raise InvalidRequest(f"input '{tensor.name}' must be {spec.datatype}, got {tensor.datatype}")
        if not matches(tensor.shape, spec.shape):
            raise InvalidRequest(
                f"input '{tensor.name}' has shape {format_shape(tensor.shape)}, "
                f"the model expects {format_shape(spec.shape)}"
            )
        if max_batch_size > 0:
            rows = tensor.shape[0]
            if batch is not None and rows != batch:
                raise InvalidRequest(
                    f"inputs disagree on the batch size: '{batch_from}' has {batch} rows, '{tensor.name}' has {rows}"
                )
            batch, batch_from = rows, tensor.name
        inputs[tensor.name] = tensor.data
    missing = [name for name in signature.input_names if name not in inputs]
    if missing:
        raise InvalidRequest(f"missing input(s) {_names(missing)}")
    if batch is not None:
        if batch == 0:
            raise InvalidRequest("the batch is empty (0 rows)")
        if batch > max_batch_size:
            raise InvalidRequest(f"batch of {batch} rows exceeds the model's max_batch_size {max_batch_size}")

    if not request.outputs:  # absent or empty: every output
        outputs = tuple(signature.output_names)
    else:
        outputs = tuple(o.name for o in request.outputs)
        unknown = [name for name in outputs if signature.output(name) is None]
        if unknown:
            raise InvalidRequest(f"unknown output(s) {_names(unknown)}; the model has {_names(signature.output_names)}")
        if len(set(outputs)) != len(outputs):
            raise InvalidRequest("an output is requested twice")
        for requested in request.outputs:
            if "classification" in requested.parameters:  # refused, rather than answered with raw scores
                raise InvalidRequest(f"output '{requested.name}': the classification extension is not supported")
    return ValidatedRequest(inputs, outputs)


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def queue_timeout(configured: float | None, parameters: dict[str, Any], deadline: float | None) -> float | None:
    """The queue timeout: the model's, shortened by the transport's deadline and
    by a request's ``timeout`` parameter (microseconds, as Triton's clients send it)."""
    limits = [t for t in (configured, deadline) if t is not None]
    requested = parameters.get("timeout")
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested <= 0:
            raise InvalidRequest("parameter 'timeout' must be a positive integer (microseconds)")
        limits.append(requested / 1_000_000)
    return min(limits, default=None)


def key_text(value: Any) -> str | None:
    """A request parameter used as an A/B key: a string or a whole number."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None
