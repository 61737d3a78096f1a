"""The client's side of the V2 REST body: a request as the binary tensor
extension frames it, and the answer read back.

For a gateway sending a decoded request on to a replica: raw tensor bytes
cost no JSON encoding of numbers on either side, only a small JSON header.
An answer is the replica's, so one that breaks the protocol (a shape its
bytes do not fill, a tensor named twice, no JSON) raises
:class:`MalformedAnswer`, which the gateway counts against the replica, and
is never mistaken for the client's error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from turnout.errors import InvalidRequest
from turnout.protocol import json_data, raw
from turnout.protocol.datatypes import is_datatype

BINARY_DATA_SIZE = "binary_data_size"
_MAX_DIMENSIONS = 64


class MalformedAnswer(ValueError):
    """The replica's answer is not a V2 inference response (the message says how)."""


def encode_request(
    inputs: Mapping[str, np.ndarray[Any, Any]],
    datatypes: Mapping[str, str],
    outputs: Sequence[str],
    parameters: Mapping[str, Any],
) -> tuple[bytes, int]:
    """(body, length of its JSON header): every input and output in binary."""
    described, parts = [], []
    for name, array in inputs.items():
        datatype = datatypes[name]
        data = raw.encode(array, datatype)
        parts.append(data)
        described.append({"name": name, "datatype": datatype, "shape": list(array.shape),
                          "parameters": {BINARY_DATA_SIZE: len(data)}})  # fmt: skip
    document: dict[str, Any] = {
        "inputs": described,
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
    }
    if parameters:
        document["parameters"] = dict(parameters)
    header = orjson.dumps(document)
    return b"".join((header, *parts)), len(header)


def decode_answer(body: bytes, header_length: int | None) -> dict[str, np.ndarray[Any, Any]]:
    """The outputs of a 200 answer, by name."""
    end = len(body) if header_length is None else header_length
    if not 0 < end <= len(body):
        raise MalformedAnswer(f"its JSON header length {header_length} does not fit its {len(body)} bytes")
    try:
        document = orjson.loads(body[:end])
    except orjson.JSONDecodeError as exc:
        raise MalformedAnswer(f"it is not JSON: {exc}") from None
    described = document.get("outputs") if isinstance(document, dict) else None
    if not isinstance(described, list):
        raise MalformedAnswer("it has no 'outputs' list")
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    offset = end
    view = memoryview(body)
    for item in described:
        name, datatype, shape = _head(item)
        if name in tensors:
            raise MalformedAnswer(f"output '{name}' comes twice")
        size = (item.get("parameters") or {}).get(BINARY_DATA_SIZE)
        try:
            if size is None:
                tensors[name] = json_data.decode(item.get("data"), datatype, shape, name)
                continue
            if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= len(body) - offset:
                raise MalformedAnswer(f"output '{name}': binary_data_size {size!r} does not fit the answer")
            tensors[name] = raw.decode(view[offset : offset + size], datatype, shape, name)
        except InvalidRequest as exc:  # the codecs speak of inputs: here they are the replica's outputs
            raise MalformedAnswer(str(exc).replace("input '", "output '", 1)) from None
        offset += size
    return tensors


def error_text(body: bytes) -> str:
    """The ``error`` a V2 server puts in a failed answer, or the start of the body."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])
    return body[:200].decode("utf-8", "replace")


def _head(item: Any) -> tuple[str, str, tuple[int, ...]]:
    if not isinstance(item, dict):
        raise MalformedAnswer("an output is not an object")
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str) or not is_datatype(datatype):
        raise MalformedAnswer(f"an output has no name or no known datatype: {str(item)[:120]}")
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_DIMENSIONS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise MalformedAnswer(f"output '{name}': shape {shape!r} is not a list of sizes")
    return name, datatype, tuple(shape)
