"""Input limits, checked by both codecs (REST JSON and binary, gRPC raw and
typed) before a tensor's data is decoded: 413 / RESOURCE_EXHAUSTED with the
input, the size and the flag to change named."""

from __future__ import annotations

import struct

import orjson
import pytest

from turnout.errors import Code, InvalidRequest, PayloadTooLarge
from turnout.protocol import rest_codec
from turnout.protocol.limits import InputLimits, shown
from turnout.transports.grpc import convert
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb

LIMITS = InputLimits(max_tensor_elements=100, max_bytes_element=8)


def test_a_shape_over_the_element_limit_is_refused_before_its_data_is_read() -> None:
    # the data is absent: the shape alone decides, so nothing is parsed or allocated
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1000, 1000000], "data": []}]})
    with pytest.raises(PayloadTooLarge) as refused:
        rest_codec.decode_request(body, None, "m", None, LIMITS)
    assert refused.value.code is Code.TOO_LARGE
    assert "input 'x': shape [1000, 1000000] has 1000000000 elements" in refused.value.message
    assert "--max-tensor-elements" in refused.value.message
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP32", shape=[1000, 1000000])
    message.raw_input_contents.append(b"")
    with pytest.raises(PayloadTooLarge, match="has 1000000000 elements"):
        convert.decode_request(message, LIMITS)


def test_tensors_within_the_limit_decode() -> None:
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [10, 10], "data": [0.0] * 100}]})
    assert rest_codec.decode_request(body, None, "m", None, LIMITS).inputs[0].data.shape == (10, 10)


def test_a_bytes_element_over_the_limit_is_refused_in_every_encoding() -> None:
    long, short = "x" * 9, "y" * 8
    body = orjson.dumps({"inputs": [{"name": "t", "datatype": "BYTES", "shape": [2], "data": [short, long]}]})
    with pytest.raises(PayloadTooLarge, match=r"input 't': a BYTES element of 9 bytes .*\(--max-bytes-element\)"):
        rest_codec.decode_request(body, None, "m", None, LIMITS)
    framed = b"".join(struct.pack("<I", len(s)) + s.encode() for s in (short, long))
    header = orjson.dumps(
        {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(framed)}}]}
    )
    with pytest.raises(PayloadTooLarge, match="9 bytes"):
        rest_codec.decode_request(header + framed, len(header), "m", None, LIMITS)
    raw = pb.ModelInferRequest(model_name="m")
    raw.inputs.add(name="t", datatype="BYTES", shape=[2])
    raw.raw_input_contents.append(framed)
    with pytest.raises(PayloadTooLarge, match="9 bytes"):
        convert.decode_request(raw, LIMITS)
    typed = pb.ModelInferRequest(model_name="m")
    tensor = typed.inputs.add(name="t", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.extend([short.encode(), long.encode()])
    with pytest.raises(PayloadTooLarge, match="9 bytes"):
        convert.decode_request(typed, LIMITS)
    ok = orjson.dumps({"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": [short]}]})
    assert rest_codec.decode_request(ok, None, "m", None, LIMITS).inputs[0].data[0] == short.encode()


def test_names_and_dimensions_are_bounded_before_any_message_repeats_them() -> None:
    """A megabyte name was repeated in every error about its tensor."""
    huge = "n" * 1_000_000
    for body in (
        {"inputs": [{"name": huge, "datatype": "FP32", "shape": [1], "data": [1]}]},
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], "outputs": [{"name": huge}]},
    ):
        with pytest.raises(InvalidRequest) as refused:
            rest_codec.decode_request(orjson.dumps(body), None, "m", None)
        assert "a name of 1000000 characters, over the limit of 1024" in refused.value.message
    deep = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1] * 100_000, "data": [1]}]}
    with pytest.raises(InvalidRequest, match="a shape of 100000 dimensions, over 64"):
        rest_codec.decode_request(orjson.dumps(deep), None, "m", None)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("FP8", "'FP8'"),
        (None, "None"),
        (7, "7"),
        ("x" * 100, "'" + "x" * 63 + "... (102 characters)"),
        (10**4000, "a very large integer"),
        ([[[]]], "a list"),
        ({"a": 1}, "a dict"),
    ],
)
def test_an_error_shows_a_bounded_part_of_a_value(value: object, text: str) -> None:
    assert shown(value) == text


def test_a_deeply_nested_datatype_is_refused_without_its_repr() -> None:
    nested = b"[" * 1000 + b"]" * 1000  # repr() of it: RecursionError, a 500
    body = b'{"inputs":[{"name":"x","datatype":' + nested + b',"shape":[1],"data":[1]}]}'
    with pytest.raises(InvalidRequest, match="input 'x': unknown datatype a list"):
        rest_codec.decode_request(body, None, "m", None)
