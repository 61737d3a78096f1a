"""Responses as bytes on the wire, and the server's own error answers."""

from __future__ import annotations

import orjson

from turnout.transports.rest.asgi import Response

_REASONS = {
    200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
    405: b"Method Not Allowed", 408: b"Request Timeout", 413: b"Content Too Large", 414: b"URI Too Long",
    429: b"Too Many Requests", 431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    503: b"Service Unavailable",
}  # fmt: skip

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def encode(response: Response, keep_alive: bool, head: bool = False) -> bytes:
    """The response's bytes; for a HEAD request its headers only, Content-Length
    still the body's (RFC 9110 9.3.2), so the next response on the
    connection starts where the client expects it."""
    reason = _REASONS.get(response.status, b"")
    lines = [
        b"HTTP/1.1 %d %s" % (response.status, reason),
        b"content-type: " + response.content_type,
        b"content-length: %d" % len(response.body),
    ]
    lines += [name + b": " + value for name, value in response.headers]
    if not keep_alive:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + (b"\r\n\r\n" if head else b"\r\n\r\n" + response.body)


def error(status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Response:
    """The server's own answer, in the REST API's shape; ``message`` never
    carries client input, so its size is bounded."""
    return Response(orjson.dumps({"error": message}), status, headers=headers)


def unavailable(retry_after: int, message: str) -> Response:
    return error(503, message, ((b"retry-after", b"%d" % retry_after),))
