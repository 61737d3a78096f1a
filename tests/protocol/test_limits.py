"""Input limits, checked by both codecs (REST JSON and binary, gRPC raw and
typed) before a tensor's data is decoded: 413 / RESOURCE_EXHAUSTED with the
input, the size and the flag to change named."""

from __future__ import annotations

import struct

import orjson
import pytest

from turnout.errors import Code, PayloadTooLarge
from turnout.protocol import rest_codec
from turnout.protocol.limits import InputLimits
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
