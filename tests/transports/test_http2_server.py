"""turnout's HTTP/2 server on a real socket, with an echo service on top: a
real grpcio client for round trips (large messages, many at once), and raw
frames for what a well-behaved client never does (tiny windows, bad prefaces,
oversized bodies, resets)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import grpc
import hpack
import pytest

from tests.support import eventually
from turnout.transports.grpc import wire
from turnout.transports.http2 import frames as f
from turnout.transports.http2.limits import Http2Limits
from turnout.transports.http2.server import Http2Server, Reply, Request, Screen, admit_all

ECHO = "/test.Echo/Echo"
SLOW = "/test.Echo/Slow"
BIG = "/test.Echo/Big"
BIG_REPLY = wire.frame(b"b" * (2 << 20))


class EchoService:
    """Answers a message with itself, as gRPC; ``Slow`` waits until cancelled
    or released (``running`` counts those waiting), ``Big`` answers 2 MiB."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()
        self.bodies: list[bytes | None] = []
        self.running = 0

    async def handle(self, request: Request) -> Reply:
        self.bodies.append(request.body)
        if request.body is None:
            return Reply(wire.error_head(wire.Status.RESOURCE_EXHAUSTED, "too large"))
        path = request.headers.get(":path")
        if path == BIG:
            return Reply(wire.RESPONSE_HEAD, BIG_REPLY, wire.OK_TRAILERS)
        if path == SLOW:
            self.running += 1
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
            finally:
                self.running -= 1
        message = wire.unframe(request.body, request.headers.get("grpc-encoding"), 64 * 1024 * 1024)
        return Reply(wire.RESPONSE_HEAD, wire.frame(message), wire.OK_TRAILERS)


@asynccontextmanager
async def serving(
    limit: int = 64 * 1024 * 1024, read_timeout: float = 30.0, screen: Screen = admit_all, **options: Any
) -> AsyncIterator[tuple[int, EchoService, Http2Server]]:
    """An echo server on a free port; ``options`` go to ``Http2Server`` (limits, gate, budget, ...)."""
    service = EchoService()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    options["limits"] = replace(options.get("limits") or Http2Limits(), read_timeout=read_timeout)
    server = Http2Server(service.handle, limit, screen, **options)
    await server.start(sock)
    try:
        yield sock.getsockname()[1], service, server
    finally:
        await server.shutdown(1.0)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def echo_call(channel: grpc.aio.Channel, path: str = ECHO) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    return channel.unary_unary(path, request_serializer=None, response_deserializer=None)


@pytest.mark.parametrize("size", [0, 10, 100_000, 5_000_000])
def test_grpcio_round_trip(size: int) -> None:
    """5 MB exceeds the 4 MiB stream window turnout grants: it must credit the stream as data arrives."""

    async def scenario() -> None:
        options = [("grpc.max_receive_message_length", -1)]
        async with (
            serving() as (port, _, _),
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel,
        ):
            message = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            assert await echo_call(channel)(message, timeout=10) == message

    run(scenario)


def test_many_concurrent_calls_share_the_connection_window() -> None:
    async def scenario() -> None:
        async with serving() as (port, _, _), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = echo_call(channel)
            messages = [bytes([i]) * 300_000 for i in range(80)]  # 24 MB in flight > the 16 MiB connection window
            answers = await asyncio.gather(*(call(m, timeout=20) for m in messages))
            assert answers == messages

    run(scenario)


def test_grpcio_compressed_request() -> None:
    async def scenario() -> None:
        async with serving() as (port, _, _), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            message = b"abc" * 10_000
            answer = await echo_call(channel)(message, timeout=5, compression=grpc.Compression.Gzip)
            assert answer == message

    run(scenario)


def test_unknown_method_and_refused_body_reach_the_client_as_statuses() -> None:
    async def scenario() -> None:
        async with serving(limit=1000) as (port, service, _), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await echo_call(channel)(b"x" * 5000, timeout=5)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert service.bodies == [None]
            assert await echo_call(channel)(b"small", timeout=5) == b"small"  # the connection still serves

    run(scenario)


# raw frames


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.headers: dict[str, str] = {}  # of the last HEADERS frame read

    @classmethod
    async def connect(
        cls, port: int, window: int = 1 << 20, preface: bytes = f.PREFACE, tls: ssl.SSLContext | None = None
    ) -> RawClient:
        hostname = "localhost" if tls is not None else None
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname=hostname)
        writer.write(preface + f.settings({f.INITIAL_WINDOW_SIZE: window}))
        return cls(reader, writer)

    def request(
        self, stream_id: int, path: str = ECHO, end_stream: bool = False, fields: list[tuple[str, str]] | None = None
    ) -> None:
        """A gRPC request's HEADERS, or one of the given ``fields``."""
        block = self.encoder.encode(
            fields if fields is not None else
            [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
             ("content-type", "application/grpc"), ("te", "trailers")]
        )  # fmt: skip
        flags = f.END_HEADERS | (f.END_STREAM if end_stream else 0)
        self.writer.write(f.frame(f.HEADERS, flags, stream_id, block))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def call(self, stream_id: int, message: bytes, path: str = ECHO) -> None:
        """A whole unary request: headers, then the message, ending the stream."""
        self.request(stream_id, path)
        self.send(f.frame(f.DATA, f.END_STREAM, stream_id, wire.frame(message)))

    async def frame(self) -> tuple[int, int, int, bytes]:
        header = await asyncio.wait_for(self.reader.readexactly(9), 5)
        high, low, kind, flags, stream_id = f.HEADER.unpack(header)
        payload = await asyncio.wait_for(self.reader.readexactly((high << 8) | low), 5)
        return kind, flags, stream_id, payload

    async def until(self, kind: int, stream_id: int | None = None) -> tuple[int, bytes]:
        """Frames up to the first of ``kind`` (on ``stream_id``): its flags and payload."""
        while True:
            got, flags, sid, payload = await self.frame()
            if got == f.HEADERS:
                self.headers = dict(self.decoder.decode(payload))
            if got == kind and (stream_id is None or sid == stream_id):
                return flags, payload

    async def goaway(self) -> int:
        """Frames up to GOAWAY: its error code."""
        _, payload = await self.until(f.GOAWAY)
        return int(struct.unpack(">II", payload[:8])[1])

    async def reset_code(self, stream_id: int) -> int:
        _, payload = await self.until(f.RST_STREAM, stream_id)
        return int(struct.unpack(">I", payload)[0])

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (what it sent before
        is skipped); then the client closes its end too."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except TimeoutError:
            return False
        except ConnectionError:  # aborted: reset rather than closed
            pass
        self.writer.close()
        return True

    def close(self) -> None:
        self.writer.close()


def test_a_tiny_client_window_is_respected() -> None:
    async def scenario() -> None:
        async with serving() as (port, _, _):
            client = await RawClient.connect(port, window=10)
            client.request(1)
            message = wire.frame(b"y" * 95)  # 100 bytes back, in windows of 10
            client.send(f.frame(f.DATA, f.END_STREAM, 1, message))
            received = b""
            while len(received) < len(message):
                flags, payload = await client.until(f.DATA, 1)
                assert len(payload) <= 10
                received += payload
                if len(received) < len(message):  # (the last chunk comes with the trailers)
                    with pytest.raises(TimeoutError):  # nothing more until the window opens again
                        await asyncio.wait_for(client.reader.readexactly(1), 0.05)
                client.send(f.window_update(1, len(payload)) + f.window_update(0, len(payload)))
            assert received == message
            flags, _ = await client.until(f.HEADERS, 1)
            assert flags & f.END_STREAM and client.headers["grpc-status"] == "0"
            client.close()

    run(scenario)


def test_an_oversized_body_is_refused_before_it_ends() -> None:
    async def scenario() -> None:
        async with serving(limit=1000) as (port, service, _):
            client = await RawClient.connect(port)
            client.request(1)
            client.send(f.frame(f.DATA, 0, 1, b"z" * 2000))  # no END_STREAM: still "uploading"
            await client.until(f.HEADERS, 1)
            assert client.headers["grpc-status"] == str(int(wire.Status.RESOURCE_EXHAUSTED))
            _, payload = await client.until(f.RST_STREAM, 1)
            assert struct.unpack(">I", payload)[0] == f.NO_ERROR  # "stop sending", per gRPC
            assert service.bodies == [None]
            client.send(f.frame(f.DATA, f.END_STREAM, 1, b"late"))  # the rest arrives: dropped, no error
            client.call(3, b"ok")
            _flags, payload = await client.until(f.DATA, 3)
            assert payload == wire.frame(b"ok")
            client.close()

    run(scenario)


@pytest.mark.parametrize(
    "opening",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # HTTP/1.1 at the gRPC port
        f.PREFACE + f.frame(f.HEADERS, f.END_HEADERS, 2, b"\x82"),  # an even stream id
        f.PREFACE + f.frame(f.DATA, 0, 7, b"x"),  # DATA on a stream never opened
        f.PREFACE + f.frame(f.HEADERS, f.END_HEADERS, 1, b"\x80"),  # an HPACK index that does not exist
        f.PREFACE + f.frame(f.PING, 0, 0, b"short"),
        f.PREFACE + f.frame(f.SETTINGS, 0, 0, b"12345"),
        f.PREFACE + f.frame(f.HEADERS, 0, 1, b"\x82") + f.frame(f.PING, 0, 0, bytes(8)),  # no CONTINUATION
        f.PREFACE + f.HEADER.pack(0xFFFF, 0xFF, f.DATA, 0, 1),  # a 16 MiB frame
    ],
)
def test_protocol_violations_close_the_connection_and_nothing_else(opening: bytes) -> None:
    async def scenario() -> None:
        async with serving() as (port, _, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(opening)
            received = b""
            while chunk := await asyncio.wait_for(reader.read(65536), 5):
                received += chunk
            assert bytes([f.GOAWAY]) in received  # a GOAWAY came before the close
            writer.close()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                assert await echo_call(channel)(b"still here", timeout=5) == b"still here"

    run(scenario)


def test_ping_is_answered_and_unknown_frames_are_ignored() -> None:
    async def scenario() -> None:
        async with serving() as (port, _, _):
            client = await RawClient.connect(port)
            client.send(f.frame(0xEE, 0, 0, b"whatever") + f.frame(f.PING, 0, 0, b"12345678"))
            flags, payload = await client.until(f.PING)
            assert flags & f.ACK and payload == b"12345678"
            client.close()

    run(scenario)


def test_a_reset_cancels_the_handler() -> None:
    async def scenario() -> None:
        async with serving() as (port, service, _):
            client = await RawClient.connect(port)
            client.call(1, b"x", SLOW)
            await eventually(lambda: service.running == 1, "the handler running")
            client.send(f.rst_stream(1, f.CANCEL))
            await asyncio.wait_for(service.cancelled.wait(), 5)
            client.call(3, b"next")  # the connection carries on
            _flags, payload = await client.until(f.DATA, 3)
            assert payload == wire.frame(b"next")
            client.close()

    run(scenario)


def test_shutdown_finishes_open_calls_and_refuses_new_ones() -> None:
    async def scenario() -> None:
        async with serving() as (port, service, server):
            client = await RawClient.connect(port)
            client.call(1, b"in flight", SLOW)
            await eventually(lambda: service.running == 1, "the call in flight")
            stopping = asyncio.create_task(server.shutdown(5.0))
            _, payload = await client.until(f.GOAWAY)
            assert struct.unpack(">II", payload[:8]) == (1, f.NO_ERROR)
            client.request(3)  # after GOAWAY: refused
            _, payload = await client.until(f.RST_STREAM, 3)
            assert struct.unpack(">I", payload)[0] == f.REFUSED_STREAM
            service.release.set()
            _flags, payload = await client.until(f.DATA, 1)
            assert payload == wire.frame(b"in flight")
            await asyncio.wait_for(stopping, 5)
            await asyncio.wait_for(client.reader.read(), 5)  # returns at EOF: closed after the last stream
            client.close()

    run(scenario)


def test_a_screened_stream_is_refused_at_its_headers() -> None:
    """The screen answers before any body; a client still sending is told to stop."""

    async def scenario() -> None:
        service = EchoService()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)

        def screen(headers: dict[str, str], peer: str) -> Reply | None:
            if headers.get(":path") == SLOW:
                return Reply(wire.error_head(wire.Status.UNIMPLEMENTED, "not here"))
            return None

        server = Http2Server(service.handle, 1 << 20, screen)
        await server.start(sock)
        try:
            client = await RawClient.connect(sock.getsockname()[1])
            client.request(1, SLOW)  # headers only: the body never comes
            flags, _ = await client.until(f.HEADERS, 1)
            assert flags & f.END_STREAM
            assert client.headers["grpc-status"] == str(int(wire.Status.UNIMPLEMENTED))
            _, payload = await client.until(f.RST_STREAM, 1)
            assert struct.unpack(">I", payload)[0] == f.NO_ERROR
            assert service.bodies == []  # the handler never ran
            client.close()
        finally:
            await server.shutdown(1.0)

    run(scenario)


def test_a_request_that_trickles_in_is_reset_after_the_read_timeout() -> None:
    """A slowloris stream (headers and part of a message, then nothing) is reset
    with CANCEL when the read timeout passes; the handler never sees it, and
    the connection goes on serving."""

    async def scenario() -> None:
        async with serving(read_timeout=0.3) as (port, service, _):
            client = await RawClient.connect(port)
            client.request(1)
            client.send(f.frame(f.DATA, 0, 1, wire.frame(b"0123456789")[:8]))
            _, payload = await client.until(f.RST_STREAM, 1)
            assert struct.unpack(">I", payload)[0] == f.CANCEL
            assert service.bodies == []
            client.call(3, b"whole")  # a request that arrives in time is answered
            _, data = await client.until(f.DATA, 3)
            assert data == wire.frame(b"whole")
            client.close()

    run(scenario)
