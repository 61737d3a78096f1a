"""The V2 REST inference body, with Triton's binary tensor extension.

A request body is a JSON header, optionally followed by raw tensor bytes when
the ``Inference-Header-Content-Length`` header gives the JSON part's length.
Each input with a ``binary_data_size`` parameter takes its bytes, in order.
A response puts an output in the binary part when that output asks for
``binary_data`` or the request asks for ``binary_data_output``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import simdjson

from turnout.errors import InvalidRequest
from turnout.protocol import json_data, raw
from turnout.protocol.datatypes import BYTES, is_datatype
from turnout.protocol.limits import DEFAULT_LIMITS, InputLimits, shown
from turnout.protocol.types import (
    InferenceRequest,
    InferenceResponse,
    InferInput,
    Parameters,
    RequestedOutput,
)

BINARY_DATA_SIZE = "binary_data_size"
# A request's remaining time in microseconds, as gRPC's grpc-timeout carries it: turnout's own
# gateway sends it to turnout replicas with a body it passes on unread (other servers ignore it)
TIMEOUT_HEADER = b"turnout-timeout-us"
# Every way the JSON parsers refuse a body. simdjson raises ValueError for most
# (UnicodeDecodeError for bad UTF-8) but RuntimeError for DEPTH_ERROR (nesting
# past 1,024) and BIGINT_ERROR (an integer beyond 64 bits): issue 15 found 47 of
# 400 hostile bodies answered 500 "internal error" for those two. All are the
# client's error (400), with the parser's reason, which never quotes the body.
PARSER_ERRORS = (ValueError, RuntimeError)


@dataclass(frozen=True, slots=True)
class EncodedResponse:
    body: bytes
    header_length: int | None  # set when the body carries a binary part


def decode_request(
    body: bytes,
    header_length: int | None,
    model_name: str,
    model_version: str | None,
    limits: InputLimits = DEFAULT_LIMITS,
) -> InferenceRequest:
    if header_length is None:
        json_part: bytes | memoryview = body
        binary = memoryview(b"")
    else:
        if not 0 < header_length <= len(body):
            raise InvalidRequest(
                f"Inference-Header-Content-Length {header_length} does not fit a body of {len(body)} bytes"
            )
        view = memoryview(body)
        json_part, binary = view[:header_length], view[header_length:]
    # simdjson, not orjson, for the inference body: it leaves ``data`` arrays
    # unconverted, and json_data reads numeric ones straight into numpy
    # (mlp_large's 1,024 floats: 123 -> ~30 µs for the whole decode).
    document = _parse_lazily(json_part)
    # simdjson's get() costs ~2 µs for a key that is absent, ~0.1 when present;
    # the look-ups are written out (no helper): this runs for every request
    present = set(document.keys())
    raw_inputs = document["inputs"] if "inputs" in present else None
    if not isinstance(raw_inputs, simdjson.Array) or not len(raw_inputs):
        raise InvalidRequest("'inputs' must be a non-empty list")
    inputs: list[InferInput] = []
    offset = 0
    for position, lazy_item in enumerate(raw_inputs):
        tensor, used = _decode_input(_plain_except_data(lazy_item), position, binary, offset, limits)
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise InvalidRequest(f"binary data has {len(binary) - offset} bytes that no input claims")

    parameters: Parameters = {}
    if "parameters" in present:
        parameters = _parameters(_plain(document["parameters"]), "request")
        if not isinstance(parameters.get("binary_data_output", False), bool):
            raise InvalidRequest("binary_data_output must be true or false")
    request_id = document["id"] if "id" in present else None
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequest("'id' must be a string")
    outputs = _decode_outputs(_plain(document["outputs"]), limits) if "outputs" in present else None
    return InferenceRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=inputs,
        id=request_id,
        outputs=outputs,
        parameters=parameters,
    )


def parse_object(body: bytes | memoryview) -> dict[str, Any]:
    """A JSON object, or the client's error saying why not."""
    try:
        document = orjson.loads(body)
    except PARSER_ERRORS as exc:  # orjson: JSONDecodeError (a ValueError) for all, depth past 1,024 too
        raise InvalidRequest(f"malformed JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return document


def _parse_lazily(body: bytes | memoryview) -> Any:
    """The body as a simdjson Object, parsed but not converted to Python objects."""
    try:
        # A parser per request: a parser cannot parse again while objects
        # from its last document live, and making one costs ~0.1 µs.
        document = simdjson.Parser().parse(bytes(body) if isinstance(body, memoryview) else body)
    except PARSER_ERRORS as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from None
    if not isinstance(document, simdjson.Object):
        raise InvalidRequest("the request body must be a JSON object")
    return document


def _plain(value: Any) -> Any:
    """A simdjson value as the Python objects json.loads would give."""
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def _plain_except_data(item: Any) -> Any:
    if not isinstance(item, simdjson.Object):
        return _plain(item)
    # keys, not items(): items() converts every value, data included. _plain
    # written out: this runs for every field of every input of every request
    plain = {}
    for key in item.keys():  # noqa: SIM118
        value: Any = item[key]
        if key != "data":
            if isinstance(value, simdjson.Array):
                value = value.as_list()
            elif isinstance(value, simdjson.Object):
                value = value.as_dict()
        plain[key] = value
    return plain


def _decode_input(
    item: Any, position: int, binary: memoryview, offset: int, limits: InputLimits
) -> tuple[InferInput, int]:
    if not isinstance(item, dict):
        raise InvalidRequest(f"inputs[{position}] must be an object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"inputs[{position}] has no 'name'")
    limits.check_name(name, "inputs", position)
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or not is_datatype(datatype):
        raise InvalidRequest(f"input '{name}': unknown datatype {shown(datatype)}")
    shape = _shape(item.get("shape"), name)
    limits.check_shape(name, shape)
    parameters = _parameters(item.get("parameters"), f"input '{name}'")
    size = parameters.pop(BINARY_DATA_SIZE, None)
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidRequest(f"input '{name}': binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise InvalidRequest(
                f"input '{name}': binary_data_size {size} exceeds the {len(binary) - offset} binary bytes left"
            )
        data = raw.decode(binary[offset : offset + size], datatype, shape, name)
        if datatype == BYTES:
            limits.check_bytes(name, map(len, data.reshape(-1)))
        return InferInput(name, datatype, shape, data, parameters), size
    if "data" not in item:
        raise InvalidRequest(f"input '{name}' has neither 'data' nor binary_data_size")
    data = json_data.decode(item["data"], datatype, shape, name)
    if datatype == BYTES:
        limits.check_bytes(name, map(len, data.reshape(-1)))
    return InferInput(name, datatype, shape, data, parameters), 0


def _shape(value: Any, name: str) -> tuple[int, ...]:
    if type(value) is list:
        for dimension in value:  # a plain loop: this runs for every input of every request
            if type(dimension) is not int or dimension < 0:  # `type() is int` also refuses booleans
                break
        else:
            return tuple(value)
    raise InvalidRequest(f"input '{name}': 'shape' must be a list of non-negative integers")


def _decode_outputs(value: Any, limits: InputLimits) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidRequest("'outputs' must be a list")
    outputs = []
    for position, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidRequest(f"outputs[{position}] must be an object with a 'name'")
        name = item["name"]
        limits.check_name(name, "outputs", position)
        parameters = _parameters(item.get("parameters"), f"output '{name}'")
        if not isinstance(parameters.get("binary_data", False), bool):
            raise InvalidRequest(f"output '{name}': binary_data must be true or false")
        outputs.append(RequestedOutput(name, parameters))
    return outputs


def _parameters(value: Any, where: str) -> Parameters:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where}: 'parameters' must be an object")
    return value


def encode_response(response: InferenceResponse, request: InferenceRequest) -> EncodedResponse:
    binary_default = request.parameters.get("binary_data_output") is True
    wants_binary: dict[str, bool] = {}
    for requested in request.outputs or ():
        flag = requested.parameters.get("binary_data")
        wants_binary[requested.name] = binary_default if flag is None else flag

    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output in response.outputs:
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": output.shape}
        parameters = dict(output.parameters)
        if wants_binary.get(output.name, binary_default):
            chunk = raw.encode(output.data, output.datatype)
            chunks.append(chunk)
            parameters[BINARY_DATA_SIZE] = len(chunk)
        else:
            entry["data"] = json_data.encode(output.data, output.datatype, output.name)
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)

    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = response.parameters
    document["outputs"] = outputs
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return EncodedResponse(header, None)
    return EncodedResponse(b"".join([header, *chunks]), len(header))


def dumps(document: Any) -> bytes:
    """JSON for the non-inference endpoints (metadata, index, errors)."""
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def header_timeout(value: bytes | None) -> float | None:
    """``turnout-timeout-us`` in seconds; None when absent. A value that is not a positive whole number is a 400."""
    if value is None:
        return None
    if not value.isdigit() or int(value) <= 0:
        raise InvalidRequest(f"header {TIMEOUT_HEADER.decode()} must be a positive number of microseconds")
    return int(value) / 1_000_000
