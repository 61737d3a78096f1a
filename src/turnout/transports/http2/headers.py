"""HPACK header blocks (RFC 7541) for the gRPC transport.

Decoding is the ``hpack`` library's; what this module adds is a cache, because
a gRPC peer repeats the same headers on every call: after the first calls a
client's encoder sends them as one-byte references into the dynamic table,
and a server's trailers are often constant literals. A block that changes no
table (only indexed fields and literals without indexing) means the same thing
until another block changes the table: such blocks are cached by their bytes,
with what the server makes of them (the request's headers, already checked by
``fields``, or why they are malformed), and the caches are emptied whenever
any other block is decoded. That takes header decoding from ~17 µs to a dict
lookup on the steady path.

The CPU a block costs stays proportional to its size, under ~0.5 µs a byte
(measured: Huffman strings ~0.3, many small literals before a long one ~0.4;
the library's header-list limit bounds the fields a block may hold): dynamic
table size updates, ~3.6 µs each and carrying no field, are limited to the
two RFC 7541 section 4.2 allows at a block's start (one 1 MiB block of them
took 1.28 s), integers to 5 bytes, and the caller caps a block's size.

Encoding needs no table: responses use the static table and literals without
indexing, so the blocks are constant bytes built once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import hpack

from turnout.transports.http2 import fields
from turnout.transports.http2.fields import Malformed
from turnout.transports.http2.frames import COMPRESSION_ERROR, ProtocolViolation

_CACHE_LIMIT = 256
_MAX_SIZE_UPDATES = 2  # RFC 7541 section 4.2: the smallest size since the last block, then the final one

T = TypeVar("T")
Headers = dict[str, str]


class HeaderDecoder:
    """One connection's HPACK decoding context: every block the peer sends
    must pass through it, in order, whatever becomes of its stream."""

    def __init__(self, max_header_list_size: int) -> None:
        self._decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        self._plain: dict[bytes, Headers] = {}
        self._requests: dict[bytes, Headers | Malformed] = {}
        self._trailers: dict[bytes, Headers | Malformed] = {}

    def decode(self, block: bytes) -> Headers:
        """Names lower-cased by the sender (HTTP/2 requires it); a repeated
        name keeps its last value. Unchecked: for a client reading responses."""
        return self._decoded(block, self._plain, _as_dict)

    def request(self, block: bytes) -> Headers | Malformed:
        """A request's header block, checked as RFC 9113 section 8 asks."""
        cached = self._requests.get(block)  # the steady path, without a call more
        return cached if cached is not None else self._decoded(block, self._requests, fields.request)

    def trailers(self, block: bytes) -> Headers | Malformed:
        """A request's trailer block, checked as RFC 9113 section 8 asks."""
        return self._decoded(block, self._trailers, fields.trailers)

    def _decoded(self, block: bytes, cache: dict[bytes, T], shape: Callable[[list[tuple[str, str]]], T]) -> T:
        cached = cache.get(block)
        if cached is not None:
            return cached
        if block and block[0] & 0xE0 == 0x20:
            _count_size_updates(block)
        try:
            decoded = self._decoder.decode(block, raw=False)
        except hpack.HPACKError as exc:  # includes an over-long header list
            # the library's message may quote the block: name the error only
            raise ProtocolViolation(COMPRESSION_ERROR, f"bad header block ({type(exc).__name__})") from None
        result = shape([(str(name), str(value)) for name, value in decoded])
        if _changes_no_table(block):
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[block] = result
        else:  # this block may have changed the dynamic table: old meanings are gone
            self._plain.clear()
            self._requests.clear()
            self._trailers.clear()
        return result


def _as_dict(decoded: list[tuple[str, str]]) -> Headers:
    return dict(decoded)


def _count_size_updates(block: bytes) -> None:
    """A block opens with at most two dynamic table size updates (001xxxxx);
    the library refuses those after a field, but not a block of nothing else."""
    position, count = 0, 0
    try:
        while position < len(block) and block[position] & 0xE0 == 0x20:
            count += 1
            if count > _MAX_SIZE_UPDATES:
                raise ProtocolViolation(COMPRESSION_ERROR, "more than two table size updates in a header block")
            _, position = _read_integer(block, position, 5)
    except IndexError:
        raise ProtocolViolation(COMPRESSION_ERROR, "a header block cut short") from None


def _changes_no_table(block: bytes) -> bool:
    """True when every field is indexed (1xxxxxxx) or a literal without
    indexing / never indexed (000xxxxx); false for literals with incremental
    indexing (01xxxxxx), table size updates (001xxxxx), or a malformed block."""
    if block and min(block) >= 0x80 and max(block) < 0xFF:
        return True  # the common case, one-byte references only
    position, size = 0, len(block)
    try:
        while position < size:
            first = block[position]
            if first & 0x80:
                _, position = _read_integer(block, position, 7)
            elif first & 0xE0:
                return False
            else:
                name_index, position = _read_integer(block, position, 4)
                if name_index == 0:
                    position = _skip_string(block, position)
                position = _skip_string(block, position)
    except IndexError:
        return False
    return position == size


def _read_integer(block: bytes, position: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = block[position] & limit
    position += 1
    if value < limit:
        return value, position
    shift = 0
    while True:
        byte = block[position]
        position += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position
        if shift > 28:  # past 2**32: no size this server accepts (and big shifts cost quadratic time)
            raise IndexError("an HPACK integer too long")


def _skip_string(block: bytes, position: int) -> int:
    length, position = _read_integer(block, position, 7)
    if position + length > len(block):
        raise IndexError("string runs past the block")
    return position + length


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode(fields: list[tuple[str, str]]) -> bytes:
    """A header block of literals without indexing (new names; no Huffman).
    ``:status: 200`` uses its static-table entry."""
    parts = []
    for name, value in fields:
        if name == ":status" and value == "200":
            parts.append(b"\x88")
            continue
        raw_name, raw_value = name.encode("ascii"), value.encode("utf-8")
        parts += [b"\x00", _integer(len(raw_name), 7, 0), raw_name, _integer(len(raw_value), 7, 0), raw_value]
    return b"".join(parts)
