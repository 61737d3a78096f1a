"""The stream envelope, pure: what is accepted, what is refused and why, and
what a result, an error and a dead letter hold."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from turnout.errors import InvalidRequest
from turnout.protocol.limits import DEFAULT_LIMITS
from turnout.protocol.types import InferenceResponse, InferOutput
from turnout.streams.envelope import (
    UnreadableEnvelope,
    dead_letter_fields,
    decode,
    error_fields,
    open_envelope,
    reply_stream_of,
    request_id_of,
    response_fields,
)

REQUEST = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.5]}]})


def test_a_request_without_an_id_takes_its_entry_id() -> None:
    envelope = open_envelope("5-0", {b"v": b"1", b"reply_to": b"out", b"request": REQUEST})
    request = decode(envelope, "m", DEFAULT_LIMITS)
    assert request.id == "5-0" and request.model_name == "m" and request.model_version is None
    np.testing.assert_array_equal(request.inputs[0].data, [[1.5, 2.5]])


def test_a_version_and_binary_tensors() -> None:
    header = orjson.dumps(
        {"id": "a", "inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]}
    )
    fields = {
        b"v": b"1",
        b"reply_to": b"out",
        b"request": header + np.array([3, 4], dtype=np.float32).tobytes(),
        b"header_length": str(len(header)).encode(),
        b"model_version": b"2",
    }
    request = decode(open_envelope("1-0", fields), "m", DEFAULT_LIMITS)
    assert request.id == "a" and request.model_version == "2"
    np.testing.assert_array_equal(request.inputs[0].data, [3, 4])


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({b"reply_to": b"out", b"request": REQUEST}, "envelope version must be '1', found none"),
        ({b"v": b"2", b"reply_to": b"out", b"request": REQUEST}, "found '2'"),
        ({b"v": b"1", b"request": REQUEST}, "no 'reply_to' stream"),
        ({b"v": b"1", b"reply_to": b"out"}, "no 'request' field"),
        ({b"v": b"1", b"reply_to": b"out", b"request": REQUEST, b"header_length": b"x"}, "must be a byte count"),
        ({b"v": b"1", b"reply_to": b"\xff", b"request": REQUEST}, "'reply_to' is not UTF-8"),
    ],
)
def test_unreadable_envelopes_say_why(fields: dict[bytes, bytes], reason: str) -> None:
    with pytest.raises(UnreadableEnvelope, match=reason):
        open_envelope("1-0", fields)


def test_a_malformed_request_is_the_clients_error_with_its_id_kept() -> None:
    body = b'{"id": "r7", "inputs": []}'
    envelope = open_envelope("1-0", {b"v": b"1", b"reply_to": b"out", b"request": body})
    with pytest.raises(InvalidRequest, match="non-empty list"):
        decode(envelope, "m", DEFAULT_LIMITS)
    assert request_id_of(envelope) == "r7"
    garbage = open_envelope("1-0", {b"v": b"1", b"reply_to": b"out", b"request": b"{nope"})
    assert request_id_of(garbage) is None
    assert reply_stream_of({b"reply_to": b"out"}) == "out" and reply_stream_of({}) is None


def test_results_errors_and_dead_letters() -> None:
    envelope = open_envelope("9-1", {b"v": b"1", b"reply_to": b"out", b"request": REQUEST})
    request = decode(envelope, "m", DEFAULT_LIMITS)
    output = InferOutput("y", "FP32", (1,), np.array([0.25], dtype=np.float32))
    fields = response_fields(envelope, request, InferenceResponse("m", "3", [output], id=request.id))
    assert fields["kind"] == "response" and fields["id"] == "9-1" and fields["entry"] == "9-1"
    assert fields["model_version"] == "3" and "header_length" not in fields
    assert isinstance(fields["response"], bytes)
    assert orjson.loads(fields["response"])["outputs"][0]["data"] == [0.25]

    error = error_fields("9-1", None, "m", "invalid", "bad shape")
    assert error["id"] == "9-1" and error["code"] == "invalid"
    assert isinstance(error["error"], bytes) and orjson.loads(error["error"]) == {"error": "bad shape"}

    letter = dead_letter_fields("9-1", {b"v": b"1", b"request": REQUEST}, "s", "failed 3 deliveries", 3)
    assert letter[b"request"] == REQUEST and letter["dead_reason"] == "failed 3 deliveries"
    assert letter["dead_deliveries"] == "3" and letter["dead_entry"] == "9-1" and letter["dead_stream"] == "s"
