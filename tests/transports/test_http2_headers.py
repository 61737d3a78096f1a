"""HPACK decoding with the block cache: whatever a real encoder sends, the
cached decoder must agree with a plain decoder, block by block."""

from __future__ import annotations

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.transports.http2.frames import ProtocolViolation
from turnout.transports.http2.headers import HeaderDecoder, _changes_no_table, encode

NAMES = [":path", "grpc-timeout", "content-type", "x-custom", "te", "user-agent"]
VALUES = ["/a", "/inference.GRPCInferenceService/ModelInfer", "1S", "500m", "application/grpc", "trailers", "v" * 40]

header_sets = st.lists(
    st.lists(
        st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), min_size=1, max_size=6, unique_by=lambda h: h[0]
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(header_sets, st.sampled_from([0, 64, 256, 4096]), st.booleans())
def test_cached_decoding_agrees_with_plain_decoding(
    blocks: list[list[tuple[str, str]]], table_size: int, huffman: bool
) -> None:
    encoder = hpack.Encoder()
    encoder.header_table_size = table_size  # small tables evict: indices shift under the cache
    plain, cached = hpack.Decoder(), HeaderDecoder(64 * 1024)
    for headers in blocks + blocks:  # repeats are what the cache serves
        block = encoder.encode(headers, huffman=huffman)
        assert cached.decode(block) == dict(plain.decode(block))


def test_steady_state_blocks_are_served_from_the_cache() -> None:
    encoder, decoder = hpack.Encoder(), HeaderDecoder(64 * 1024)
    headers = [(":path", "/x"), ("te", "trailers")]
    first = encoder.encode(headers)
    second = encoder.encode(headers)
    assert not _changes_no_table(first)  # inserts into the table
    assert _changes_no_table(second)  # references only
    assert decoder.decode(first) == decoder.decode(second) == dict(headers)
    assert decoder.decode(second) is decoder.decode(second)


def test_the_constant_literal_blocks_turnout_sends_are_cacheable() -> None:
    block = encode([(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "0")])
    assert _changes_no_table(block)
    assert HeaderDecoder(1024).decode(block) == {
        ":status": "200",
        "content-type": "application/grpc",
        "grpc-status": "0",
    }


def test_a_malformed_block_is_a_connection_error() -> None:
    with pytest.raises(ProtocolViolation, match="bad header block"):
        HeaderDecoder(1024).decode(b"\x80")  # index 0 does not exist
    with pytest.raises(ProtocolViolation):
        HeaderDecoder(100).decode(hpack.Encoder().encode([("x-big", "v" * 200)]))  # over the list size limit
