"""The address of a connection's other end, as the audit log records it."""

from __future__ import annotations

import asyncio


def peer_address(transport: asyncio.BaseTransport) -> str:
    """ "host:port" of the other end; "" if the transport does not know."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else ""
