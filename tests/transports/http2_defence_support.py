"""What the HTTP/2 defence tests share: a call answered on a stream, the proof
that a connection still serves after what a test did to it."""

from __future__ import annotations

from tests.transports.test_http2_server import RawClient
from turnout.transports.grpc import wire
from turnout.transports.http2 import frames as f


async def answered(client: RawClient, stream_id: int, message: bytes) -> None:
    """A call on ``stream_id`` is answered with ``message``: the connection still serves."""
    client.call(stream_id, message)
    _, data = await client.until(f.DATA, stream_id)
    assert data == wire.frame(message)
