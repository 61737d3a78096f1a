"""HTTP/2 frames (RFC 9113 section 4 and 6): type, flag, setting and error
numbers, and the encoders this server needs. Pure: bytes in, bytes out."""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADER = struct.Struct(">HBBBI")  # 24-bit length as 16 + 8 bits, type, flags, stream id
HEADER_SIZE = 9

# frame types
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# settings
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

# error codes
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
MAX_WINDOW = 2**31 - 1
MAX_FRAME_LIMIT = 2**24 - 1


class ProtocolViolation(Exception):
    """A connection error (RFC 9113 section 5.4.1): answered with GOAWAY, then the connection closes."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return HEADER.pack(size >> 8, size & 0xFF, kind, flags, stream_id) + payload


def settings(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", key, value) for key, value in values.items()))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))


# GOAWAY's debug data: a reason in words, never an echo of what the client sent
MAX_GOAWAY_REASON = 256


def goaway(last_stream_id: int, code: int, reason: str = "") -> bytes:
    debug = reason.encode("utf-8", "replace")[:MAX_GOAWAY_REASON]
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_stream_id, code) + debug)


def data_frames(stream_id: int, body: bytes | memoryview, max_frame: int, end_stream: bool) -> bytes:
    """``body`` as DATA frames of at most ``max_frame`` bytes; END_STREAM on the last if asked."""
    if len(body) <= max_frame:  # the common case: one frame, no slicing
        return frame(DATA, END_STREAM if end_stream else 0, stream_id, bytes(body))
    parts = []
    for start in range(0, len(body), max_frame):
        chunk = body[start : start + max_frame]
        last = start + max_frame >= len(body)
        parts.append(frame(DATA, END_STREAM if (last and end_stream) else 0, stream_id, bytes(chunk)))
    return b"".join(parts)


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % 6:
        raise ProtocolViolation(FRAME_SIZE_ERROR, "SETTINGS payload is not a multiple of 6 bytes")
    return [struct.unpack_from(">HI", payload, offset) for offset in range(0, len(payload), 6)]


def strip_padding(flags: int, payload: bytes, what: str) -> bytes:
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise ProtocolViolation(PROTOCOL_ERROR, f"{what} padding is longer than the frame")
    return payload[1 : len(payload) - payload[0]]
