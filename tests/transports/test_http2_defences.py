"""turnout's HTTP/2 server against a hostile client breaking the protocol, in
process: malformed requests and trailers, a first frame other than SETTINGS,
frame and header block sizes, and the budgets for resets and for frames
without progress; with a raw client on a real socket and limits tight enough
that each test takes moments. A client that holds on to the server's
resources (reading pace, timeouts, the connection limit, and the doors: screen,
gate, body budget): test_http2_resources.py. The same attacks on a real
``turnout serve`` process, with a well-behaved client served throughout:
tests/integration/test_http2_attacks.py."""

from __future__ import annotations

import asyncio

import pytest

from tests.transports.http2_defence_support import answered
from tests.transports.test_http2_server import ECHO, SLOW, RawClient, run, serving
from turnout.transports.grpc import wire
from turnout.transports.http2 import frames as f
from turnout.transports.http2.limits import Http2Limits

GRPC = [
    (":method", "POST"), (":scheme", "http"), (":path", ECHO), (":authority", "x"),
    ("content-type", "application/grpc"), ("te", "trailers"),
]  # fmt: skip


# malformed requests (RFC 9113 section 8)


@pytest.mark.parametrize(
    "fields",
    [
        [*GRPC, ("X-Upper", "v")],
        *([*GRPC, (name, "x")] for name in ("connection", "keep-alive", "proxy-connection", "transfer-encoding")),
        [*GRPC, ("upgrade", "h2c")],
        [*GRPC[:5], ("te", "gzip")],
        [(":path", SLOW), *GRPC],  # a duplicate :path: which one would run?
        [*GRPC[:3], (":status", "200"), *GRPC[3:]],  # a response's pseudo-header
        [*GRPC[:3], (":protocol", "websocket"), *GRPC[3:]],  # extended CONNECT is not offered
        [GRPC[0], GRPC[1], GRPC[4], GRPC[2]],  # a pseudo-header after a regular field
        GRPC[1:],  # no :method
        [GRPC[0], *GRPC[2:]],  # no :scheme
        [*GRPC[:2], *GRPC[3:]],  # no :path
        [*GRPC[:2], (":path", ""), *GRPC[3:]],
        [*GRPC, ("x-a", "one\r\ntwo")],
        [*GRPC, ("x-a", " padded")],
        [*GRPC, ("", "nameless")],
    ],
)
def test_a_malformed_request_is_reset_and_never_handled(fields: list[tuple[str, str]]) -> None:
    async def scenario() -> None:
        async with serving() as (port, service, _):
            client = await RawClient.connect(port)
            client.request(1, fields=fields, end_stream=True)
            assert await client.reset_code(1) == f.PROTOCOL_ERROR
            await answered(client, 3, b"next")  # the connection, and its HPACK table, carry on
            assert service.bodies == [wire.frame(b"next")]
            client.close()

    run(scenario)


def test_malformed_trailers_reset_the_stream() -> None:
    async def scenario() -> None:
        async with serving() as (port, service, _):
            client = await RawClient.connect(port)
            client.request(1)
            client.send(f.frame(f.DATA, 0, 1, wire.frame(b"x")))
            client.send(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, client.encoder.encode([(":path", "/x")])))
            assert await client.reset_code(1) == f.PROTOCOL_ERROR
            client.request(3)  # well-formed trailers end a request
            client.send(f.frame(f.DATA, 0, 3, wire.frame(b"y")))
            client.send(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 3, client.encoder.encode([("x-t", "1")])))
            _, data = await client.until(f.DATA, 3)
            assert data == wire.frame(b"y")
            assert service.bodies == [wire.frame(b"y")]
            client.close()

    run(scenario)


@pytest.mark.parametrize(
    "first",
    [
        f.frame(f.PING, 0, 0, bytes(8)),
        f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, b"\x83\x86\x84"),
        f.frame(f.SETTINGS, f.ACK, 0),
        f.frame(f.WINDOW_UPDATE, 0, 0, b"\x00\x00\x01\x00"),
    ],
)
def test_the_first_frame_must_be_settings(first: bytes) -> None:
    async def scenario() -> None:
        async with serving() as (port, service, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            client = RawClient(reader, writer)
            client.send(f.PREFACE + first)
            assert await client.goaway() == f.PROTOCOL_ERROR
            assert await client.closed()
            assert service.bodies == []

    run(scenario)


# frame and header block sizes


def test_frames_are_at_most_16_kib() -> None:
    async def scenario() -> None:
        async with serving() as (port, _, _):
            client = await RawClient.connect(port)
            _, payload = await client.until(f.SETTINGS)
            advertised = dict(f.parse_settings(payload))
            assert advertised[f.MAX_FRAME_SIZE] == 16384
            client.request(1)
            client.send(f.frame(f.DATA, 0, 1, b"x" * 16384))  # the largest allowed
            client.send(f.frame(f.DATA, f.END_STREAM, 1, b"x" * 16385))
            assert await client.goaway() == f.FRAME_SIZE_ERROR
            assert await client.closed()

    run(scenario)


def test_table_size_updates_are_limited_to_two_per_block() -> None:
    """One 16 KiB HEADERS frame of table size updates: refused at the third,
    not decoded for a second (a 1 MiB one took 1.28 s before)."""

    async def scenario() -> None:
        async with serving() as (port, _, _):
            client = await RawClient.connect(port)
            client.send(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, b"\x20" * 16384))
            assert await client.goaway() == f.COMPRESSION_ERROR
            client.close()
            client = await RawClient.connect(port)
            client.send(f.frame(f.HEADERS, f.END_HEADERS, 1, b"\x3f\xe1\x1f\x20" + client.encoder.encode(GRPC)))
            client.send(f.frame(f.DATA, f.END_STREAM, 1, wire.frame(b"two are fine")))
            _, data = await client.until(f.DATA, 1)
            assert data == wire.frame(b"two are fine")
            client.close()

    run(scenario)


def test_continuation_frames_are_limited() -> None:
    async def scenario() -> None:
        async with serving() as (port, _, _):
            client = await RawClient.connect(port)
            client.send(f.frame(f.HEADERS, 0, 1, client.encoder.encode(GRPC)))
            for _ in range(9):
                client.send(f.frame(f.CONTINUATION, 0, 1))
            assert await client.goaway() == f.ENHANCE_YOUR_CALM
            client.close()
            client = await RawClient.connect(port)
            client.send(f.frame(f.HEADERS, 0, 1, client.encoder.encode(GRPC)))
            for _ in range(5):  # 80 KiB of header block: past the 64 KiB cap
                client.send(f.frame(f.CONTINUATION, 0, 1, b"\x00\x01a\x80" + b"\x00" * 16380))
            assert await client.goaway() == f.COMPRESSION_ERROR
            client.close()

    run(scenario)


# budgets: resets and frames without progress


def test_rapid_reset_is_answered_with_enhance_your_calm_and_the_handlers_stop() -> None:
    async def scenario() -> None:
        limits = Http2Limits(reset_burst=20, resets_per_second=0.01)
        async with serving(limits=limits) as (port, service, _):
            client = await RawClient.connect(port)
            for stream_id in range(1, 2 * 30, 2):
                client.call(stream_id, b"x", SLOW)
                client.send(f.rst_stream(stream_id, f.CANCEL))
            assert await client.goaway() == f.ENHANCE_YOUR_CALM
            assert await client.closed()
            await asyncio.sleep(0.05)
            assert service.running == 0  # no handler works on for a stream reset

    run(scenario)


def test_answered_calls_buy_resets_back() -> None:
    """A client that cancels a call now and then, between calls answered, never runs out."""

    async def scenario() -> None:
        limits = Http2Limits(reset_burst=3, resets_per_second=0.01)
        async with serving(limits=limits) as (port, _, _):
            client = await RawClient.connect(port)
            for stream_id in range(1, 4 * 20, 4):
                await answered(client, stream_id, b"ok")
                client.call(stream_id + 2, b"x", SLOW)
                client.send(f.rst_stream(stream_id + 2, f.CANCEL))
            await answered(client, 4 * 20 + 1, b"still served")
            client.close()

    run(scenario)


def test_streams_past_the_concurrency_limit_count_as_resets() -> None:
    async def scenario() -> None:
        limits = Http2Limits(max_concurrent_streams=2, reset_burst=5, resets_per_second=0.01)
        async with serving(limits=limits) as (port, _, _):
            client = await RawClient.connect(port)
            client.call(1, b"x", SLOW)
            client.call(3, b"x", SLOW)
            client.call(5, b"x")
            assert await client.reset_code(5) == f.REFUSED_STREAM
            for stream_id in range(7, 7 + 2 * 10, 2):
                client.call(stream_id, b"x")
            assert await client.goaway() == f.ENHANCE_YOUR_CALM
            client.close()

    run(scenario)


@pytest.mark.parametrize(
    "flood",
    [
        f.frame(f.PING, 0, 0, bytes(8)),
        f.frame(f.SETTINGS, 0, 0),
        f.frame(f.SETTINGS, f.ACK, 0),
        f.frame(f.DATA, 0, 1),  # empty, on an open stream
        f.frame(f.WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x01"),
        f.frame(f.PRIORITY, 0, 3, bytes(5)),
        f.frame(0xEE, 0, 0, b"unknown"),
        f.rst_stream(9, f.CANCEL),  # stream 9 was never used (closed by stream 11's opening)
    ],
)
def test_frames_without_progress_are_answered_with_enhance_your_calm(flood: bytes) -> None:
    async def scenario() -> None:
        limits = Http2Limits(glitch_burst=30, glitches_per_second=0.01)
        async with serving(limits=limits) as (port, _, _):
            client = await RawClient.connect(port)
            client.request(1)  # open, still sending its body
            client.request(11)
            client.send(flood * 60)
            assert await client.goaway() == f.ENHANCE_YOUR_CALM
            assert await client.closed()

    run(scenario)


def test_pings_between_calls_are_fine() -> None:
    async def scenario() -> None:
        limits = Http2Limits(glitch_burst=5, glitches_per_second=0.01)
        async with serving(limits=limits) as (port, _, _):
            client = await RawClient.connect(port)
            for stream_id in range(1, 2 * 30, 2):
                client.send(f.frame(f.PING, 0, 0, bytes(8)))
                await answered(client, stream_id, b"ok")
            client.close()

    run(scenario)


def test_a_settings_frame_carries_at_most_32_settings() -> None:
    async def scenario() -> None:
        async with serving() as (port, _, _):
            client = await RawClient.connect(port)
            client.send(f.settings({key: 1 for key in range(0x100, 0x100 + 33)}))
            assert await client.goaway() == f.ENHANCE_YOUR_CALM
            client.close()

    run(scenario)
