"""What the HTTP/1.1 server's tests share: the server on a real socket with a
handler that records what reached it, and a raw client's steps (an exchange, a
response read, the close awaited)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

from turnout.overload.budget import BodyBudget
from turnout.overload.connections import Connections
from turnout.overload.gate import Gate
from turnout.transports.http import HttpLimits, HttpServer, Screen, admit_all
from turnout.transports.http.shared import Relay
from turnout.transports.rest.asgi import Response

Handled = list[tuple[str, str, bytes | None]]


@asynccontextmanager
async def serving(
    limit: int = 100,
    delay: float = 0.0,
    arrived: asyncio.Event | None = None,
    read_timeout: float | None = 30.0,
    limits: HttpLimits | None = None,
    screen: Screen = admit_all,
    gate: Gate | None = None,
    budget: BodyBudget | None = None,
    connections: Connections | None = None,
    reply: bytes = b"",
    relay: Relay | None = None,
) -> AsyncIterator[tuple[int, Handled, HttpServer]]:
    handled: Handled = []

    async def handle(method: str, path: str, headers: dict[bytes, bytes], body: bytes | None, source: str) -> Response:
        handled.append((method, path, body))
        if arrived is not None:
            arrived.set()
        if delay:
            await asyncio.sleep(delay)  # a slow handler, to have requests in flight
        if path == "/post-only" and method != "POST":
            return Response(b'{"error":"not allowed"}', 405)
        return Response(reply or b'{"echo":"%s"}' % path.encode(), 200 if body is not None else 413)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    if read_timeout is not None:
        limits = replace(limits or HttpLimits(), read_timeout=read_timeout)
    server = HttpServer(
        handle,
        limit,
        limits=limits,
        screen=screen,
        gate=gate,
        budget=budget,
        connections=connections,
        relay=relay,
    )
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


async def read_response(reader: asyncio.StreamReader, head: bool = False) -> tuple[bytes, bytes]:
    """One response: its head, and its body (none after a HEAD request)."""
    head_bytes = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head_bytes.split(b"content-length: ")[1].split(b"\r\n")[0])
    body = b"" if head else await asyncio.wait_for(reader.readexactly(length), 5)
    return head_bytes, body


async def closed(reader: asyncio.StreamReader, within: float = 5.0) -> bytes:
    """What the server sent before closing the connection (it must close)."""
    return await asyncio.wait_for(reader.read(), within)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())
