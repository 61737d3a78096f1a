"""Listening and peer addresses: the backlog every listener gets, and the
address of a connection's other end, as the audit log records it."""

from __future__ import annotations

import asyncio

# Connections the kernel queues, accepted by nobody yet. asyncio's default
# (100) overflows under a burst of new connections (an open-loop overload
# connects hundreds at once): the excess SYNs are dropped and their clients
# retry after 1 s, 3 s, ..., a delay no server-side limit sees. Given again to
# create_server, which calls listen() itself.
LISTEN_BACKLOG = 2048


def peer_address(transport: asyncio.BaseTransport) -> str:
    """ "host:port" of the other end; "" if the transport does not know."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else ""
