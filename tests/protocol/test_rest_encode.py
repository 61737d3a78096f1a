"""Encoding the V2 REST inference response body: plain JSON, or Triton's
binary tensor extension for the outputs the request asks it for (all of them,
or output by output), read back by tritonclient. Decoding requests:
test_rest_codec.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton_http

from tests.protocol.rest_codec_support import decode, json_body
from turnout.errors import InvalidRequest
from turnout.protocol import raw, rest_codec
from turnout.protocol.types import InferenceRequest, InferenceResponse, InferOutput

# ---------------------------------------------------------------- encode_response


def request_for(document: dict[str, Any]) -> InferenceRequest:
    """The request a response answers, decoded the way the server decodes it."""
    tensor = {"name": "x", "datatype": "INT8", "shape": [1], "data": [1]}
    return decode(json_body({"inputs": [tensor], **document}))


def response(*outputs: InferOutput, response_id: str | None = None, **parameters: Any) -> InferenceResponse:
    return InferenceResponse("m", "2", list(outputs), id=response_id, parameters=parameters)


def fp16_output() -> InferOutput:
    return InferOutput("half", "FP16", (2, 2), np.array([[0.5, -1.5], [2.0, 65504.0]], dtype=np.float16))


def int_output() -> InferOutput:
    return InferOutput("label", "INT64", (3,), np.array([1, -2, 2**40], dtype=np.int64))


TEXT_AS_BYTES = [[b"cat"], ["h\u00e9".encode()]]


def bytes_output() -> InferOutput:
    """BYTES as a runtime may hand them back: bytes and str mixed."""
    data = np.empty((2, 1), dtype=object)
    data[:] = [[b"cat"], ["h\u00e9"]]
    return InferOutput("text", "BYTES", (2, 1), data)


def split(encoded: rest_codec.EncodedResponse) -> tuple[dict[str, Any], bytes]:
    """The JSON header (parsed) and the binary part, split where the codec says."""
    assert encoded.header_length is not None
    return orjson.loads(encoded.body[: encoded.header_length]), encoded.body[encoded.header_length :]


def binary_tensors(document: dict[str, Any], binary: bytes) -> dict[str, np.ndarray]:
    """Each binary output's array, taking ``binary_data_size`` bytes in order; all bytes must be claimed."""
    arrays = {}
    offset = 0
    for entry in document["outputs"]:
        size = entry.get("parameters", {}).get("binary_data_size")
        if size is None:
            continue
        arrays[entry["name"]] = raw.decode(binary[offset : offset + size], entry["datatype"], tuple(entry["shape"]), "")
        offset += size
    assert offset == len(binary)
    return arrays


def test_encode_json_only() -> None:
    encoded = rest_codec.encode_response(
        response(fp16_output(), int_output(), bytes_output(), response_id="r-9", flag=True), request_for({})
    )

    assert encoded.header_length is None
    assert orjson.loads(encoded.body) == {
        "model_name": "m",
        "model_version": "2",
        "id": "r-9",
        "parameters": {"flag": True},
        "outputs": [
            {"name": "half", "datatype": "FP16", "shape": [2, 2], "data": [0.5, -1.5, 2.0, 65504.0]},
            {"name": "label", "datatype": "INT64", "shape": [3], "data": [1, -2, 2**40]},
            {"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": ["cat", "h\u00e9"]},
        ],
    }


def test_encode_leaves_out_an_absent_id_and_empty_parameters() -> None:
    document = orjson.loads(rest_codec.encode_response(response(int_output()), request_for({})).body)

    assert set(document) == {"model_name", "model_version", "outputs"}
    assert set(document["outputs"][0]) == {"name", "datatype", "shape", "data"}


def test_encode_all_binary_when_the_request_asks_for_binary_data_output() -> None:
    outputs = (fp16_output(), int_output(), bytes_output())
    request = request_for({"parameters": {"binary_data_output": True}})

    document, binary = split(rest_codec.encode_response(response(*outputs), request))

    assert [entry["parameters"]["binary_data_size"] for entry in document["outputs"]] == [8, 24, 14]
    assert all("data" not in entry for entry in document["outputs"])
    arrays = binary_tensors(document, binary)
    for output in outputs[:2]:
        np.testing.assert_array_equal(arrays[output.name], output.data)
        assert arrays[output.name].dtype == output.data.dtype
    assert arrays["text"].tolist() == TEXT_AS_BYTES


def test_encode_per_output_binary_data_true_overrides_the_default() -> None:
    request = request_for({"outputs": [{"name": "half", "parameters": {"binary_data": True}}, {"name": "label"}]})

    document, binary = split(rest_codec.encode_response(response(fp16_output(), int_output()), request))

    half, label = document["outputs"]
    assert half["parameters"] == {"binary_data_size": 8}
    assert "data" not in half
    assert label["data"] == [1, -2, 2**40]
    assert "parameters" not in label
    np.testing.assert_array_equal(binary_tensors(document, binary)["half"], fp16_output().data)


def test_encode_per_output_binary_data_false_overrides_binary_data_output() -> None:
    request = request_for(
        {
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "label", "parameters": {"binary_data": False}}, {"name": "text"}, {"name": "half"}],
        }
    )

    document, binary = split(rest_codec.encode_response(response(fp16_output(), int_output(), bytes_output()), request))

    half, label, text = document["outputs"]
    assert label["data"] == [1, -2, 2**40]
    assert "data" not in half
    assert "data" not in text
    arrays = binary_tensors(document, binary)
    assert set(arrays) == {"half", "text"}
    np.testing.assert_array_equal(arrays["half"], fp16_output().data)
    assert arrays["text"].tolist() == TEXT_AS_BYTES


def test_encode_keeps_output_parameters_beside_binary_data_size() -> None:
    output = InferOutput("label", "INT64", (1,), np.array([5], dtype=np.int64), parameters={"unit": "cm"})
    request = request_for({"parameters": {"binary_data_output": True}})

    document, _ = split(rest_codec.encode_response(response(output), request))

    assert document["outputs"][0]["parameters"] == {"unit": "cm", "binary_data_size": 8}
    assert output.parameters == {"unit": "cm"}


def test_encode_non_utf8_bytes_in_json_is_an_error() -> None:
    data = np.empty(1, dtype=object)
    data[0] = b"\xff"

    with pytest.raises(InvalidRequest) as caught:
        rest_codec.encode_response(response(InferOutput("blob", "BYTES", (1,), data)), request_for({}))

    assert "output 'blob'" in caught.value.message


def test_encode_non_utf8_bytes_as_binary() -> None:
    data = np.empty(1, dtype=object)
    data[0] = b"\xff"
    request = request_for({"outputs": [{"name": "blob", "parameters": {"binary_data": True}}]})

    document, binary = split(rest_codec.encode_response(response(InferOutput("blob", "BYTES", (1,), data)), request))

    assert binary == b"\x01\x00\x00\x00\xff"
    assert document["outputs"][0]["parameters"] == {"binary_data_size": 5}


def test_encoded_responses_parse_with_tritonclient() -> None:
    outputs = (fp16_output(), int_output(), bytes_output())
    request = request_for({"outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "text"}]})
    encoded = rest_codec.encode_response(response(*outputs, response_id="r-1"), request)

    result = triton_http.InferenceServerClient.parse_response_body(encoded.body, header_length=encoded.header_length)

    assert result.get_response()["id"] == "r-1"
    np.testing.assert_array_equal(result.as_numpy("half"), fp16_output().data)
    np.testing.assert_array_equal(result.as_numpy("label"), int_output().data)
    assert result.as_numpy("text").tolist() == [["cat"], ["h\u00e9"]]  # JSON BYTES come back as text
