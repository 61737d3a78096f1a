"""An HTTP/2 server for request/response exchanges, on asyncio, for gRPC's unary calls.

Why not grpcio's server: on one core its asyncio server peaks near 3,600 calls
per second with a servicer that does nothing (its threaded server ~5,900),
while turnout's REST path answers 11,000-14,000 inferences per second on the
same core. gRPC is the protocol clients pick for speed, so turnout frames it
itself, as it does HTTP/1.1 (``transports.http``). A connection is
``protocol.Http2Protocol``; what one client may cost, ``limits.Http2Limits``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from turnout.overload.budget import BodyBudget
from turnout.overload.connections import Connections
from turnout.overload.gate import Gate, OpenGate
from turnout.transports.addresses import LISTEN_BACKLOG
from turnout.transports.http2.limits import Http2Limits
from turnout.transports.http2.protocol import Http2Protocol
from turnout.transports.http2.shared import Handle, Reply, Request, Screen, Shared, admit_all

__all__ = ["Handle", "Http2Limits", "Http2Protocol", "Http2Server", "Reply", "Request", "Screen", "admit_all"]


class Http2Server:
    """Listens on a bound socket; ``shutdown`` stops accepting, sends GOAWAY,
    lets open streams finish (up to ``grace`` seconds) and closes every connection.

    ``screen`` (authentication from the headers) and ``gate`` (admission
    control) decide on each stream before its body is kept; ``shed`` answers
    the streams the gate or the ``budget`` for request bodies refuses (None:
    RST_STREAM REFUSED_STREAM, which gRPC clients may retry); ``connections``
    limits the open connections. The budget and the connection limit may be
    shared with other listeners."""

    def __init__(
        self,
        handle: Handle,
        max_body_bytes: int,
        screen: Screen = admit_all,
        tls: ssl.SSLContext | None = None,
        *,
        limits: Http2Limits | None = None,
        gate: Gate | None = None,
        shed: Reply | None = None,
        budget: BodyBudget | None = None,
        connections: Connections | None = None,
    ) -> None:
        limits = limits or Http2Limits()
        self._tls = tls  # its ALPN must offer h2: gRPC clients insist
        self._protocols: set[Http2Protocol] = set()
        self._shared = Shared(
            handle, max_body_bytes, limits, screen, gate or OpenGate(), shed, budget, connections, self._protocols
        )
        self._server: asyncio.base_events.Server | None = None

    @property
    def limits(self) -> Http2Limits:
        return self._shared.limits

    async def start(self, sock: Any) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.protocol, sock=sock, ssl=self._tls, backlog=LISTEN_BACKLOG)

    def protocol(self) -> Http2Protocol:
        """A connection's protocol; for a listener that decides the protocol itself (``dual``)."""
        return Http2Protocol(self._shared)

    async def shutdown(self, grace: float) -> None:
        if self._server is not None:
            self._server.close()
        connections = list(self._protocols)
        for connection in connections:
            connection.go_away()
        waits = [asyncio.ensure_future(c.idle.wait()) for c in connections if not c.idle.is_set()]
        if waits:
            await asyncio.wait(waits, timeout=grace)
            for waiting in waits:
                waiting.cancel()
        for connection in list(self._protocols):
            connection.close()
