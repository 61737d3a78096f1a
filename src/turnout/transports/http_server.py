"""A small HTTP/1.1 server for the REST transport, on httptools and asyncio.

Why not uvicorn: with the V2 path made lean, uvicorn's own Python code was
the largest share of the server's time (27.5% of py-spy samples at 64
concurrent requests on a small model). This server does only what the REST
transport needs: keep-alive, requests answered in order (pipelining
included), ``Expect: 100-continue``, a body size limit enforced while the
body arrives, and a graceful close. It calls the same ``RestApi`` that runs
under any ASGI server.

Concurrency: one protocol object per connection, all on the event loop; one
request per connection is handled at a time, later ones wait in order.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import httptools
import orjson

from turnout.transports.addresses import peer_address
from turnout.transports.asgi import Response

log = logging.getLogger("turnout.http")

# (method, path, headers, body, client address) -> response; the RestApi's
# entry point. The body is None when it passed the size limit: it was read and
# dropped, so the handler can still answer (and count) the request before
# refusing it.
Handle = Callable[[str, str, dict[bytes, bytes], bytes | None, str], Awaitable[Response]]

_REASONS = {
    200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
    405: b"Method Not Allowed", 408: b"Request Timeout", 413: b"Content Too Large", 429: b"Too Many Requests",
    500: b"Internal Server Error", 503: b"Service Unavailable",
}  # fmt: skip


def _encode(response: Response, keep_alive: bool) -> bytes:
    reason = _REASONS.get(response.status, b"")
    lines = [
        b"HTTP/1.1 %d %s" % (response.status, reason),
        b"content-type: " + response.content_type,
        b"content-length: %d" % len(response.body),
    ]
    lines += [name + b": " + value for name, value in response.headers]
    if not keep_alive:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + response.body


class _Pending:
    __slots__ = ("body", "headers", "keep_alive", "method", "path", "too_large")

    def __init__(self) -> None:
        self.method = ""
        self.path = ""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.keep_alive = True
        self.too_large = False


# How long a request may take to arrive, from its first byte to its last: a
# client that opens requests and trickles them (slowloris) holds a connection
# and its buffers only this long.
READ_TIMEOUT_SECONDS = 30.0


class HttpProtocol(asyncio.Protocol):
    def __init__(
        self,
        handle: Handle,
        max_body_bytes: int,
        connections: set[HttpProtocol],
        read_timeout: float = READ_TIMEOUT_SECONDS,
    ) -> None:
        self._handle = handle
        self._limit = max_body_bytes
        self._read_timeout = read_timeout
        self._read_timer: asyncio.TimerHandle | None = None
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._current = _Pending()
        self._size = 0
        self._ready: deque[_Pending] = deque()  # complete requests not yet answered
        self._worker: asyncio.Task[None] | None = None
        self._url = b""
        self._draining = False
        self._peer = ""

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._peer = peer_address(transport)
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._transport = None
        self._stop_read_timer()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}".encode())

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._current = _Pending()
        self._size = 0
        self._url = b""
        self._read_timer = asyncio.get_running_loop().call_later(self._read_timeout, self._read_timed_out)

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._current.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        current = self._current
        current.method = self._parser.get_method().decode("ascii", "replace")
        current.path = httptools.parse_url(self._url).path.decode("utf-8", "replace")
        current.keep_alive = self._parser.should_keep_alive()
        declared = current.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and (len(declared) > 18 or int(declared) > self._limit):
            current.too_large = True
        elif current.headers.get(b"expect", b"").lower() == b"100-continue" and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        current = self._current
        if current.too_large:
            return  # read and dropped: memory stays bounded whatever the client sends
        self._size += len(body)
        if self._size > self._limit:
            current.too_large = True
            current.body.clear()
            return
        current.body.append(body)

    def on_message_complete(self) -> None:
        self._stop_read_timer()
        self._ready.append(self._current)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._answer())

    async def _answer(self) -> None:
        while self._ready and self._transport is not None:
            request = self._ready.popleft()
            body = None if request.too_large else b"".join(request.body)
            try:
                response = await self._handle(request.method, request.path, request.headers, body, self._peer)
            except Exception:  # the handler maps every expected error; this is a bug, answered in shape
                log.exception("unexpected error answering %s %s", request.method, request.path)
                response = Response(b'{"error":"internal error; the server log has the details"}', 500)
            if self._transport is None:
                return
            keep_alive = request.keep_alive and not self._draining
            self._transport.write(_encode(response, keep_alive))
            if not keep_alive:
                self._transport.close()
                return

    def _stop_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        self._fail(408, b"the request did not arrive within %g s" % self._read_timeout)

    def _fail(self, status: int, message: bytes) -> None:
        """A request that cannot be parsed or is too large: answer and close."""
        if self._transport is not None:
            body = b'{"error":' + _json_string(message) + b"}"
            self._transport.write(_encode(Response(body, status), keep_alive=False))
            self._transport.close()

    def drain(self) -> asyncio.Task[None] | None:
        """From now on close after each answer; the task answering, if any."""
        self._draining = True
        if self._worker is not None and not self._worker.done():
            return self._worker
        self.close()
        return None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _json_string(message: bytes) -> bytes:
    return orjson.dumps(message.decode("utf-8", "replace"))


class HttpServer:
    """Listens on a bound socket; ``shutdown`` stops accepting, lets requests
    in flight finish (up to ``grace`` seconds) and closes every connection."""

    def __init__(
        self,
        handle: Handle,
        max_body_bytes: int,
        tls: ssl.SSLContext | None = None,
        read_timeout: float = READ_TIMEOUT_SECONDS,
    ) -> None:
        self._handle = handle
        self._limit = max_body_bytes
        self._tls = tls
        self._read_timeout = read_timeout
        self._connections: set[HttpProtocol] = set()
        self._server: asyncio.base_events.Server | None = None

    async def start(self, sock: Any) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.protocol, sock=sock, ssl=self._tls)

    def protocol(self) -> HttpProtocol:
        """A connection's protocol; for a listener that decides the protocol itself (``dual``)."""
        return HttpProtocol(self._handle, self._limit, self._connections, self._read_timeout)

    async def shutdown(self, grace: float) -> None:
        if self._server is not None:
            self._server.close()
        answering = [task for c in list(self._connections) if (task := c.drain()) is not None]
        if answering:
            await asyncio.wait(answering, timeout=grace)
        for connection in list(self._connections):  # idle, or still busy after the grace period
            connection.close()
