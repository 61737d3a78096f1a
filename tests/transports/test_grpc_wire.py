"""gRPC's HTTP/2 conventions: timeouts, message framing and compression, status messages."""

from __future__ import annotations

import gzip
import zlib

import hpack
import pytest

from turnout.transports.grpc import wire
from turnout.transports.grpc.wire import GrpcError, Status


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1S", 1.0),
        ("250m", 0.25),
        ("30u", 30e-6),
        ("5n", 5e-9),
        ("2M", 120.0),
        ("1H", 3600.0),
        ("99999999m", 99999.999),
    ],
)
def test_timeouts(value: str, seconds: float) -> None:
    assert wire.parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "S", "1", "1s", "-1S", "123456789S", "1.5S", "\uff11S"])
def test_malformed_timeouts(value: str) -> None:
    with pytest.raises(GrpcError) as caught:
        wire.parse_timeout(value)
    assert caught.value.status == Status.INVALID_ARGUMENT


def test_framing_round_trip_and_compression() -> None:
    message = b"hello" * 100
    assert wire.unframe(wire.frame(message), None, 1000) == message
    for encoding, packed in (("gzip", gzip.compress(message)), ("deflate", zlib.compress(message))):
        body = b"\x01" + len(packed).to_bytes(4, "big") + packed
        assert wire.unframe(body, encoding, 1000) == message


@pytest.mark.parametrize(
    ("body", "encoding", "status", "text"),
    [
        (b"", None, Status.UNIMPLEMENTED, "no message"),
        (b"\x00\x00\x00\x00\x05abc", None, Status.INTERNAL, "cut short"),
        (b"\x00\x00\x00\x00\x01ab", None, Status.INTERNAL, "more than one message"),
        (b"\x02\x00\x00\x00\x01a", None, Status.INTERNAL, "unknown message flag"),
        (b"\x01\x00\x00\x00\x01a", None, Status.INTERNAL, "without a grpc-encoding"),
        (b"\x01\x00\x00\x00\x01a", "snappy", Status.UNIMPLEMENTED, "not supported"),
        (b"\x01\x00\x00\x00\x03abc", "gzip", Status.INTERNAL, "cannot decompress"),
    ],
)
def test_bad_bodies(body: bytes, encoding: str | None, status: Status, text: str) -> None:
    with pytest.raises(GrpcError) as caught:
        wire.unframe(body, encoding, 1000)
    assert caught.value.status == status
    assert text in caught.value.message


def test_a_decompression_bomb_stops_at_the_limit() -> None:
    packed = gzip.compress(bytes(50_000_000))  # ~50 KB that inflates to 50 MB
    body = b"\x01" + len(packed).to_bytes(4, "big") + packed
    with pytest.raises(GrpcError) as caught:
        wire.unframe(body, "gzip", 1_000_000)
    assert caught.value.status == Status.RESOURCE_EXHAUSTED


def test_messages_are_percent_encoded() -> None:
    assert wire.percent_encode("ok: 100% sûr\n") == "ok: 100%25 s%C3%BBr%0A"


def test_status_messages_are_bounded() -> None:
    """An error quoting a 4 KB method path answers with at most 512 bytes of it."""
    head = wire.error_head(Status.UNIMPLEMENTED, "unknown method /" + "é" * 4000)
    message = hpack.Decoder().decode(head)[-1]
    assert message[0] == "grpc-message"
    assert message[1].endswith("...") and len(message[1]) <= 3 * wire.MAX_MESSAGE_BYTES
    assert wire.bounded("short") == "short"
    cut = wire.bounded("x" * 600)
    assert len(cut) == wire.MAX_MESSAGE_BYTES and cut.endswith("...")
