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

Where: this module is the connection (the head checks, the door, answers
in order, deadlines, lingering); httptools' callbacks, taking each request
in, are ``reader``'s; flow control both ways is ``pacing``'s.

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
from turnout.transports.http.door import Verdict, decide
from turnout.transports.http.framing import MORE, TOO_LONG, head_piece
from turnout.transports.http.pacing import Pacing
from turnout.transports.http.reader import RequestReader
from turnout.transports.http.request import PendingRequest
from turnout.transports.http.shared import Shared
from turnout.transports.rest.asgi import Response

log = logging.getLogger("turnout.http")

# A chunked body's end is known only to the parser, so it is fed in slices
# this small: what follows it in a slice (pipelined requests) reaches the
# parser without the head checks above, at most this much per chunked request.
_CHUNKED_SLICE = 4096


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
        self._reader = RequestReader(self, shared)
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._ready: deque[PendingRequest] = deque()  # received, not yet answered
        self._worker: asyncio.Task[None] | None = None
        self._relay = shared.relay
        self._relaying: PendingRequest | None = None  # taken by ``relay``, its answer not yet written
        self._relay_over: asyncio.Future[None] | None = None  # for ``drain``, while one is
        # what is fed to the parser
        self._head = bytearray()  # a head's bytes while it spans reads
        self._backlog = b""  # read but not parsed while max_pipelined requests wait
        # the connection's state
        self.stopped = False  # no more requests are parsed; the last queued answer closes
        self._lingering = 0  # bytes still to read and drop before closing; 0: not lingering
        self._draining = False
        self._eof = False
        self._busy = False
        self._deadline = Deadline(self._loop, self._timed_out)
        self._began = 0.0  # the current request's first byte
        self._first = True
        self._pacing = Pacing(self._loop, limits.write_timeout, self._write_timed_out)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._connections is not None and not self._connections.open(self):
            self.stopped = True
            transport.close()  # every connection is busy: refused at once, cheaply
            return
        self._transport = self._pacing.transport = transport  # type: ignore[assignment]
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
        self._pacing.lost()
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
        self.stopped = True
        if self._reader.current is not None:
            self._reader.current.release(self._budget)
            self._reader.current = None
        self._head.clear()
        self._backlog = b""
        self._deadline.clear()

    def pause_writing(self) -> None:
        self._pacing.pause_writing()

    def resume_writing(self) -> None:
        self._pacing.resume_writing()
        self._proceed()

    def data_received(self, data: bytes) -> None:
        if self.stopped:
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
        reader = self._reader
        while start < size and not self.stopped:
            left = reader.body_left
            if left > 0:
                end = min(size, start + left)
                reader.body_left = left - (end - start)
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
                        self.refuse(431, f"the request's line and headers exceed {self._max_head} bytes")
                        return
                    piece, end = found  # type: ignore[misc]  # neither MORE nor TOO_LONG: a head
                if len(piece) > self._many_lines and piece.count(b"\r\n") > self._limits.max_headers + 2:
                    self.refuse(431, f"the request has more than {self._limits.max_headers} header fields")
                    return
            try:  # reader.feed, inlined on this path
                reader.parser.feed_data(piece)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
                reader.parser_stopped(piece, exc)
            start = end

    # what the reader asks
    def headed(self, request: PendingRequest, size: int, chunked: bool, expects: bool) -> bool:
        """A request's head is complete: its body is due ``read_timeout`` after
        its first byte, and the door decides (False: parsing stops, its answer queued)."""
        if size or chunked:
            deadline = self._deadline
            deadline.at = when = self._began + self._read_timeout
            if when < deadline.armed_at:
                deadline.arm()
        verdict = decide(self._shared, request, self._peer, size, chunked, expects)
        if verdict is Verdict.CLOSING:
            self.refuse_request(request)
            return False
        if expects and verdict is Verdict.ADMITTED and self._reader.parser.get_http_version() == "1.1":  # RFC 9110 15.2
            if self._ready or self._answering():
                request.continue_owed = True  # sent now, it would be taken for an earlier request's
            elif self._transport is not None:
                self._transport.write(wire.CONTINUE)
        return True

    def received(self, request: PendingRequest) -> None:
        """A request arrived whole: answered in its turn."""
        self._deadline.at = 0.0
        if request.response is not None and request.keep_alive and not self._waiting():
            self._refused_at_once(request)
            return
        if not request.keep_alive:
            self.stopped = True  # what follows is not read
            self._pause_reading()
        if (
            self._relay is not None
            and request.response is None
            and not request.body_none
            and not self._waiting()
            and self._relayed_now(request)
        ):
            return
        self._ready.append(request)
        if not self._answering():
            self._worker = self._loop.create_task(self._answer())

    def _relayed_now(self, request: PendingRequest) -> bool:
        """Offer the request to ``relay``, which answers it by callbacks (``_relay_answered``),
        maybe before this returns; False: it did not take it."""
        assert self._relay is not None
        self._relaying = request
        body = b"".join(request.chunks)
        request.chunks = []
        try:
            taken = self._relay(request.method, request.path, request.headers, body,
                                lambda response: self._relay_answered(request, response))  # fmt: skip
        except Exception:  # a bug: answered in shape (as ``_answer`` answers a handler's), the connection goes on
            log.exception("unexpected error relaying %s %s", request.method, request.path)
            if self._relaying is request:  # not answered before it failed
                self._relaying = None
                request.response = wire.error(500, "internal error; the server log has the details")
                self._ready.append(request)
                self._worker = self._loop.create_task(self._answer())
            return True
        if taken:
            return True
        self._relaying = None
        request.chunks = [body]
        return False

    def _relay_answered(self, request: PendingRequest, response: Response) -> None:
        if self._relaying is not request:
            return  # answered already (a relay that failed after it was taken: its 500 went instead)
        self._relaying = None
        request.release(self._budget)
        over, self._relay_over = self._relay_over, None
        if over is not None and not over.done():
            over.set_result(None)
        transport = self._transport
        if transport is None:
            return
        ready = self._ready
        keep_alive = request.keep_alive and not self._draining and not (self._eof and not ready)
        transport.write(wire.encode(response, keep_alive, request.head))
        if not keep_alive:
            self._end(request.linger)
        elif ready:  # pipelined behind it: answered in order, once this answer is taken (flow control)
            self._worker = self._loop.create_task(self._answer(drain_first=True))
        else:
            self._all_answered()

    def _waiting(self) -> bool:
        """Answers are queued, being made, or not taken by the client."""
        return bool(self._ready) or self._answering() or self._pacing.writing_paused

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
    def refuse(self, status: int, message: str) -> None:
        """The request cannot be parsed or read in time: the error is its
        answer, and the connection closes after it."""
        request = self._reader.current
        if request is None:  # its head never reached the parser
            request = PendingRequest()
        else:
            request.release(self._budget)
        request.response = wire.error(status, message)
        self.refuse_request(request)

    def refuse_request(self, request: PendingRequest) -> None:
        """Queue the request's answer, read no more of the connection, and
        close it once the answer is out."""
        request.keep_alive = False
        request.linger = True
        self._reader.forget()
        self._head.clear()
        self._backlog = b""
        self.stopped = True
        self._deadline.clear()
        self._pause_reading()
        self._ready.append(request)
        if not self._answering():
            self._worker = self._loop.create_task(self._answer())

    # answers
    def _answering(self) -> bool:
        return self._relaying is not None or (self._worker is not None and not self._worker.done())

    async def _answer(self, drain_first: bool = False) -> None:
        if drain_first:
            await self._pacing.drained()
        ready = self._ready
        handle = self._shared.handle
        while ready and self._transport is not None:
            request = ready.popleft()
            if self._pacing.reading_paused:
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
            await self._pacing.drained()
        if self._transport is None or ready:
            return
        self._all_answered()

    def _all_answered(self) -> None:
        """No answer is queued: the connection idles, or the request arriving may go on."""
        assert self._transport is not None
        current = self._reader.current
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
        self._pacing.writing_paused = False  # what is written is the last: read (and drop) the rest regardless
        self._resume_reading()
        self._deadline.set(self._loop.time() + self._limits.linger_timeout)
        if self._busy and self._connections is not None:
            self._busy = False
            self._connections.idle_again(self)  # the first to go when room is needed

    # flow control
    def _proceed(self) -> None:
        """Read on, first what was held back, if there is room for it."""
        if self.stopped or self._pacing.writing_paused or len(self._ready) >= self._max_pipelined:
            return
        if self._backlog:
            backlog, self._backlog = self._backlog, b""
            self._take(backlog)
            if self._backlog or self.stopped:
                return
        self._resume_reading()

    def _pause_reading(self) -> None:
        self._pacing.pause_reading()

    def _resume_reading(self) -> None:
        paused = self._pacing.resume_reading()
        if paused is None:
            return
        at = self._deadline.at
        if at:
            if self._reader.current is not None or self._head:
                # time paused by us is not the client's: its request's deadlines move on
                self._began += paused
                at += paused
            self._deadline.set(at)  # the timer may have fired while paused

    def _write_timed_out(self) -> None:
        if self._transport is not None:
            log.info("closing %s: our answers went unread for %g s", self._peer, self._limits.write_timeout)
            self._transport.abort()

    def _timed_out(self) -> None:
        if self._pacing.reading_paused and not self._lingering:
            return  # not reading: the deadline moves on when reading resumes
        self._deadline.clear()
        if self._lingering or (self._reader.current is None and not self._head):
            self.close()  # idle past the keep-alive timeout, silent since it connected, or done lingering
        elif self._reader.current is None:
            self.refuse(408, f"the request's headers did not arrive within {self._limits.head_timeout:g} s")
        else:
            self.refuse(408, f"the request did not arrive within {self._limits.read_timeout:g} s")

    # the server's side
    def drain(self) -> asyncio.Future[None] | None:
        """From now on close after each answer; what to wait for while one is made, if it is."""
        self._draining = True
        if self._relaying is not None:
            if self._relay_over is None:
                self._relay_over = self._loop.create_future()
            return self._relay_over
        if self._answering():
            return self._worker
        self.close()
        return None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
