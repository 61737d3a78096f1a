"""The checks at the door: what becomes of a request once its head is
complete, before any of its body is kept.

In order: the screen (authentication, from the headers), the gate
(admission control), the body size limit, the body budget. The cheap
refusals come first, so a request that is turned away costs its head's
parsing and little more.
"""

from __future__ import annotations

import functools
from enum import Enum

from turnout.transports.http import wire
from turnout.transports.http.request import PendingRequest
from turnout.transports.http.shared import Shared
from turnout.transports.rest.asgi import Response


class Verdict(Enum):
    ADMITTED = "admitted"  # read its body and hand it to the handler
    DROPPED = "dropped"  # refused, its answer set: read and drop its small declared body, keep the connection
    CLOSING = "closing"  # answer it in its turn without reading its body, then close


def decide(shared: Shared, request: PendingRequest, peer: str, size: int, chunked: bool, expects: bool) -> Verdict:
    """``size``: the declared Content-Length (0 if none); ``chunked``: the body's
    length is unknown; ``expects``: the client waits for 100 Continue before
    sending it. Sets the request's answer, pass and budget share."""
    refusal = shared.screen(request.method, request.path, request.headers, peer)
    if refusal is None:
        permit = shared.gate.enter(request.path)
        if permit is None:
            refusal = _at_capacity(shared.gate.retry_after)
        request.permit = permit
    if refusal is not None:
        request.response = refusal
        request.drop = True
        if chunked or expects or size > shared.limits.max_discard_bytes:
            return Verdict.CLOSING  # too much to read for nothing, or the client waits to send it
        return Verdict.DROPPED
    if size > shared.max_body_bytes:
        request.body_none = True  # the handler answers 413 without it
        return Verdict.CLOSING
    budget = shared.budget
    if size and budget is not None:
        if not budget.take(size):
            request.release(budget)
            request.response = over_budget(shared)
            return Verdict.CLOSING
        request.held = size
    return Verdict.ADMITTED


def over_budget(shared: Shared) -> Response:
    return _over_budget(shared.gate.retry_after)


# A refusal's answer is made once: shedding is worth it only while a refusal
# costs far less than an answer. Responses are immutable, so they are shared.
@functools.cache
def _at_capacity(retry_after: int) -> Response:
    return wire.unavailable(retry_after, "the server is at capacity; retry later")


@functools.cache
def _over_budget(retry_after: int) -> Response:
    return wire.unavailable(retry_after, "the server holds too many request bodies; retry later")
