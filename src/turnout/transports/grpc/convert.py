"""Protobuf messages <-> turnout's protocol types for V2 gRPC.

Requests carry tensors either all in ``raw_input_contents`` (what tritonclient
sends) or all in typed ``contents``; responses answer in the same form, except
that FP16, which has no typed field, always travels raw.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from turnout.errors import InvalidRequest
from turnout.protocol import raw
from turnout.protocol.datatypes import BYTES, check_integer_range, is_datatype, to_numpy
from turnout.protocol.limits import DEFAULT_LIMITS, InputLimits, shown
from turnout.protocol.shapes import element_count, format_shape
from turnout.protocol.types import InferenceRequest, InferenceResponse, InferInput, Parameters, RequestedOutput
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb

# the typed ``InferTensorContents`` field of each datatype
CONTENTS_FIELD: Final = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}


def decode_parameters(parameters: Any) -> Parameters:
    if not parameters:  # the common case, and cheaper than iterating an empty map
        return {}
    decoded: Parameters = {}
    for key, value in parameters.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is not None:
            decoded[key] = getattr(value, choice)
    return decoded


def encode_parameters(target: Any, parameters: Parameters) -> None:
    for key, value in parameters.items():
        entry = target[key]
        if isinstance(value, bool):
            entry.bool_param = value
        elif isinstance(value, int):
            entry.int64_param = value
        elif isinstance(value, float):
            entry.double_param = value
        else:
            entry.string_param = str(value)


def decode_request(
    message: pb.ModelInferRequest, limits: InputLimits = DEFAULT_LIMITS
) -> tuple[InferenceRequest, bool]:
    """The request, and whether its tensors came raw (to answer in kind)."""
    raw_contents = message.raw_input_contents
    if raw_contents and len(raw_contents) != len(message.inputs):
        raise InvalidRequest(f"raw_input_contents has {len(raw_contents)} entries for {len(message.inputs)} inputs")
    if not message.inputs:
        raise InvalidRequest("the request has no inputs")
    inputs = []
    for position, tensor in enumerate(message.inputs):
        name = tensor.name
        if not name:
            raise InvalidRequest(f"inputs[{position}] has no name")
        limits.check_name(name, "inputs", position)
        if not is_datatype(tensor.datatype):
            raise InvalidRequest(f"input '{name}': unknown datatype {shown(tensor.datatype)}")
        shape = tuple(tensor.shape)
        limits.check_shape(name, shape)  # first: at most 64 dimensions before a message repeats them
        if shape and min(shape) < 0:
            raise InvalidRequest(f"input '{name}': shape {format_shape(shape)} has a negative dimension")
        if raw_contents:
            if tensor.HasField("contents"):
                raise InvalidRequest(f"input '{name}' has typed contents while raw_input_contents is used")
            data = raw.decode(raw_contents[position], tensor.datatype, shape, name)
        else:
            data = _decode_contents(tensor, shape)
        if tensor.datatype == BYTES:
            limits.check_bytes(name, map(len, data.reshape(-1)))
        inputs.append(InferInput(name, tensor.datatype, shape, data, decode_parameters(tensor.parameters)))
    requested = message.outputs
    for position, output in enumerate(requested):
        limits.check_name(output.name, "outputs", position)
    outputs = [RequestedOutput(o.name, decode_parameters(o.parameters)) for o in requested] if requested else None
    request = InferenceRequest(
        model_name=message.model_name,
        model_version=message.model_version or None,
        inputs=inputs,
        id=message.id or None,
        outputs=outputs,
        parameters=decode_parameters(message.parameters),
    )
    return request, bool(raw_contents)


def _decode_contents(tensor: Any, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    name, datatype = tensor.name, tensor.datatype
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidRequest(f"input '{name}': {datatype} has no typed contents field; send raw_input_contents")
    others = [f.name for f, _ in tensor.contents.ListFields() if f.name != field]
    if others:
        raise InvalidRequest(f"input '{name}': {datatype} data belongs in {field}, not {', '.join(others)}")
    values = getattr(tensor.contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise InvalidRequest(
            f"input '{name}': shape {format_shape(shape)} has {count} elements but contents has {len(values)}"
        )
    if datatype == BYTES:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    dtype = to_numpy(datatype)
    if dtype.kind in "iu" and dtype.itemsize < 4:  # int_contents/uint_contents are 32-bit
        check_integer_range(np.asarray(values, dtype=np.int64), datatype, name)
    return np.asarray(values, dtype=dtype).reshape(shape)


def encode_response(response: InferenceResponse, as_raw: bool) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id or ""
    )
    encode_parameters(message.parameters, response.parameters)
    as_raw = as_raw or any(o.datatype not in CONTENTS_FIELD for o in response.outputs)
    for output in response.outputs:
        tensor = message.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        encode_parameters(tensor.parameters, output.parameters)
        if as_raw:
            message.raw_output_contents.append(raw.encode(output.data, output.datatype))
        elif output.datatype == BYTES:
            tensor.contents.bytes_contents.extend(raw.as_bytes(x) for x in output.data.reshape(-1))
        else:
            getattr(tensor.contents, CONTENTS_FIELD[output.datatype]).extend(output.data.reshape(-1).tolist())
    return message
