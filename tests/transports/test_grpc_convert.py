"""Protobuf <-> protocol types for V2 gRPC, and wire compatibility with tritonclient's stubs."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.grpc import service_pb2

from turnout.errors import Code, InvalidRequest
from turnout.protocol.datatypes import to_numpy
from turnout.protocol.types import InferenceResponse, InferOutput
from turnout.transports.grpc import convert
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb

# datatype, struct format character, four values including the datatype's extremes
FIXED_WIDTH: list[tuple[str, str, list[Any]]] = [
    ("BOOL", "?", [True, False, False, True]),
    ("INT8", "b", [-128, -1, 0, 127]),
    ("INT16", "h", [-32768, -1, 0, 32767]),
    ("INT32", "i", [-(2**31), -1, 0, 2**31 - 1]),
    ("INT64", "q", [-(2**63), -1, 0, 2**63 - 1]),
    ("UINT8", "B", [0, 1, 128, 255]),
    ("UINT16", "H", [0, 1, 256, 65535]),
    ("UINT32", "I", [0, 1, 2**31, 2**32 - 1]),
    ("UINT64", "Q", [0, 1, 2**63, 2**64 - 1]),
    ("FP16", "e", [0.5, -1.5, 0.0, 65504.0]),
    ("FP32", "f", [0.5, -1.5, 0.0, 2.0**100]),
    ("FP64", "d", [0.5, -1.5, 0.0, 1e300]),
]
FIXED_IDS = [row[0] for row in FIXED_WIDTH]
# every datatype with a typed contents field, with its field and four values
TYPED: list[tuple[str, str, list[Any]]] = [
    (datatype, convert.CONTENTS_FIELD[datatype], values) for datatype, _, values in FIXED_WIDTH if datatype != "FP16"
] + [("BYTES", "bytes_contents", [b"a", b"", b"\xff\x00", b"long" * 100])]
TYPED_IDS = [row[0] for row in TYPED]
WORDS = [b"a", b"", b"\xff\x00", b"long" * 100]


def framed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def raw_request(**tensors: tuple[str, list[int], bytes]) -> pb.ModelInferRequest:
    """A request in tritonclient's form: every tensor in ``raw_input_contents``."""
    message = pb.ModelInferRequest(model_name="m")
    for name, (datatype, shape, data) in tensors.items():
        message.inputs.add(name=name, datatype=datatype, shape=shape)
        message.raw_input_contents.append(data)
    return message


def rejected(message: pb.ModelInferRequest) -> str:
    with pytest.raises(InvalidRequest) as caught:
        convert.decode_request(message)
    assert caught.value.code is Code.INVALID
    return caught.value.message


def object_array(items: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


# ---------------------------------------------------------------- decode_request


@pytest.mark.parametrize(("datatype", "fmt", "values"), FIXED_WIDTH, ids=FIXED_IDS)
def test_decode_raw_input_contents(datatype: str, fmt: str, values: list[Any]) -> None:
    message = raw_request(x=(datatype, [2, 2], struct.pack(f"<4{fmt}", *values)))

    request, as_raw = convert.decode_request(message)

    assert as_raw is True
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", datatype, (2, 2))
    assert tensor.data.dtype == to_numpy(datatype)
    assert tensor.data.reshape(-1).tolist() == values


def test_decode_raw_bytes_input() -> None:
    request, as_raw = convert.decode_request(raw_request(x=("BYTES", [2, 2], framed(*WORDS))))

    assert as_raw is True
    assert request.inputs[0].data.tolist() == [WORDS[:2], WORDS[2:]]


def test_decode_several_raw_inputs_by_position() -> None:
    message = raw_request(
        a=("INT32", [2], struct.pack("<2i", 1, -1)),
        b=("BYTES", [1], framed(b"word")),
        c=("FP64", [1, 1], struct.pack("<d", 2.5)),
    )

    request, _ = convert.decode_request(message)

    assert [t.data.tolist() for t in request.inputs] == [[1, -1], [b"word"], [[2.5]]]


@pytest.mark.parametrize(("datatype", "field", "values"), TYPED, ids=TYPED_IDS)
def test_decode_typed_contents(datatype: str, field: str, values: list[Any]) -> None:
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype=datatype, shape=[1, 4])
    getattr(tensor.contents, field).extend(values)

    request, as_raw = convert.decode_request(message)

    assert as_raw is False
    decoded = request.inputs[0].data
    assert decoded.shape == (1, 4)
    assert decoded.dtype == to_numpy(datatype)
    assert decoded.reshape(-1).tolist() == values


def test_decode_fp16_typed_contents_is_an_error() -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="half", datatype="FP16", shape=[2]).contents.fp32_contents.extend([0.5, 1.0])

    assert rejected(message) == "input 'half': FP16 has no typed contents field; send raw_input_contents"


def test_decode_typed_contents_of_the_wrong_length() -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP32", shape=[2, 2]).contents.fp32_contents.extend([1.0, 2.0, 3.0])

    assert rejected(message) == "input 'x': shape [2, 2] has 4 elements but contents has 3"


def test_decode_typed_contents_in_the_wrong_field() -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="INT64", shape=[2]).contents.int_contents.extend([1, 2])

    assert rejected(message) == "input 'x': INT64 data belongs in int64_contents, not int_contents"


@pytest.mark.parametrize(
    ("datatype", "value"),
    [("INT8", 128), ("INT8", -129), ("INT16", 32768), ("INT16", -32769), ("UINT8", 256), ("UINT16", 65536)],
)
def test_decode_typed_contents_out_of_range(datatype: str, value: int) -> None:
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="small", datatype=datatype, shape=[2])
    getattr(tensor.contents, convert.CONTENTS_FIELD[datatype]).extend([0, value])

    assert rejected(message) == f"input 'small': a value is out of range for {datatype}"


@pytest.mark.parametrize("raw_count", [1, 3])
def test_decode_raw_contents_must_match_the_inputs(raw_count: int) -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="a", datatype="INT8", shape=[1])
    message.inputs.add(name="b", datatype="INT8", shape=[1])
    message.raw_input_contents.extend([b"\x01"] * raw_count)

    assert rejected(message) == f"raw_input_contents has {raw_count} entries for 2 inputs"


def test_decode_mixing_typed_and_raw_is_an_error() -> None:
    message = raw_request(a=("INT8", [1], b"\x01"), b=("INT8", [1], b"\x02"))
    message.inputs[1].contents.int_contents.append(2)

    assert rejected(message) == "input 'b' has typed contents while raw_input_contents is used"


def test_decode_raw_contents_of_the_wrong_size() -> None:
    assert rejected(raw_request(x=("FP32", [3], bytes(8)))) == "input 'x': shape [3] of FP32 needs 12 bytes, got 8"


def test_decode_requires_inputs() -> None:
    assert rejected(pb.ModelInferRequest(model_name="m")) == "the request has no inputs"


def test_decode_requires_input_names() -> None:
    assert rejected(raw_request(**{"": ("INT8", [1], b"\x01")})) == "inputs[0] has no name"


def test_decode_rejects_an_unknown_datatype() -> None:
    assert rejected(raw_request(x=("FLOAT", [1], bytes(4)))) == "input 'x': unknown datatype 'FLOAT'"


def test_decode_rejects_a_negative_dimension() -> None:
    assert rejected(raw_request(x=("INT8", [-1, 2], b""))) == "input 'x': shape [-1, 2] has a negative dimension"


def test_decode_echoes_id_version_and_requested_outputs() -> None:
    message = raw_request(x=("INT8", [1], b"\x01"))
    message.id = "req-7"
    message.model_version = "3"
    message.outputs.add(name="y").parameters["binary_data"].bool_param = True
    message.outputs.add(name="z")

    request, _ = convert.decode_request(message)

    assert (request.model_name, request.model_version, request.id) == ("m", "3", "req-7")
    assert request.outputs is not None
    assert [(o.name, o.parameters) for o in request.outputs] == [("y", {"binary_data": True}), ("z", {})]


def test_decode_empty_id_version_and_outputs_are_absent() -> None:
    request, _ = convert.decode_request(raw_request(x=("INT8", [1], b"\x01")))

    assert request.model_version is None
    assert request.id is None
    assert request.outputs is None
    assert request.parameters == {}


def test_decode_parameters_of_every_kind() -> None:
    message = raw_request(x=("INT8", [1], b"\x01"))
    message.parameters["flag"].bool_param = False
    message.parameters["count"].int64_param = -(2**40)
    message.parameters["label"].string_param = "text"
    message.parameters["ratio"].double_param = 0.125
    message.parameters["big"].uint64_param = 2**64 - 1
    message.parameters["unset"].SetInParent()  # no choice made: not a parameter
    message.inputs[0].parameters["scale"].double_param = 2.0

    request, _ = convert.decode_request(message)

    assert request.parameters == {"flag": False, "count": -(2**40), "label": "text", "ratio": 0.125, "big": 2**64 - 1}
    assert request.inputs[0].parameters == {"scale": 2.0}


# ---------------------------------------------------------------- encode_response


def output_of(datatype: str, values: list[Any], shape: tuple[int, ...] = (2, 2)) -> InferOutput:
    data = object_array(values, shape) if datatype == "BYTES" else np.array(values, dtype=to_numpy(datatype))
    return InferOutput(datatype.lower(), datatype, shape, data.reshape(shape))


@pytest.mark.parametrize(("datatype", "fmt", "values"), FIXED_WIDTH, ids=FIXED_IDS)
def test_encode_raw(datatype: str, fmt: str, values: list[Any]) -> None:
    message = convert.encode_response(InferenceResponse("m", "1", [output_of(datatype, values)]), as_raw=True)

    assert list(message.raw_output_contents) == [struct.pack(f"<4{fmt}", *values)]
    (tensor,) = message.outputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == (datatype.lower(), datatype, [2, 2])
    assert not tensor.HasField("contents")


def test_encode_raw_bytes() -> None:
    message = convert.encode_response(InferenceResponse("m", "1", [output_of("BYTES", WORDS)]), as_raw=True)

    assert list(message.raw_output_contents) == [framed(*WORDS)]


@pytest.mark.parametrize(("datatype", "field", "values"), TYPED, ids=TYPED_IDS)
def test_encode_typed(datatype: str, field: str, values: list[Any]) -> None:
    message = convert.encode_response(InferenceResponse("m", "1", [output_of(datatype, values)]), as_raw=False)

    assert len(message.raw_output_contents) == 0
    (tensor,) = message.outputs
    assert list(tensor.shape) == [2, 2]
    assert list(getattr(tensor.contents, field)) == values
    assert [f.name for f, _ in tensor.contents.ListFields()] == [field]


def test_encode_an_fp16_output_forces_every_output_raw() -> None:
    fp16 = output_of("FP16", [0.5, 1.0, 1.5, 2.0])
    fp32 = output_of("FP32", [1.0, 2.0, 3.0, 4.0])

    message = convert.encode_response(InferenceResponse("m", "1", [fp32, fp16]), as_raw=False)

    assert list(message.raw_output_contents) == [
        struct.pack("<4f", 1.0, 2.0, 3.0, 4.0),
        struct.pack("<4e", 0.5, 1.0, 1.5, 2.0),
    ]
    assert not any(tensor.HasField("contents") for tensor in message.outputs)


def test_encode_echoes_id_and_version() -> None:
    message = convert.encode_response(InferenceResponse("m", "4", [], id="req-1"), as_raw=True)

    assert (message.model_name, message.model_version, message.id) == ("m", "4", "req-1")


def test_encode_without_an_id() -> None:
    assert convert.encode_response(InferenceResponse("m", "4", []), as_raw=True).id == ""


def test_encode_parameters_of_every_kind() -> None:
    output = output_of("INT8", [1, 2, 3, 4])
    output.parameters["unit"] = "cm"
    parameters = {"flag": True, "count": -(2**40), "label": "text", "ratio": 0.125}

    message = convert.encode_response(InferenceResponse("m", "1", [output], parameters=parameters), as_raw=True)

    choices = {key: value.WhichOneof("parameter_choice") for key, value in message.parameters.items()}
    assert choices == {"flag": "bool_param", "count": "int64_param", "label": "string_param", "ratio": "double_param"}
    assert convert.decode_parameters(message.parameters) == parameters
    assert convert.decode_parameters(message.outputs[0].parameters) == {"unit": "cm"}


# ---------------------------------------------------------------- wire compatibility with tritonclient


def fill_request(message: Any) -> None:
    """The same request, built through either set of stubs (they share field names)."""
    message.model_name = "classifier"
    message.model_version = "2"
    message.id = "wire-1"
    message.parameters["priority"].int64_param = 5
    message.parameters["sequence_start"].bool_param = True
    message.parameters["tag"].string_param = "t"
    message.parameters["ratio"].double_param = 0.5
    message.parameters["big"].uint64_param = 2**64 - 1
    image = message.inputs.add(name="image", datatype="FP32", shape=[1, 3])
    image.parameters["scale"].double_param = 2.0
    message.inputs.add(name="words", datatype="BYTES", shape=[2])
    message.raw_input_contents.extend([struct.pack("<3f", 0.5, -1.0, 2.0), framed(b"a", b"\xff")])
    output = message.outputs.add(name="label")
    output.parameters["classification"].int64_param = 2
    message.outputs.add(name="scores")


def assert_same_request(ours: Any, theirs: Any) -> None:
    assert ours.model_name == theirs.model_name == "classifier"
    assert ours.model_version == theirs.model_version == "2"
    assert ours.id == theirs.id == "wire-1"
    assert convert.decode_parameters(ours.parameters) == convert.decode_parameters(theirs.parameters)
    assert len(ours.parameters) == 5
    assert len(ours.inputs) == len(theirs.inputs) == 2
    for mine, other in zip(ours.inputs, theirs.inputs, strict=True):
        assert (mine.name, mine.datatype, list(mine.shape)) == (other.name, other.datatype, list(other.shape))
        assert convert.decode_parameters(mine.parameters) == convert.decode_parameters(other.parameters)
    assert [(o.name, convert.decode_parameters(o.parameters)) for o in ours.outputs] == [
        (o.name, convert.decode_parameters(o.parameters)) for o in theirs.outputs
    ]
    assert list(ours.raw_input_contents) == list(theirs.raw_input_contents)
    assert len(ours.raw_input_contents) == 2


def test_our_request_bytes_parse_with_tritonclient_stubs() -> None:
    ours = pb.ModelInferRequest()
    fill_request(ours)

    theirs = service_pb2.ModelInferRequest.FromString(ours.SerializeToString())

    assert_same_request(ours, theirs)


def test_tritonclient_request_bytes_parse_with_our_stubs() -> None:
    theirs = service_pb2.ModelInferRequest()
    fill_request(theirs)

    ours = pb.ModelInferRequest.FromString(theirs.SerializeToString())

    assert_same_request(ours, theirs)
    request, as_raw = convert.decode_request(ours)
    assert as_raw is True
    assert request.inputs[0].data.tolist() == [[0.5, -1.0, 2.0]]
    assert request.inputs[1].data.tolist() == [b"a", b"\xff"]


def test_typed_contents_cross_the_wire_both_ways() -> None:
    for source, target in ((pb, service_pb2), (service_pb2, pb)):
        message = source.ModelInferRequest(model_name="m")
        for datatype, field, values in TYPED:
            getattr(message.inputs.add(name=datatype, datatype=datatype, shape=[4]).contents, field).extend(values)

        parsed = target.ModelInferRequest.FromString(message.SerializeToString())

        for (_, field, values), tensor in zip(TYPED, parsed.inputs, strict=True):
            assert list(getattr(tensor.contents, field)) == values


def test_our_responses_read_with_tritonclient() -> None:
    outputs = [output_of(datatype, values) for datatype, _, values in FIXED_WIDTH] + [output_of("BYTES", WORDS)]
    message = convert.encode_response(
        InferenceResponse("m", "3", outputs, id="r-2", parameters={"seq": 4}), as_raw=True
    )

    theirs = service_pb2.ModelInferResponse.FromString(message.SerializeToString())
    result = triton_grpc.InferResult(theirs)

    assert (theirs.model_name, theirs.model_version, theirs.id) == ("m", "3", "r-2")
    assert theirs.parameters["seq"].int64_param == 4
    for output in outputs:
        decoded = result.as_numpy(output.name)
        np.testing.assert_array_equal(decoded, output.data)
        if output.datatype != "BYTES":
            assert decoded.dtype == output.data.dtype


def test_typed_responses_read_with_tritonclient_stubs() -> None:
    outputs = [output_of(datatype, values) for datatype, _, values in TYPED]
    message = convert.encode_response(InferenceResponse("m", "3", outputs), as_raw=False)

    theirs = service_pb2.ModelInferResponse.FromString(message.SerializeToString())

    assert len(theirs.raw_output_contents) == 0
    for (datatype, field, values), tensor in zip(TYPED, theirs.outputs, strict=True):
        assert (tensor.name, tensor.datatype, list(tensor.shape)) == (datatype.lower(), datatype, [2, 2])
        assert list(getattr(tensor.contents, field)) == values
