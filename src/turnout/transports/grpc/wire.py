"""gRPC over HTTP/2, the parts above frames (the gRPC "PROTOCOL-HTTP2" spec):
status codes, the ``grpc-timeout`` header, length-prefixed messages with
optional compression, and the response header blocks. Pure: no sockets."""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Iterable

from turnout.transports.http2.headers import encode

CONTENT_TYPE = "application/grpc"
ACCEPTED_ENCODINGS = "identity,gzip,deflate"
_PREFIX = struct.Struct(">BI")


class Status(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class GrpcError(Exception):
    def __init__(self, status: Status, message: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.metadata = metadata


RESPONSE_HEAD = encode(
    [(":status", "200"), ("content-type", CONTENT_TYPE), ("grpc-accept-encoding", ACCEPTED_ENCODINGS)]
)
OK_TRAILERS = encode([("grpc-status", "0")])

_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_timeout(value: str | None) -> float | None:
    """``grpc-timeout`` (at most 8 digits and a unit) in seconds; None when absent."""
    if value is None:
        return None
    digits, unit = value[:-1], value[-1:]
    if not (0 < len(digits) <= 8 and digits.isascii() and digits.isdigit()) or unit not in _UNITS:
        raise GrpcError(Status.INVALID_ARGUMENT, f"malformed grpc-timeout {value!r}")
    return int(digits) * _UNITS[unit]


def frame(message: bytes) -> bytes:
    return _PREFIX.pack(0, len(message)) + message


def unframe(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The one message of a unary request's body, decompressed if it says so."""
    if len(body) < _PREFIX.size:
        raise GrpcError(Status.INTERNAL if body else Status.UNIMPLEMENTED, "the request carries no message")
    compressed, length = _PREFIX.unpack_from(body)
    if len(body) != _PREFIX.size + length:
        what = "more than one message" if len(body) > _PREFIX.size + length else "a message cut short"
        raise GrpcError(Status.INTERNAL, f"a unary request must carry exactly one message; got {what}")
    message = body[_PREFIX.size :]
    if compressed == 0:
        return message
    if compressed != 1:
        raise GrpcError(Status.INTERNAL, f"unknown message flag {compressed}")
    if encoding in (None, "identity"):
        raise GrpcError(Status.INTERNAL, "a compressed message without a grpc-encoding")
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise GrpcError(
            Status.UNIMPLEMENTED,
            f"grpc-encoding {encoding!r} is not supported (use {ACCEPTED_ENCODINGS})",
        )
    inflater = zlib.decompressobj(wbits)
    try:
        plain = inflater.decompress(message, limit + 1)  # never more than the limit in memory
    except zlib.error as exc:
        raise GrpcError(Status.INTERNAL, f"cannot decompress the message ({encoding}): {exc}") from None
    if len(plain) > limit:
        raise GrpcError(Status.RESOURCE_EXHAUSTED, f"the decompressed message is larger than {limit} bytes")
    if not inflater.eof:
        raise GrpcError(Status.INTERNAL, f"the {encoding} message is cut short")
    return plain


def trailers(status: Status, message: str = "", metadata: Iterable[tuple[str, str]] = ()) -> bytes:
    fields = [("grpc-status", str(int(status)))]
    if message:
        fields.append(("grpc-message", percent_encode(bounded(message))))
    fields += metadata
    return encode(fields)


def error_head(status: Status, message: str, metadata: Iterable[tuple[str, str]] = ()) -> bytes:
    """A trailers-only answer: the response headers and the status in one block."""
    head = [(":status", "200"), ("content-type", CONTENT_TYPE)]
    return encode(head) + trailers(status, message, metadata)


# A status message's UTF-8 bytes, at most. Messages quote what the client sent
# (a method's path, a model's name): unbounded, a 4 KB :path sent once into
# the HPACK table made every 13-byte request cost a 12 KB answer and ~1.3 ms.
# 512 bytes leave room for any explanation turnout writes, while the answer
# to a hostile request stays small (one such answer: ~0.6 KB, ~10 us).
MAX_MESSAGE_BYTES = 512
_ELLIPSIS = "..."


def bounded(message: str) -> str:
    """``message`` cut to ``MAX_MESSAGE_BYTES`` of UTF-8 (never inside a
    character), ending in an ellipsis when cut."""
    if len(message) <= MAX_MESSAGE_BYTES // 4:  # four bytes a character at most: short enough
        return message
    raw = message.encode("utf-8")
    if len(raw) <= MAX_MESSAGE_BYTES:
        return message
    return raw[: MAX_MESSAGE_BYTES - len(_ELLIPSIS)].decode("utf-8", "ignore") + _ELLIPSIS


_ESCAPES = [chr(byte) if 0x20 <= byte <= 0x7E and byte != 0x25 else f"%{byte:02X}" for byte in range(256)]


def percent_encode(message: str) -> str:
    """``grpc-message``: UTF-8, with bytes outside printable ASCII and '%' as %XX."""
    if message.isascii() and message.isprintable() and "%" not in message:
        return message  # the common case: nothing to escape
    return "".join(map(_ESCAPES.__getitem__, message.encode("utf-8")))
