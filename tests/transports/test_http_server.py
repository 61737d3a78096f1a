"""turnout's HTTP/1.1 server on a real socket: keep-alive, pipelining,
100-continue, limits, malformed requests, shutdown."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from turnout.transports.asgi import Response
from turnout.transports.http_server import HttpServer

Handled = list[tuple[str, str, bytes | None]]


@asynccontextmanager
async def serving(
    limit: int = 100, delay: float = 0.0, arrived: asyncio.Event | None = None, read_timeout: float = 30.0
) -> AsyncIterator[tuple[int, Handled, HttpServer]]:
    handled: Handled = []

    async def handle(method: str, path: str, headers: dict[bytes, bytes], body: bytes | None, source: str) -> Response:
        handled.append((method, path, body))
        if arrived is not None:
            arrived.set()
        if delay:
            await asyncio.sleep(delay)  # a slow handler, to have requests in flight
        return Response(b'{"echo":"%s"}' % path.encode(), 200 if body is not None else 413)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    server = HttpServer(handle, limit, read_timeout=read_timeout)
    await server.start(sock)
    try:
        yield sock.getsockname()[1], handled, server
    finally:
        await server.shutdown(1.0)


async def exchange(port: int, data: bytes, until: Callable[[bytes], bool]) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    received = b""
    while not until(received):
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        received += chunk
    writer.close()
    return received


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def test_pipelined_requests_are_answered_in_order() -> None:
    async def scenario() -> None:
        async with serving() as (port, handled, _):
            requests = b"".join(b"POST /a%d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi" % i for i in range(3))
            reply = await exchange(port, requests, lambda r: r.count(b"HTTP/1.1 200") == 3)
        assert [h[1] for h in handled] == ["/a0", "/a1", "/a2"]
        assert reply.index(b'"/a0"') < reply.index(b'"/a1"') < reply.index(b'"/a2"')
        assert all(body == b"hi" for _, _, body in handled)

    run(scenario)


def test_expect_100_continue() -> None:
    async def scenario() -> None:
        async with serving() as (port, handled, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 100")
            writer.write(b"abc")
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
            writer.close()
        assert handled == [("POST", "/x", b"abc")]

    run(scenario)


def test_a_body_over_the_limit_reaches_the_handler_as_none() -> None:
    async def scenario() -> None:
        async with serving(limit=10) as (port, handled, _):
            declared = b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n" + b"x" * 11
            assert (await exchange(port, declared, lambda r: b"\r\n\r\n" in r)).startswith(b"HTTP/1.1 413")
            chunked = (
                b"POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"6\r\nxxxxxx\r\n6\r\nxxxxxx\r\n0\r\n\r\n"
            )
            assert (await exchange(port, chunked, lambda r: b"\r\n\r\n" in r)).startswith(b"HTTP/1.1 413")
        assert handled == [("POST", "/big", None), ("POST", "/chunks", None)]

    run(scenario)


def test_a_malformed_request_gets_400_and_the_connection_closes() -> None:
    async def scenario() -> None:
        async with serving() as (port, handled, _):
            reply = await exchange(port, b"NOT HTTP AT ALL\r\n\r\n", lambda r: False)
        assert reply.startswith(b"HTTP/1.1 400")
        assert b"connection: close" in reply
        assert handled == []

    run(scenario)


def test_connection_close_is_honoured() -> None:
    async def scenario() -> None:
        async with serving() as (port, _, _):
            request = b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            reply = await exchange(port, request, lambda r: False)  # reads until the server closes
        assert reply.startswith(b"HTTP/1.1 200") and b"connection: close" in reply

    run(scenario)


def test_shutdown_finishes_the_request_in_flight() -> None:
    async def scenario() -> None:
        arrived = asyncio.Event()
        async with serving(delay=0.2, arrived=arrived) as (port, _, server):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(arrived.wait(), 5)
            await server.shutdown(5.0)
            reply = await asyncio.wait_for(reader.read(), 5)  # the answer, then the close
            writer.close()
        assert reply.startswith(b"HTTP/1.1 200") and b"connection: close" in reply

    run(scenario)


def test_a_request_that_trickles_in_is_cut_off_with_408() -> None:
    """A slowloris client (headers, then a body that never finishes) gets 408 and
    loses the connection when the read timeout passes; nothing reaches the handler."""

    async def scenario() -> None:
        async with serving(read_timeout=0.3) as (port, handled, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n0123456789")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)  # read() returns when the server closes
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
            assert b"did not arrive within 0.3 s" in answer
            assert handled == []
            writer.close()
            # a request that arrives whole in time is unaffected
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for path in (b"/fast", b"/again"):
                writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200")
                length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
                assert await reader.readexactly(length) == b'{"echo":"%s"}' % path
                await asyncio.sleep(0.5)  # idle between requests is not a slow request
            writer.close()

    asyncio.run(scenario())
