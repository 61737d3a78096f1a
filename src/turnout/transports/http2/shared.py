"""What the HTTP/2 server's connections are given: the exchange types, the
handler, the checks at the door, the limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from turnout.overload.budget import BodyBudget
from turnout.overload.connections import Connections
from turnout.overload.gate import Gate
from turnout.transports.http2.limits import Http2Limits


@dataclass(slots=True)
class Request:
    stream_id: int
    headers: dict[str, str]
    body: bytes | None  # None: it passed the size limit and was dropped as it arrived
    peer: str = ""  # the client's address, "host:port"


@dataclass(slots=True)
class Reply:
    """Encoded header blocks and a body. ``trailers`` None with an empty body
    sends ``head`` alone, ending the stream (gRPC's trailers-only answer)."""

    head: bytes
    body: bytes = b""
    trailers: bytes | None = None


Handle = Callable[[Request], Awaitable[Reply]]
# (the request's headers, the client's "host:port") -> a refusal, or None to
# admit. Called once per stream, as soon as its headers are complete and
# well formed, before any of its body is kept: an unknown gRPC method, or a
# caller without a credential, is refused without waiting for a body a
# client may never finish. It runs on the event loop for every stream: cheap,
# never blocking.
Screen = Callable[[dict[str, str], str], Reply | None]


def admit_all(headers: dict[str, str], peer: str) -> Reply | None:
    return None


@dataclass(frozen=True, slots=True)
class Shared:
    """What all the connections of one server share."""

    handle: Handle
    max_body_bytes: int
    limits: Http2Limits
    screen: Screen
    gate: Gate
    shed: Reply | None  # the answer to a stream the gate or the body budget refuses; None: RST_STREAM REFUSED_STREAM
    budget: BodyBudget | None  # request body bytes held in memory, across connections and listeners
    connections: Connections | None  # the limit on open connections, across listeners
    # this server's own connections (Http2Protocols, which import this module), for its shutdown
    protocols: set[Any]
