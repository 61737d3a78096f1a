"""httptools' side of one HTTP/1.1 connection: each request's line, headers
and body, as the parser calls them out, taken into a ``PendingRequest``.

What the connection decides is asked of it at three points: when a head is
complete (``headed``: the door, ``100 Continue``), when a request cannot be
taken (``refuse``, ``refuse_request``), and when one is whole
(``received``). A callback that stops the parser raises ``Stop``; the
answer is queued by then.

llhttp stops after an Upgrade request's head, skipping its body (RFC 9110
7.8 lets a server ignore Upgrade: h2c from ``curl --http2`` included); a
head of the same framing, fed next, makes it parse that body into the same
request, which is then served as HTTP/1.1.
"""

from __future__ import annotations

from typing import Protocol

import httptools

from turnout.transports.http.door import over_budget
from turnout.transports.http.request import PendingRequest
from turnout.transports.http.shared import Shared


class Stop(Exception):
    """Raised from a parser callback to stop parsing: the answer is queued."""


class Connection(Protocol):
    """What the reader asks of the connection it reads for (``HttpProtocol``)."""

    stopped: bool

    def headed(self, request: PendingRequest, size: int, chunked: bool, expects: bool) -> bool: ...

    def refuse(self, status: int, message: str) -> None: ...

    def refuse_request(self, request: PendingRequest) -> None: ...

    def received(self, request: PendingRequest) -> None: ...


class RequestReader:
    def __init__(self, connection: Connection, shared: Shared) -> None:
        self._connection = connection
        self._shared = shared
        self._limits = shared.limits
        self._budget = shared.budget
        self.parser = httptools.HttpRequestParser(self)
        self.current: PendingRequest | None = None  # the request being received
        # of the current request's body: bytes still to feed; -1 chunked; 0 a head next
        self.body_left = 0
        self._url = b""
        self._hosts = 0
        self._resume_body: bytes | None = None  # an Upgrade request's body framing, to parse that body
        self._synthetic = False

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.parser_stopped(data, exc)

    def parser_stopped(self, data: bytes, exc: Exception) -> None:
        if isinstance(exc, httptools.HttpParserUpgrade):
            if not self._connection.stopped:
                self._upgrade_ignored(data[exc.args[0] :])
        elif not self._connection.stopped:  # else parsing was stopped on purpose, the answer queued
            self._connection.refuse(400, f"malformed HTTP request: {exc}")

    def forget(self) -> None:
        """The request arriving will not be read on (its answer is queued, or the client left)."""
        self.current = None
        self._resume_body = None
        self.body_left = 0

    def _upgrade_ignored(self, body: bytes) -> None:
        """``body``: what of the Upgrade request's body was fed with its head."""
        framing = self._resume_body
        if framing is not None:
            self._synthetic = True
            self.feed(b"POST / HTTP/1.1\r\n" + framing + b"\r\n\r\n")
            if body:  # not expected: a head is fed alone
                self.feed(body)

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self._synthetic:
            return
        self.current = PendingRequest()
        self._url = b""
        self._hosts = 0

    def on_url(self, url: bytes) -> None:
        if self._url:
            url = self._url + url  # the head is fed whole, so this is rare and at most max_url_bytes
        if len(url) > self._limits.max_url_bytes:
            self._connection.refuse(414, f"the request target exceeds {self._limits.max_url_bytes} bytes")
            raise Stop
        self._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"host":
            self._hosts += 1
        self.current.headers[name] = value  # type: ignore[union-attr]  # set by on_message_begin

    def on_headers_complete(self) -> None:
        if self._synthetic:
            self._synthetic = False
            self._resume_body = None
            return
        request = self.current
        assert request is not None
        parser = self.parser
        framing = request.headed(parser, self._url, self._hosts)
        if isinstance(framing, str):
            self._connection.refuse(400, framing)
            raise Stop
        size, chunked = framing
        if size or chunked:
            self.body_left = -1 if chunked else size
        headers = request.headers
        if (b"upgrade" in headers or request.method == "CONNECT") and parser.should_upgrade():
            if request.method == "CONNECT":
                request.keep_alive = False  # what follows is a tunnel, not HTTP
            elif size or chunked:
                self._resume_body = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % size
        expects = bool(size or chunked) and b"expect" in headers and headers[b"expect"].lower() == b"100-continue"
        if not self._connection.headed(request, size, chunked, expects):
            raise Stop

    def on_body(self, body: bytes) -> None:
        request = self.current
        assert request is not None
        if request.drop:
            return
        size = request.size = request.size + len(body)
        if request.held < size:  # chunked (or no budget): size and budget checked as it arrives
            if size > self._shared.max_body_bytes:
                request.release(self._budget)
                request.body_none = True
                self._connection.refuse_request(request)
                raise Stop
            if self._budget is not None:
                if not self._budget.take(len(body)):
                    request.release(self._budget)
                    request.response = over_budget(self._shared)
                    self._connection.refuse_request(request)
                    raise Stop
                request.held += len(body)
        request.chunks.append(body)

    def on_message_complete(self) -> None:
        if self._resume_body is not None:
            return  # an Upgrade request: its body is parsed next, behind a head of its framing
        request = self.current
        assert request is not None
        self.current = None
        self.body_left = 0
        self._connection.received(request)
