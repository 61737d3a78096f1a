"""A request as the HTTP/1.1 server holds it, from its first byte until its
answer is written."""

from __future__ import annotations

import httptools

from turnout.overload.budget import BodyBudget
from turnout.overload.gate import Pass
from turnout.transports.rest.asgi import Response


class PendingRequest:
    """Defaults live on the class: a request sets only what differs from
    them, which costs less per request than filling slots."""

    method = ""
    path = ""
    size = 0
    keep_alive = True
    head = False  # a HEAD request: answered as GET, without the body
    response: Response | None = None  # decided at the door: the handler is not called
    drop = False  # its body is read and dropped (refused)
    body_none = False  # its body passed the size limit: the handler gets None
    held = 0  # bytes taken from the body budget
    permit: Pass | None = None  # from the gate, until the answer is written
    continue_owed = False  # 100 Continue, once the answers before it are out
    linger = False  # the client may still be sending when its answer closes the connection

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.chunks: list[bytes] = []

    def release(self, budget: BodyBudget | None) -> None:
        """Give back the body budget and the gate's pass; safe to call more than once."""
        self.chunks = []
        if self.held:
            if budget is not None:
                budget.give(self.held)
            self.held = 0
        permit = self.permit
        if permit is not None:
            self.permit = None
            permit.leave()

    def headed(self, parser: httptools.HttpRequestParser, url: bytes, hosts: int) -> tuple[int, bool] | str:
        """Take in the parsed head: the body's declared size and whether it is
        chunked, or why the request is malformed (400). HEAD becomes GET (its
        answer goes out without body)."""
        method = parser.get_method().decode("ascii", "replace")
        if method == "HEAD":
            self.head = True
            method = "GET"
        self.method = method
        self.path = httptools.parse_url(url).path.decode("utf-8", "replace")
        self.keep_alive = parser.should_keep_alive()
        if hosts != 1 and (hosts or parser.get_http_version() == "1.1"):
            return "an HTTP/1.1 request needs exactly one Host header (RFC 9112 3.2)"
        declared = self.headers.get(b"content-length")
        # llhttp checked the framing: Content-Length digits and once, never
        # with Transfer-Encoding, which requests may send with chunked last only
        return 0 if declared is None else int(declared), b"transfer-encoding" in self.headers
