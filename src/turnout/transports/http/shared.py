"""What the HTTP/1.1 server's connections are given: the handler, the checks
at the door, the limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from turnout.overload.budget import BodyBudget
from turnout.overload.connections import Connections
from turnout.overload.gate import Gate
from turnout.transports.http.limits import HttpLimits
from turnout.transports.rest.asgi import Response

# (method, path, headers, body, client address) -> response; the RestApi's
# entry point. The body is None when it passed the size limit: it was not
# kept, so the handler can still answer (and count) the request before
# refusing it. HEAD requests arrive as GET; their answer goes out without body.
Handle = Callable[[str, str, dict[bytes, bytes], bytes | None, str], Awaitable[Response]]

# (method, path, lower-case headers, body, answer) -> whether it took the request:
# ``Handle``'s path driven by callbacks, for requests answered without a task of
# their own (a gateway's REST body passed on unread: the handler calls ``answer``
# once, maybe before returning). False: ``Handle`` answers it.
Relay = Callable[[str, str, dict[bytes, bytes], bytes, Callable[[Response], None]], bool]

# (method, path, lower-case headers, client "host:port") -> a refusal, or None
# to admit. Called once the request's head is complete, before any of its body
# is kept or 100 Continue sent; it must be cheap and never block (it runs on
# the event loop, for every request).
Screen = Callable[[str, str, dict[bytes, bytes], str], Response | None]


def admit_all(method: str, path: str, headers: dict[bytes, bytes], peer: str) -> Response | None:
    return None


@dataclass(frozen=True, slots=True)
class Shared:
    """What all the connections of one server share."""

    handle: Handle
    max_body_bytes: int
    limits: HttpLimits
    screen: Screen
    gate: Gate
    budget: BodyBudget | None
    connections: Connections | None  # the limit on open connections, across listeners
    # this server's own connections (HttpProtocols, which import this module), for its shutdown
    protocols: set[Any]
    relay: Relay | None = None
