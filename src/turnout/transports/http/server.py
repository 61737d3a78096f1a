"""The HTTP/1.1 listener: one ``HttpProtocol`` per connection, and a
graceful shutdown."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from turnout.overload.budget import BodyBudget
from turnout.overload.connections import Connections
from turnout.overload.gate import Gate, OpenGate
from turnout.transports.addresses import LISTEN_BACKLOG
from turnout.transports.http.limits import HttpLimits
from turnout.transports.http.protocol import HttpProtocol
from turnout.transports.http.shared import Handle, Relay, Screen, Shared, admit_all


class HttpServer:
    """Listens on a bound socket; ``shutdown`` stops accepting, lets requests
    in flight finish (up to ``grace`` seconds) and closes every connection.

    ``screen`` (authentication from the headers) and ``gate`` (admission
    control) decide on each request before its body is read; ``budget`` caps
    the request bodies held in memory and ``connections`` the open
    connections, both possibly shared with other listeners; ``relay`` answers
    the requests it takes by callbacks, without a task (``Relay``)."""

    def __init__(
        self,
        handle: Handle,
        max_body_bytes: int,
        tls: ssl.SSLContext | None = None,
        *,
        limits: HttpLimits | None = None,
        screen: Screen = admit_all,
        gate: Gate | None = None,
        budget: BodyBudget | None = None,
        connections: Connections | None = None,
        relay: Relay | None = None,
    ) -> None:
        limits = limits or HttpLimits()
        self._tls = tls
        self._protocols: set[HttpProtocol] = set()
        self._shared = Shared(
            handle, max_body_bytes, limits, screen, gate or OpenGate(), budget, connections, self._protocols, relay
        )
        self._server: asyncio.base_events.Server | None = None

    @property
    def limits(self) -> HttpLimits:
        return self._shared.limits

    async def start(self, sock: Any) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.protocol, sock=sock, ssl=self._tls, backlog=LISTEN_BACKLOG)

    def protocol(self) -> HttpProtocol:
        """A connection's protocol; for a listener that decides the protocol itself (``dual``)."""
        return HttpProtocol(self._shared)

    async def shutdown(self, grace: float) -> None:
        if self._server is not None:
            self._server.close()
        answering = [task for c in list(self._protocols) if (task := c.drain()) is not None]
        if answering:
            await asyncio.wait(answering, timeout=grace)
        for connection in list(self._protocols):  # idle, or still busy after the grace period
            connection.close()
