"""One HTTP/1.1 connection: parsing (httptools), the checks at the door, and
answers in order.

What a connection may cost is bounded at every step:

- A request's head (request line and headers) reaches the parser only
  whole (``framing``): 431 past ``max_head_bytes`` or ``max_headers``, 414
  past ``max_url_bytes``; 408 when it is not whole within ``head_timeout``.
- At the end of the head, before any body byte is kept or ``100 Continue``
  sent, the screen (authentication) and the gate (admission control) decide;
  a refused request's answer is queued in its turn, and its body dropped
  (small and declared) or the connection closed. Then the body: 413 past the
  body limit, 503 when the shared ``BodyBudget`` cannot hold it.
- Flow control both ways: reading stops while the transport's write buffer
  is above its high-water mark (``pause_writing``), and no new head is
  parsed while ``max_pipelined`` requests wait for their answers (the bytes
  already read wait unparsed, reading stops); time so paused does not count
  against the client's deadlines.
- Idle connections close after ``keep_alive_timeout``, and are counted in
  the shared ``Connections``, which closes the longest idle to make room.

Concurrency: everything runs on the event loop. One request per connection
is handled at a time (a task, ``_answer``); later ones wait in ``_ready``, in
order. A request holds its gate ``Pass`` and its body budget from the end of
its head until its answer is written, or the connection is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import httptools

from turnout.transports.addresses import peer_address
from turnout.transports.http import wire
from turnout.transports.http.deadline import Deadline
from turnout.transports.http.door import Verdict, decide, over_budget
from turnout.transports.http.framing import MORE, TOO_LONG, head_piece
from turnout.transports.http.request import PendingRequest
from turnout.transports.http.shared import Shared

log = logging.getLogger("turnout.http")

# A chunked body's end is known only to the parser, so it is fed in slices
# this small: what follows it in a slice (pipelined requests) reaches the
# parser without the head checks above, at most this much per chunked request.
_CHUNKED_SLICE = 4096


class _Stop(Exception):
    """Raised from a parser callback to stop parsing: the answer is queued."""


class HttpProtocol(asyncio.Protocol):
    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._limits = limits = shared.limits
        self._max_head = limits.max_head_bytes
        self._max_pipelined = limits.max_pipelined
        self._head_timeout = limits.head_timeout
        self._read_timeout = limits.read_timeout
        self._keep_alive_timeout = limits.keep_alive_timeout
        self._many_lines = 4 * (limits.max_headers + 2)  # a shorter head cannot hold too many ("a:" CR LF)
        self._connections = shared.connections
        self._budget = shared.budget
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._current: PendingRequest | None = None  # the request being received
        self._ready: deque[PendingRequest] = deque()  # received, not yet answered
        self._worker: asyncio.Task[None] | None = None
        # what is fed to the parser
        self._head = bytearray()  # a head's bytes while it spans reads
        self._body_left = 0  # of the current request's body: bytes still to feed; -1 chunked; 0 a head next
        self._backlog = b""  # read but not parsed while max_pipelined requests wait
        self._url = b""
        self._hosts = 0
        self._resume_body: bytes | None = None  # an Upgrade request's body framing, to parse that body
        self._synthetic = False
        # the connection's state
        self._stopped = False  # no more requests are parsed; the last queued answer closes
        self._lingering = 0  # bytes still to read and drop before closing; 0: not lingering
        self._draining = False
        self._eof = False
        self._busy = False
        self._deadline = Deadline(self._loop, self._timed_out)
        self._began = 0.0  # the current request's first byte
        self._first = True
        # flow control
        self._reading_paused = False
        self._paused_at = 0.0
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._write_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._connections is not None and not self._connections.open(self):
            self._stopped = True
            transport.close()  # every connection is busy: refused at once, cheaply
            return
        self._transport = transport  # type: ignore[assignment]
        self._shared.protocols.add(self)
        self._peer = peer_address(transport)
        # the first request's head is due ``head_timeout`` after the connection's start
        self._deadline.set(self._loop.time() + self._limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._shared.protocols.discard(self)
        if self._connections is not None:
            self._connections.closed(self)
        self._transport = None
        self._cut_short()
        self._deadline.cancel()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        # the request being answered gives back its share when its handler returns
        for request in self._ready:
            request.release(self._budget)
        self._ready.clear()

    def eof_received(self) -> bool | None:
        """The client sent all it will: answer what arrived whole, then close."""
        self._cut_short()
        self._eof = True
        if self._lingering or not (self._ready or self._answering()):
            return None  # nothing to answer: the transport closes
        return True

    def _cut_short(self) -> None:
        """No more bytes will come: the request arriving can never complete."""
        self._stopped = True
        if self._current is not None:
            self._current.release(self._budget)
            self._current = None
        self._head.clear()
        self._backlog = b""
        self._deadline.clear()

    def pause_writing(self) -> None:
        """The client does not read our answers fast enough: stop reading its
        requests until it does, and give it ``write_timeout`` to catch up."""
        self._writing_paused = True
        self._pause_reading()
        if self._write_timer is None:
            self._write_timer = self._loop.call_later(self._limits.write_timeout, self._write_timed_out)

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._proceed()

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            if self._lingering:
                self._lingering = max(self._lingering - len(data), 0)
                if not self._lingering:
                    self.close()
            return
        if self._backlog:  # not expected: reading is paused while there is one
            data, self._backlog = self._backlog + data, b""
        self._take(data)

    def _take(self, data: bytes) -> None:
        """Feed the parser one request at a time: its head once whole, then
        its body; no new head while ``max_pipelined`` requests wait.

        This is every request's path: the common steps are written out here
        rather than called (a head found in one read, the deadline moved
        later), each call saved being a measurable share of a small request."""
        start, size = 0, len(data)
        deadline = self._deadline
        while start < size and not self._stopped:
            left = self._body_left
            if left > 0:
                end = min(size, start + left)
                self._body_left = left - (end - start)
                piece = data if start == 0 and end == size else data[start:end]
            elif left < 0:
                end = min(size, start + _CHUNKED_SLICE)
                piece = data if start == 0 and end == size else data[start:end]
            else:
                if len(self._ready) >= self._max_pipelined:
                    self._backlog = data[start:] if start else data
                    self._pause_reading()
                    return
                if not self._head:  # a request's first byte
                    now = self._began = self._loop.time()
                    if self._first:
                        self._first = False  # due ``head_timeout`` after the connection's start
                    else:
                        deadline.at = when = now + self._head_timeout
                        if when < deadline.armed_at:
                            deadline.arm()
                    if not self._busy:
                        self._busy = True
                        if self._connections is not None:
                            self._connections.idle.pop(self, None)  # busy: never closed to make room
                    end = data.find(b"\r\n\r\n", start, start + self._max_head)  # head_piece's common case
                    if end >= 0:
                        end += 4
                        piece = data if start == 0 and end == size else data[start:end]
                        found = None
                    else:
                        found = head_piece(self._head, data, start, self._max_head)
                else:
                    found = head_piece(self._head, data, start, self._max_head)
                if found is not None:
                    if found == MORE:
                        return
                    if found == TOO_LONG:
                        self._refuse(431, f"the request's line and headers exceed {self._max_head} bytes")
                        return
                    piece, end = found  # type: ignore[misc]  # neither MORE nor TOO_LONG: a head
                if len(piece) > self._many_lines and piece.count(b"\r\n") > self._limits.max_headers + 2:
                    self._refuse(431, f"the request has more than {self._limits.max_headers} header fields")
                    return
            try:  # _feed, inlined on this path
                self._parser.feed_data(piece)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
                self._parser_stopped(piece, exc)
            start = end

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._parser_stopped(data, exc)

    def _parser_stopped(self, data: bytes, exc: Exception) -> None:
        if isinstance(exc, httptools.HttpParserUpgrade):
            # RFC 9110 7.8: a server may ignore Upgrade (h2c from `curl --http2`
            # included); the request is served as HTTP/1.1 and parsing goes on.
            if not self._stopped:
                self._upgrade_ignored(data[exc.args[0] :])
        elif not self._stopped:  # else parsing was stopped on purpose, the answer queued
            self._refuse(400, f"malformed HTTP request: {exc}")

    def _upgrade_ignored(self, body: bytes) -> None:
        """llhttp stops after an Upgrade request's head, skipping its body
        (``body``: what of it was fed with the head); a head of the same
        framing makes it parse that body, into the same request."""
        framing = self._resume_body
        if framing is not None:
            self._synthetic = True
            self._feed(b"POST / HTTP/1.1\r\n" + framing + b"\r\n\r\n")
            if body:  # not expected: a head is fed alone
                self._feed(body)

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self._synthetic:
            return
        self._current = PendingRequest()
        self._url = b""
        self._hosts = 0

    def on_url(self, url: bytes) -> None:
        if self._url:
            url = self._url + url  # the head is fed whole, so this is rare and at most max_url_bytes
        if len(url) > self._limits.max_url_bytes:
            self._refuse(414, f"the request target exceeds {self._limits.max_url_bytes} bytes")
            raise _Stop
        self._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"host":
            self._hosts += 1
        self._current.headers[name] = value  # type: ignore[union-attr]  # set by on_message_begin

    def on_headers_complete(self) -> None:
        if self._synthetic:
            self._synthetic = False
            self._resume_body = None
            return
        request = self._current
        assert request is not None
        parser = self._parser
        framing = request.headed(parser, self._url, self._hosts)
        if isinstance(framing, str):
            self._refuse(400, framing)
            raise _Stop
        size, chunked = framing
        if size or chunked:
            self._body_left = -1 if chunked else size
            deadline = self._deadline
            deadline.at = when = self._began + self._read_timeout
            if when < deadline.armed_at:
                deadline.arm()
        headers = request.headers
        if (b"upgrade" in headers or request.method == "CONNECT") and parser.should_upgrade():
            if request.method == "CONNECT":
                request.keep_alive = False  # what follows is a tunnel, not HTTP
            elif size or chunked:
                self._resume_body = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % size
        expects = bool(size or chunked) and b"expect" in headers and headers[b"expect"].lower() == b"100-continue"
        verdict = decide(self._shared, request, self._peer, size, chunked, expects)
        if verdict is Verdict.CLOSING:
            self._answer_now(request)
            raise _Stop
        if expects and verdict is Verdict.ADMITTED and parser.get_http_version() == "1.1":  # RFC 9110 15.2
            if self._ready or self._answering():
                request.continue_owed = True  # sent now, it would be taken for an earlier request's
            elif self._transport is not None:
                self._transport.write(wire.CONTINUE)

    def on_body(self, body: bytes) -> None:
        request = self._current
        assert request is not None
        if request.drop:
            return
        size = request.size = request.size + len(body)
        if request.held < size:  # chunked (or no budget): size and budget checked as it arrives
            if size > self._shared.max_body_bytes:
                request.release(self._budget)
                request.body_none = True
                self._answer_now(request)
                raise _Stop
            if self._budget is not None:
                if not self._budget.take(len(body)):
                    request.release(self._budget)
                    request.response = over_budget(self._shared)
                    self._answer_now(request)
                    raise _Stop
                request.held += len(body)
        request.chunks.append(body)

    def on_message_complete(self) -> None:
        if self._resume_body is not None:
            return  # an Upgrade request: its body is parsed next, behind a head of its framing
        request = self._current
        assert request is not None
        self._current = None
        self._body_left = 0
        self._deadline.at = 0.0
        if request.response is not None and request.keep_alive and not self._waiting():
            self._refused_at_once(request)
            return
        self._ready.append(request)
        if not request.keep_alive:
            self._stopped = True  # what follows is not read
            self._pause_reading()
        if self._worker is None or self._worker.done():
            self._worker = self._loop.create_task(self._answer())

    def _waiting(self) -> bool:
        """Answers are queued, being made, or not taken by the client."""
        return bool(self._ready) or self._answering() or self._writing_paused

    def _refused_at_once(self, request: PendingRequest) -> None:
        """A request refused at the door (shed, 401, 429) with no answer before
        it: its answer is written now, without a task. Shedding is only worth
        doing if a refusal costs far less than an answer; a task per refusal
        (created, scheduled, run) was a third of a refusal's cost."""
        request.release(self._budget)
        transport = self._transport
        assert transport is not None and request.response is not None
        keep_alive = not self._draining
        transport.write(wire.encode(request.response, keep_alive, request.head))
        if keep_alive:
            self._between_requests()
        else:
            self._end(request.linger)

    # refusals
    def _refuse(self, status: int, message: str) -> None:
        """The request cannot be parsed or read in time: the error is its
        answer, and the connection closes after it."""
        request = self._current
        if request is None:  # its head never reached the parser
            request = PendingRequest()
        else:
            request.release(self._budget)
        request.response = wire.error(status, message)
        self._answer_now(request)

    def _answer_now(self, request: PendingRequest) -> None:
        """Queue the request's answer, read no more of the connection, and
        close it once the answer is out."""
        request.keep_alive = False
        request.linger = True
        self._current = None
        self._resume_body = None
        self._head.clear()
        self._backlog = b""
        self._body_left = 0
        self._stopped = True
        self._deadline.clear()
        self._pause_reading()
        self._ready.append(request)
        if self._worker is None or self._worker.done():
            self._worker = self._loop.create_task(self._answer())

    # answers
    def _answering(self) -> bool:
        return self._worker is not None and not self._worker.done()

    async def _answer(self) -> None:
        ready = self._ready
        handle = self._shared.handle
        while ready and self._transport is not None:
            request = ready.popleft()
            if self._reading_paused:
                self._proceed()
            response = request.response
            if response is None:
                body = None if request.body_none else b"".join(request.chunks)
                request.chunks = []
                try:
                    response = await handle(request.method, request.path, request.headers, body, self._peer)
                except Exception:  # the handler maps every expected error; this is a bug, answered in shape
                    log.exception("unexpected error answering %s %s", request.method, request.path)
                    response = wire.error(500, "internal error; the server log has the details")
                finally:  # done with the body and the pass (release, written out: every request's path)
                    request.chunks = []
                    held = request.held
                    if held:
                        request.held = 0
                        if self._budget is not None:
                            self._budget.give(held)
                    permit = request.permit
                    if permit is not None:
                        request.permit = None
                        permit.leave()
            else:
                request.release(self._budget)
            transport = self._transport
            if transport is None:
                return
            keep_alive = request.keep_alive and not self._draining and not (self._eof and not ready)
            transport.write(wire.encode(response, keep_alive, request.head))
            if not keep_alive:
                self._end(request.linger)
                return
            if self._writing_paused:
                self._drained = self._loop.create_future()
                await self._drained
                self._drained = None
        if self._transport is None or ready:
            return
        current = self._current
        if current is None and not self._head:
            self._between_requests()
        elif current is not None and current.continue_owed:
            current.continue_owed = False
            self._transport.write(wire.CONTINUE)

    def _between_requests(self) -> None:
        """Every request so far is answered and no other has begun: the connection
        idles. Every request's path: the table and the deadline change without a call."""
        assert self._transport is not None
        if self._eof:
            self._transport.close()
            return
        self._busy = False
        if self._connections is not None:
            self._connections.idle[self] = None  # the newest idle (open: its transport is still here)
        deadline = self._deadline
        deadline.at = when = self._loop.time() + self._keep_alive_timeout
        if when < deadline.armed_at:
            deadline.arm()

    def _end(self, linger: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        if not linger or self._eof:
            transport.close()
            return
        # The client may still be sending (a body, a long header line): read
        # and drop a little while the answer reaches it, then close, so that
        # it reads the answer rather than a reset.
        if transport.can_write_eof():
            transport.write_eof()
        self._lingering = self._limits.max_linger_bytes
        self._writing_paused = False
        self._resume_reading()
        self._deadline.set(self._loop.time() + self._limits.linger_timeout)
        if self._busy and self._connections is not None:
            self._busy = False
            self._connections.idle_again(self)  # the first to go when room is needed

    # flow control
    def _proceed(self) -> None:
        """Read on, first what was held back, if there is room for it."""
        if self._stopped or self._writing_paused or len(self._ready) >= self._max_pipelined:
            return
        if self._backlog:
            backlog, self._backlog = self._backlog, b""
            self._take(backlog)
            if self._backlog or self._stopped:
                return
        self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._paused_at = self._loop.time()
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and not self._writing_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
            at = self._deadline.at
            if at:
                if self._current is not None or self._head:
                    # time paused by us is not the client's: its request's deadlines move on
                    paused = self._loop.time() - self._paused_at
                    self._began += paused
                    at += paused
                self._deadline.set(at)  # the timer may have fired while paused

    def _write_timed_out(self) -> None:
        self._write_timer = None
        if self._transport is not None:
            log.info("closing %s: our answers went unread for %g s", self._peer, self._limits.write_timeout)
            self._transport.abort()

    def _timed_out(self) -> None:
        if self._reading_paused and not self._lingering:
            return  # not reading: the deadline moves on when reading resumes
        self._deadline.clear()
        if self._lingering or (self._current is None and not self._head):
            self.close()  # idle past the keep-alive timeout, silent since it connected, or done lingering
        elif self._current is None:
            self._refuse(408, f"the request's headers did not arrive within {self._limits.head_timeout:g} s")
        else:
            self._refuse(408, f"the request did not arrive within {self._limits.read_timeout:g} s")

    # the server's side
    def drain(self) -> asyncio.Task[None] | None:
        """From now on close after each answer; the task answering, if any."""
        self._draining = True
        if self._answering():
            return self._worker
        self.close()
        return None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
