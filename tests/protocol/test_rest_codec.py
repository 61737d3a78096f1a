"""Decoding the V2 REST inference request body: plain JSON, Triton's binary
tensor extension, and malformed requests, each refused with a message saying
why. Encoding the response body: test_rest_encode.py."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton_http

from tests.protocol.rest_codec_support import decode, json_body
from turnout.errors import Code, InvalidRequest
from turnout.protocol import rest_codec

# ---------------------------------------------------------------- helpers


def with_binary(document: dict[str, Any], *chunks: bytes) -> tuple[bytes, int]:
    """A body in the binary extension's form, and its header length."""
    header = orjson.dumps(document)
    return header + b"".join(chunks), len(header)


def rejected(body: bytes, header_length: int | None = None) -> str:
    with pytest.raises(InvalidRequest) as caught:
        decode(body, header_length)
    assert caught.value.code is Code.INVALID
    return caught.value.message


def one_input(**fields: Any) -> bytes:
    tensor = {"name": "x", "datatype": "INT32", "shape": [2], "data": [1, 2], **fields}
    return json_body({"inputs": [tensor]})


# ---------------------------------------------------------------- decode: plain JSON


def test_decode_plain_json() -> None:
    body = json_body(
        {
            "id": "req-1",
            "parameters": {"priority": 3},
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4.5]]},
                {"name": "b", "datatype": "BYTES", "shape": [1], "data": ["hi"], "parameters": {"k": "v"}},
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}],
        }
    )

    request = decode(body)

    assert request.model_name == "m"
    assert request.model_version == "2"
    assert request.id == "req-1"
    assert request.parameters == {"priority": 3}
    a, b = request.inputs
    assert (a.name, a.datatype, a.shape, a.parameters) == ("a", "FP32", (2, 2), {})
    np.testing.assert_array_equal(a.data, np.array([[1, 2], [3, 4.5]], dtype=np.float32))
    assert a.data.dtype == np.float32
    assert (b.name, b.datatype, b.shape, b.parameters) == ("b", "BYTES", (1,), {"k": "v"})
    assert b.data.tolist() == [b"hi"]
    assert request.outputs is not None
    assert [(o.name, o.parameters) for o in request.outputs] == [("y", {"binary_data": True}), ("z", {})]


def test_decode_defaults_when_optional_fields_are_absent() -> None:
    request = rest_codec.decode_request(one_input(), None, "m", None)

    assert request.model_version is None
    assert request.id is None
    assert request.outputs is None
    assert request.parameters == {}


def test_decode_keeps_an_empty_outputs_list() -> None:
    body = json_body({"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1]}], "outputs": []})

    assert decode(body).outputs == []


def test_decode_header_length_covering_the_whole_body() -> None:
    body = one_input()

    request = decode(body, len(body))

    assert request.inputs[0].data.tolist() == [1, 2]


# ---------------------------------------------------------------- decode: binary extension


def test_decode_one_binary_input() -> None:
    values = np.array([[0.5, -1.0, 2.0]], dtype=np.float32)
    document = {
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": [1, 3],
                "parameters": {"binary_data_size": 12, "other": True},
            }
        ]
    }
    body, header_length = with_binary(document, struct.pack("<3f", 0.5, -1.0, 2.0))

    (tensor,) = decode(body, header_length).inputs

    np.testing.assert_array_equal(tensor.data, values)
    assert tensor.data.dtype == np.float32
    assert tensor.shape == (1, 3)
    # binary_data_size is framing, not a parameter for the model
    assert tensor.parameters == {"other": True}


def test_decode_several_binary_inputs_take_their_bytes_in_order() -> None:
    words = struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)
    document = {
        "inputs": [
            {"name": "ints", "datatype": "INT64", "shape": [2], "parameters": {"binary_data_size": 16}},
            {"name": "words", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(words)}},
            {"name": "flags", "datatype": "BOOL", "shape": [3], "parameters": {"binary_data_size": 3}},
        ]
    }
    body, header_length = with_binary(document, struct.pack("<2q", -7, 2**40), words, b"\x01\x00\x01")

    ints, text, flags = decode(body, header_length).inputs

    assert ints.data.tolist() == [-7, 2**40]
    assert text.data.tolist() == [b"ab", b""]
    assert flags.data.tolist() == [True, False, True]


def test_decode_mixes_json_and_binary_inputs() -> None:
    document = {
        "inputs": [
            {"name": "a", "datatype": "INT16", "shape": [2], "data": [1, 2]},
            {"name": "b", "datatype": "UINT16", "shape": [2], "parameters": {"binary_data_size": 4}},
            {"name": "c", "datatype": "FP64", "shape": [1], "data": [0.25]},
            {"name": "d", "datatype": "UINT8", "shape": [3], "parameters": {"binary_data_size": 3}},
        ]
    }
    body, header_length = with_binary(document, struct.pack("<2H", 65535, 9), bytes([1, 2, 255]))

    a, b, c, d = decode(body, header_length).inputs

    assert a.data.tolist() == [1, 2]
    assert b.data.tolist() == [65535, 9]
    assert c.data.tolist() == [0.25]
    assert d.data.tolist() == [1, 2, 255]


def test_decode_rejects_leftover_binary_bytes() -> None:
    document = {"inputs": [{"name": "x", "datatype": "INT8", "shape": [2], "parameters": {"binary_data_size": 2}}]}
    body, header_length = with_binary(document, b"\x01\x02", b"\x03\x04")

    assert rejected(body, header_length) == "binary data has 2 bytes that no input claims"


def test_decode_rejects_binary_bytes_when_no_input_is_binary() -> None:
    body, header_length = with_binary({"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1]}]}, b"!")

    assert rejected(body, header_length) == "binary data has 1 bytes that no input claims"


def test_decode_rejects_a_binary_size_beyond_the_body() -> None:
    document = {
        "inputs": [
            {"name": "a", "datatype": "INT32", "shape": [2], "parameters": {"binary_data_size": 8}},
            {"name": "b", "datatype": "INT32", "shape": [2], "parameters": {"binary_data_size": 8}},
        ]
    }
    body, header_length = with_binary(document, bytes(12))

    assert rejected(body, header_length) == "input 'b': binary_data_size 8 exceeds the 4 binary bytes left"


def test_decode_rejects_a_binary_size_without_a_binary_part() -> None:
    body = json_body(
        {"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "parameters": {"binary_data_size": 1}}]}
    )

    assert rejected(body) == "input 'x': binary_data_size 1 exceeds the 0 binary bytes left"


def test_decode_rejects_a_binary_size_that_does_not_fit_the_shape() -> None:
    document = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [2], "parameters": {"binary_data_size": 4}}]}
    body, header_length = with_binary(document, bytes(4))

    assert rejected(body, header_length) == "input 'x': shape [2] of INT32 needs 8 bytes, got 4"


@pytest.mark.parametrize("size", [-1, 1.0, "4", True, None])
def test_decode_rejects_a_bad_binary_size(size: Any) -> None:
    document = {"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "parameters": {"binary_data_size": size}}]}
    body, header_length = with_binary(document, b"\x01")

    if size is None:  # null means absent: then there is no data at all
        assert rejected(body, header_length) == "input 'x' has neither 'data' nor binary_data_size"
    else:
        assert rejected(body, header_length) == "input 'x': binary_data_size must be a non-negative integer"


@pytest.mark.parametrize("header_length", [0, -1, 10_000])
def test_decode_rejects_a_header_length_that_does_not_fit(header_length: int) -> None:
    body = one_input()

    assert rejected(body, header_length) == (
        f"Inference-Header-Content-Length {header_length} does not fit a body of {len(body)} bytes"
    )


def test_decode_rejects_a_header_length_that_cuts_the_json() -> None:
    body = one_input()

    assert rejected(body, len(body) - 1).startswith("malformed JSON: ")


def test_decode_reads_bodies_built_by_tritonclient() -> None:
    image = np.arange(6, dtype=np.float32).reshape(2, 3)
    words = np.array([b"one", b"\xff\x00"], dtype=object)
    counts = np.array([[3], [-4]], dtype=np.int64)
    inputs = [
        triton_http.InferInput("image", [2, 3], "FP32"),
        triton_http.InferInput("words", [2], "BYTES"),
        triton_http.InferInput("counts", [2, 1], "INT64"),
    ]
    inputs[0].set_data_from_numpy(image, binary_data=True)
    inputs[1].set_data_from_numpy(words, binary_data=True)
    inputs[2].set_data_from_numpy(counts, binary_data=False)
    outputs = [triton_http.InferRequestedOutput("y", binary_data=True)]
    body, header_length = triton_http.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, request_id="t-1"
    )

    request = decode(body, header_length)

    assert request.id == "t-1"
    decoded = {t.name: t for t in request.inputs}
    np.testing.assert_array_equal(decoded["image"].data, image)
    assert decoded["words"].data.tolist() == [b"one", b"\xff\x00"]
    np.testing.assert_array_equal(decoded["counts"].data, counts)
    assert request.outputs is not None
    assert [(o.name, o.parameters) for o in request.outputs] == [("y", {"binary_data": True})]


# ---------------------------------------------------------------- decode: malformed requests


@pytest.mark.parametrize("body", [b"{", b"", b"{'inputs': []}", b"\xff\xfe{}"])
def test_decode_rejects_malformed_json(body: bytes) -> None:
    assert rejected(body).startswith("malformed JSON: ")


_INPUT = b'{"inputs":[{"name":"x","datatype":"INT64","shape":[1],"data":[%s]}]}'


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 2000 + b"]" * 2000, "DEPTH_ERROR"),  # simdjson's RuntimeError: was a 500
        (b'{"a":' * 1100 + b"1" + b"}" * 1100, "DEPTH_ERROR"),
        (_INPUT % (b"9" * 4000), "BIGINT_ERROR"),  # a RuntimeError too
        (_INPUT % b"-9223372036854775809", "BIGINT_ERROR"),
        (_INPUT % b"1e400", "NUMBER_ERROR"),
        (b'{"inputs":[{"name":"\xff"}]}', "UTF8_ERROR"),
        (b'{"inputs":[{"name":"\\ud800"}]}', "STRING_ERROR"),
    ],
)
def test_every_parser_failure_is_the_clients_error_with_the_reason(body: bytes, reason: str) -> None:
    """Issue 15: 47 of 400 hostile bodies got 500, each a RuntimeError from the
    parser; every way a parser refuses a body is a 400 saying why."""
    message = rejected(body)
    assert message.startswith("malformed JSON: ") and reason in message
    assert len(message) < 200  # the reason, never the body
    for part in (body, memoryview(body)):  # admin bodies, stream envelopes' ids: orjson, which reads
        try:  # a 20-digit integer as a float, but refuses the rest
            assert isinstance(rest_codec.parse_object(part), dict)
        except InvalidRequest as exc:
            assert exc.message.startswith("malformed JSON: ")


def test_a_binary_extension_json_header_that_does_not_parse_is_the_clients_error() -> None:
    header = b'{"inputs":[{"name":"x","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":' + b"9" * 30
    body = header + b"}}]}" + b"\x00" * 8
    assert "BIGINT_ERROR" in rejected(body, len(header) + 4)


@pytest.mark.parametrize("document", [[], "inputs", 3, None])
def test_decode_rejects_a_body_that_is_not_an_object(document: Any) -> None:
    assert rejected(json_body(document)) == "the request body must be a JSON object"


@pytest.mark.parametrize("document", [{}, {"inputs": []}, {"inputs": None}, {"inputs": {"name": "x"}}])
def test_decode_rejects_missing_or_empty_inputs(document: dict[str, Any]) -> None:
    assert rejected(json_body(document)) == "'inputs' must be a non-empty list"


def test_decode_rejects_an_input_that_is_not_an_object() -> None:
    good = {"name": "x", "datatype": "INT8", "shape": [1], "data": [1]}

    assert rejected(json_body({"inputs": [good, ["y"]]})) == "inputs[1] must be an object"


@pytest.mark.parametrize("name", [None, "", 5])
def test_decode_rejects_an_input_without_a_name(name: Any) -> None:
    assert rejected(one_input(name=name)) == "inputs[0] has no 'name'"


@pytest.mark.parametrize("datatype", ["FLOAT32", "fp32", "", None, 7])
def test_decode_rejects_an_unknown_datatype(datatype: Any) -> None:
    assert rejected(one_input(datatype=datatype)) == f"input 'x': unknown datatype {datatype!r}"


@pytest.mark.parametrize("shape", [None, 2, [2, -1], [2.0], ["2"], [True], {"0": 2}])
def test_decode_rejects_a_bad_shape(shape: Any) -> None:
    assert rejected(one_input(shape=shape)) == "input 'x': 'shape' must be a list of non-negative integers"


def test_decode_rejects_an_input_without_data() -> None:
    body = json_body({"inputs": [{"name": "x", "datatype": "INT8", "shape": [1]}]})

    assert rejected(body) == "input 'x' has neither 'data' nor binary_data_size"


def test_decode_reports_bad_json_data_with_the_input_name() -> None:
    assert rejected(one_input(data=[1, 2, 3])) == "input 'x': shape [2] has 2 elements but data has 3"


@pytest.mark.parametrize("request_id", [5, ["a"], True])
def test_decode_rejects_an_id_that_is_not_a_string(request_id: Any) -> None:
    body = json_body({"id": request_id, "inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1]}]})

    assert rejected(body) == "'id' must be a string"


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({"name": "y"}, "'outputs' must be a list"),
        (["y"], "outputs[0] must be an object with a 'name'"),
        ([{"name": "y"}, {"parameters": {}}], "outputs[1] must be an object with a 'name'"),
        ([{"name": 3}], "outputs[0] must be an object with a 'name'"),
    ],
)
def test_decode_rejects_bad_outputs(outputs: Any, message: str) -> None:
    body = json_body({"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1]}], "outputs": outputs})

    assert rejected(body) == message


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"parameters": [1]}, "request: 'parameters' must be an object"),
        ({"outputs": [{"name": "y", "parameters": "binary"}]}, "output 'y': 'parameters' must be an object"),
    ],
)
def test_decode_rejects_parameters_that_are_not_objects(document: dict[str, Any], message: str) -> None:
    tensor = {"name": "x", "datatype": "INT8", "shape": [1], "data": [1]}

    assert rejected(json_body({"inputs": [tensor], **document})) == message


def test_decode_rejects_input_parameters_that_are_not_objects() -> None:
    assert rejected(one_input(parameters=["binary_data_size", 8])) == "input 'x': 'parameters' must be an object"
