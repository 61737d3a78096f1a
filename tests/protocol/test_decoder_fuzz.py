"""The tensor decoders on hostile input: whatever the bytes, a decoder returns
a request or raises the client's error (TurnoutError: 400 / 413), never
anything else (which would be a 500), and never hangs.

Arbitrary bytes find little of the structure, so most examples are built
from near-valid requests with one part replaced by an arbitrary value."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import orjson
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.errors import TurnoutError
from turnout.protocol import raw, rest_codec
from turnout.protocol.datatypes import DATATYPES
from turnout.protocol.limits import InputLimits
from turnout.streams.envelope import decode as decode_envelope
from turnout.streams.envelope import open_envelope, request_id_of
from turnout.transports.grpc import convert
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb

LIMITS = InputLimits(max_tensor_elements=10_000, max_bytes_element=1_000)
JSON_VALUES = st.recursive(
    # integers within 64 bits: what JSON encoders (orjson here) write
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
DATATYPE = st.sampled_from(sorted(DATATYPES)) | st.text(max_size=6)
SHAPE = st.lists(st.integers(min_value=-2, max_value=10**12), max_size=4) | JSON_VALUES


def decodes_or_refuses(decode: Any, *args: Any) -> None:
    with contextlib.suppress(TurnoutError):
        decode(*args)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.none() | st.integers(min_value=-5, max_value=400))
def test_rest_decoder_on_arbitrary_bytes(body: bytes, header_length: int | None) -> None:
    decodes_or_refuses(rest_codec.decode_request, body, header_length, "m", None, LIMITS)


@settings(max_examples=400, deadline=None)
@given(
    name=JSON_VALUES | st.just("x"),
    datatype=DATATYPE,
    shape=SHAPE,
    data=JSON_VALUES,
    parameters=JSON_VALUES | st.fixed_dictionaries({"binary_data_size": st.integers(-3, 50)}),
    extra=st.dictionaries(st.sampled_from(["id", "outputs", "parameters"]), JSON_VALUES, max_size=3),
    binary=st.binary(max_size=60),
)
def test_rest_decoder_on_near_valid_json(
    name: Any, datatype: Any, shape: Any, data: Any, parameters: Any, extra: dict[str, Any], binary: bytes
) -> None:
    header = orjson.dumps(
        {
            "inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data, "parameters": parameters}],
            **extra,
        }
    )
    decodes_or_refuses(rest_codec.decode_request, header, None, "m", None, LIMITS)
    decodes_or_refuses(rest_codec.decode_request, header + binary, len(header), "m", None, LIMITS)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(sorted(DATATYPES)), st.lists(st.integers(0, 40), max_size=3))
def test_raw_decoder_on_arbitrary_bytes(buffer: bytes, datatype: str, shape: list[int]) -> None:
    decodes_or_refuses(raw.decode, buffer, datatype, tuple(shape), "x")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_grpc_decoder_on_arbitrary_bytes(message: bytes) -> None:
    try:
        parsed = pb.ModelInferRequest.FromString(message)
    except DecodeError:
        return  # the service answers INVALID_ARGUMENT for these
    decodes_or_refuses(convert.decode_request, parsed, LIMITS)


@settings(max_examples=300, deadline=None)
@given(
    datatype=DATATYPE,
    shape=st.lists(st.integers(min_value=0, max_value=10**12), max_size=4),
    raw_contents=st.lists(st.binary(max_size=40), max_size=2),
    lengths=st.lists(st.integers(0, 2**32 - 1), max_size=3),
)
def test_grpc_decoder_on_near_valid_messages(
    datatype: str, shape: list[int], raw_contents: list[bytes], lengths: list[int]
) -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype=datatype, shape=shape)
    framed = b"".join(struct.pack("<I", n) for n in lengths)  # BYTES length prefixes pointing anywhere
    message.raw_input_contents.extend([*raw_contents, framed][:1] if raw_contents or lengths else [])
    decodes_or_refuses(convert.decode_request, message, LIMITS)


# The families of issue 15's fuzzer, at the decoder (tests/integration/test_fuzz_decoders.py
# sends them to a real server): each placed where a value goes in a valid request.
_SLOTS = [
    b"@",
    b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[@]}]}',
    b'{"inputs":[{"name":"x","datatype":"INT64","shape":[1],"data":@}]}',
    b'{"inputs":[{"name":"x","datatype":"FP32","shape":[@],"data":[1]}]}',
    b'{"inputs":[{"name":@,"datatype":"FP32","shape":[1],"data":[1]}]}',
    b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":@}}]}',
    b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}],"parameters":{"k":@}}',
    b'{"id":@,"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}]}',
]
NESTED = st.builds(
    lambda depth, pair, inner: pair[0] * depth + inner + pair[1] * depth,
    st.integers(1, 5000) | st.sampled_from([1023, 1024, 1025, 200_000]),
    st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]),
    st.sampled_from([b"", b"1", b'"s"']),
)
HUGE_NUMBERS = st.builds(
    lambda sign, digits, tail: sign + b"9" * digits + tail,
    st.sampled_from([b"", b"-"]),
    st.integers(19, 4000),
    st.sampled_from([b"", b".5", b"e400", b"e-400"]),
)
BAD_UTF8 = st.binary(min_size=1, max_size=8).filter(lambda b: max(b) >= 0x80).map(lambda b: b'"' + b + b'"')


@settings(max_examples=200, deadline=None)
@given(slot=st.sampled_from(_SLOTS), value=NESTED | HUGE_NUMBERS | BAD_UTF8, binary=st.none() | st.binary(max_size=16))
def test_rest_decoder_on_the_hostile_families(slot: bytes, value: bytes, binary: bytes | None) -> None:
    """Deep nesting, 4,000-digit numbers, invalid UTF-8: a request or the
    client's error (simdjson's DEPTH_ERROR and BIGINT_ERROR, RuntimeErrors,
    were 500s), in the plain body, in a binary extension's JSON header, and
    in the orjson-parsed bodies (admin, stream envelopes)."""
    body = slot.replace(b"@", value)
    decodes_or_refuses(rest_codec.decode_request, body, None, "m", None, LIMITS)
    if binary is not None:
        decodes_or_refuses(rest_codec.decode_request, body + binary, len(body), "m", None, LIMITS)
    decodes_or_refuses(rest_codec.parse_object, body)
    envelope = open_envelope("1-0", {b"v": b"1", b"reply_to": b"r", b"request": body})
    decodes_or_refuses(decode_envelope, envelope, "m", LIMITS)
    request_id_of(envelope)  # never raises
