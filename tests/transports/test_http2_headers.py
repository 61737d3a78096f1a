"""HPACK decoding with the block cache: whatever a real encoder sends, the
cached decoder must agree with a plain decoder, block by block; what it
refuses (RFC 7541 table size updates, RFC 9113 malformed requests)."""

from __future__ import annotations

import time

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.transports.http2.fields import Malformed, request
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


def test_at_most_two_table_size_updates_open_a_block() -> None:
    decoder = HeaderDecoder(64 * 1024)
    assert decoder.decode(b"\x3f\xe1\x1f\x20\x82") == {":method": "GET"}  # 4096, then 0: fine
    with pytest.raises(ProtocolViolation, match="two table size updates"):
        decoder.decode(b"\x20\x20\x20\x82")
    with pytest.raises(ProtocolViolation):
        HeaderDecoder(1024).decode(b"\x82\x20")  # after a field
    with pytest.raises(ProtocolViolation):
        HeaderDecoder(1024).decode(b"\x3f" + b"\xff" * 16_000)  # an integer that never ends


def test_a_block_of_table_size_updates_costs_next_to_nothing() -> None:
    """One 1 MiB HEADERS frame of them took 1.28 s of CPU."""
    started = time.process_time()
    for _ in range(100):
        with pytest.raises(ProtocolViolation):
            HeaderDecoder(64 * 1024).request(b"\x20" * 16384)
    assert time.process_time() - started < 0.5  # ~50 ms each before


REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/a/B"), (":authority", "x"), ("te", "trailers")]


def test_requests_are_checked_and_the_verdict_cached() -> None:
    encoder, decoder = hpack.Encoder(), HeaderDecoder(64 * 1024)
    good, bad = REQUEST, [*REQUEST, ("X-Up", "v")]
    for _ in range(2):  # the second time from the table, and from the cache
        assert decoder.request(encoder.encode(good)) == dict(good)
        verdict = decoder.request(encoder.encode(bad))
        assert isinstance(verdict, Malformed) and "X-Up" in verdict.reason
    steady = encoder.encode(good)
    assert decoder.request(steady) is decoder.request(steady)
    assert decoder.trailers(encoder.encode([("grpc-status", "0")])) == {"grpc-status": "0"}
    assert isinstance(decoder.trailers(encoder.encode([(":path", "/x")])), Malformed)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([*REQUEST, ("connection", "close")], "connection-specific"),
        ([(":method", "GET"), *REQUEST], "repeated"),
        ([*REQUEST, (":status", "200")], "after a regular field"),
        ([(":status", "200"), *REQUEST], "not a request's"),
        (REQUEST[1:], "no :method"),
        ([*REQUEST[:2], (":path", ""), *REQUEST[3:]], "empty :path"),
        ([*REQUEST[:4], ("te", "gzip")], "te other than trailers"),
        ([*REQUEST, ("x", "a\x00b")], "forbidden character"),
        ([*REQUEST, ("x", "a\t")], "surrounding whitespace"),
        ([*REQUEST, ("b@d name", "v")], "not lower-case token"),
    ],
)
def test_malformed_requests(fields: list[tuple[str, str]], reason: str) -> None:
    verdict = request(fields)
    assert isinstance(verdict, Malformed) and reason in verdict.reason


def test_a_reason_never_quotes_a_long_name_whole() -> None:
    verdict = request([*REQUEST, ("X" * 10_000, "v")])
    assert isinstance(verdict, Malformed) and len(verdict.reason) < 200
