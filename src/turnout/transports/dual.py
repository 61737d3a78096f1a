"""One port for HTTP/1.1 and HTTP/2 (gRPC): the admin plane's listener, so
that REST tools and gRPC clients (tritonclient's either flavour) reach it at
the same address.

The protocol is told by the connection's first bytes: an HTTP/2 client opens
with the preface ``PRI * HTTP/2.0``, which no HTTP/1.1 request starts with.
Until those bytes arrive the connection belongs to a small sniffer; then it
is handed to the chosen server's own protocol object, which from then on
sees it as if it had accepted it.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from typing import Any

from turnout.transports.addresses import LISTEN_BACKLOG
from turnout.transports.http import HttpServer
from turnout.transports.http2.server import Http2Server

_PREFACE_START = b"PRI "


class _Sniffer(asyncio.Protocol):
    def __init__(self, http: HttpServer, http2: Http2Server) -> None:
        self._http = http
        self._http2 = http2
        self._transport: asyncio.Transport | None = None
        self._seen = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        # A connection that never says which protocol it speaks is closed as
        # a silent HTTP/1.1 one would be: until handed over, no server counts it.
        self._timer = asyncio.get_running_loop().call_later(self._http.limits.head_timeout, transport.close)

    def data_received(self, data: bytes) -> None:
        self._seen += data
        if len(self._seen) < len(_PREFACE_START) and _PREFACE_START.startswith(self._seen):
            return  # too few bytes to tell yet
        transport = self._transport
        assert transport is not None
        self._cancel_timer()
        chosen: asyncio.Protocol = (
            self._http2.protocol() if self._seen.startswith(_PREFACE_START) else self._http.protocol()
        )
        transport.set_protocol(chosen)
        chosen.connection_made(transport)
        chosen.data_received(self._seen)
        self._seen = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class DualServer:
    """Listens on a bound socket and serves both; ``shutdown`` as each server's."""

    def __init__(self, http: HttpServer, http2: Http2Server, tls: ssl.SSLContext | None = None) -> None:
        self._http = http
        self._http2 = http2
        self._tls = tls  # its ALPN should offer h2 and http/1.1
        self._server: asyncio.base_events.Server | None = None

    async def start(self, sock: Any) -> None:
        loop = asyncio.get_running_loop()
        sniffer = functools.partial(_Sniffer, self._http, self._http2)
        self._server = await loop.create_server(sniffer, sock=sock, ssl=self._tls, backlog=LISTEN_BACKLOG)

    async def shutdown(self, grace: float) -> None:
        if self._server is not None:
            self._server.close()
        await asyncio.gather(self._http.shutdown(grace), self._http2.shutdown(grace))
