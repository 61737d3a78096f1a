"""One port for HTTP/1.1 and HTTP/2 (the admin plane's): each connection goes
to the right server by its first bytes, with real clients (httpx, grpcio),
including one that sends its first bytes one at a time."""

from __future__ import annotations

import asyncio
import socket

import grpc
import httpx

from tests.transports.test_http2_server import BIG, ECHO, EchoService, RawClient
from turnout.transports.dual import DualServer
from turnout.transports.http import HttpServer
from turnout.transports.http2 import frames as f
from turnout.transports.http2.server import Http2Server
from turnout.transports.rest.asgi import Response


async def http_handle(method: str, path: str, headers: dict[bytes, bytes], body: bytes | None, source: str) -> Response:
    loopback = b"true" if source.startswith("127.") else b"false"
    return Response(b'{"path":"%s","from_loopback":%s}' % (path.encode(), loopback))


def test_http1_and_grpc_share_one_port() -> None:
    async def scenario() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        port = sock.getsockname()[1]
        server = DualServer(HttpServer(http_handle, 1 << 20), Http2Server(EchoService().handle, 1 << 20))
        await server.start(sock)
        try:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{port}/v2/health/live")
                assert response.json() == {"path": "/v2/health/live", "from_loopback": True}
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary(ECHO, request_serializer=None, response_deserializer=None)
                assert await call(b"hello", timeout=10) == b"hello"
            # an HTTP/1.1 request trickling in a byte at a time is still told apart
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for byte in b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n":
                writer.write(bytes([byte]))
                await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200")
            writer.close()
        finally:
            await server.shutdown(1.0)

    asyncio.run(scenario())


def test_an_http2_client_that_never_reads_is_paused_through_the_sniffer() -> None:
    """The sniffer hands the connection over after its first bytes: the HTTP/2
    protocol still stops reading a client that reads none of its replies."""

    async def scenario() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        service = EchoService()
        server = DualServer(HttpServer(http_handle, 1 << 20), Http2Server(service.handle, 1 << 20))
        await server.start(sock)
        try:
            client = await RawClient.connect(sock.getsockname()[1], window=f.MAX_WINDOW)
            client.send(f.window_update(0, f.MAX_WINDOW - f.DEFAULT_WINDOW))
            for stream_id in range(1, 2 * 30, 2):
                client.call(stream_id, b"", BIG)
                if stream_id % 20 == 19:
                    await asyncio.sleep(0.3)
            await asyncio.sleep(0.3)
            assert len(service.bodies) <= 12  # 2 MiB replies: the server stopped reading after the first ones
            client.close()
        finally:
            await server.shutdown(1.0)

    asyncio.run(scenario())
