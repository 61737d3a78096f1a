"""The streams one HTTP/2 connection carries, each one exchange: a request
as it arrives (header blocks, trailers, DATA), its handler, its reply.

Also what the peer may send (inbound flow control): request bodies are held
against the shared ``BodyBudget`` (the stream is shed when it refuses), each
stream's credit goes back once half its window is spent, and the
connection's stops being given back past the largest body allowed, so one
connection holds at most about one largest body unanswered.

The connection (``protocol``) reads and checks the frames and hands each
stream's here; a ``ProtocolViolation`` raised here closes the connection.
Event-loop only: no lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from turnout.transports.http2 import frames as f
from turnout.transports.http2.allowance import Conduct
from turnout.transports.http2.fields import Malformed
from turnout.transports.http2.headers import HeaderDecoder
from turnout.transports.http2.outbox import Outbox
from turnout.transports.http2.shared import Request, Shared
from turnout.transports.http2.stream import Stream

log = logging.getLogger("turnout.http2")


class Exchanges:
    def __init__(
        self,
        shared: Shared,
        write: Callable[[bytes], None],
        conduct: Conduct,
        busy: Callable[[], None],
        idle: Callable[[], None],
    ) -> None:
        self._shared = shared
        self._limits = limits = shared.limits
        self._handle = shared.handle
        self._budget = shared.budget
        self._limit = shared.max_body_bytes
        self._write = write
        self._conduct = conduct
        self._busy, self._idle = busy, idle  # the connection hears when its first stream opens, its last ends
        self.peer = ""
        self.refusing = False  # going away: new streams are refused
        self.streams: dict[int, Stream] = {}
        self.last_stream_id = 0
        # streams opened by the frames of this read, their read timeout not yet armed: most
        # requests end in the read that opens them, so their timer is never made
        self.arriving: list[tuple[int, Stream]] = []
        self._decoder = HeaderDecoder(limits.max_header_bytes)
        self.outbox = Outbox(write, self._finish, self._write_timed_out, limits.write_timeout)
        # what we let the peer send
        self._conn_unacked = 0
        self._conn_outstanding = limits.connection_window  # credit the peer holds
        self._buffered = 0  # request body bytes held for streams not yet answered
        self._buffer_cap = max(shared.max_body_bytes, limits.connection_window)  # one largest body at a time
        # credit back once half a window is spent: fewer WINDOW_UPDATE frames, never a stall
        self._credit_at = limits.connection_window // 2
        self._stream_credit_at = limits.stream_window // 2
        self._max_streams = limits.max_concurrent_streams
        self.idle = asyncio.Event()  # set while no stream is open (shutdown waits for it)
        self.idle.set()

    # requests arriving
    def on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        # Every block is decoded, whatever becomes of its stream: the HPACK table must see them all.
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._on_trailers(stream_id, stream, flags, block)
            return
        if stream_id % 2 == 0:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, f"stream {stream_id} cannot be opened by a client")
        if stream_id <= self.last_stream_id:  # a stream closed here (refused or answered early, reset)
            self._decoder.trailers(block)
            self._conduct.glitch("HEADERS on a closed stream")
            return
        headers = self._decoder.request(block)
        self.last_stream_id = stream_id
        if isinstance(headers, Malformed):  # a stream error: the handler never sees it
            log.debug("stream %d: a malformed request: %s", stream_id, headers.reason)
            self._write(f.rst_stream(stream_id, f.PROTOCOL_ERROR))
            self._conduct.glitch("a malformed request")
            return
        if self.refusing:
            self._write(f.rst_stream(stream_id, f.REFUSED_STREAM))
            return
        if len(self.streams) >= self._max_streams:
            self._write(f.rst_stream(stream_id, f.REFUSED_STREAM))
            self._conduct.reset()
            return
        stream = Stream(headers, self.outbox.initial_window)
        shared = self._shared
        if not self.streams:  # busy now: not idle for the idle timeout, nor closed to make room
            self.idle.clear()
            self._busy()
        self.streams[stream_id] = stream
        stream.ended = bool(flags & f.END_STREAM)
        refusal = shared.screen(headers, self.peer)
        if refusal is not None:
            self.outbox.reply(stream_id, stream, refusal)  # and RST_STREAM(NO_ERROR) if the client is still sending
            return
        ticket = shared.gate.enter(headers[":path"])
        if ticket is None:
            self._shed(stream_id, stream)
            return
        stream.ticket = ticket
        if stream.ended:
            self._dispatch(stream_id, stream)
        else:
            self.arriving.append((stream_id, stream))  # its read timeout, once this read's frames are done

    def _on_trailers(self, stream_id: int, stream: Stream, flags: int, block: bytes) -> None:
        trailers = self._decoder.trailers(block)
        if not flags & f.END_STREAM or stream.ended:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "HEADERS after the request's headers must end it")
        if isinstance(trailers, Malformed):
            log.debug("stream %d: malformed trailers: %s", stream_id, trailers.reason)
            self.reset(stream_id, f.PROTOCOL_ERROR)
            self._conduct.glitch("malformed trailers")
            return
        stream.ended = True
        if stream.task is None:
            self._dispatch(stream_id, stream)

    def arm_read_timeouts(self) -> None:
        """The streams this read opened and did not complete get their read timeout."""
        loop = asyncio.get_running_loop()
        timeout = self._limits.read_timeout
        for stream_id, stream in self.arriving:
            if stream.task is None and stream.timer is None and self.streams.get(stream_id) is stream:
                stream.timer = loop.call_later(timeout, self._read_timed_out, stream_id)
        self.arriving.clear()

    def _read_timed_out(self, stream_id: int) -> None:
        """A request still arriving after the read timeout (a client trickling
        it): the stream is reset (CANCEL), its buffered body dropped."""
        stream = self.streams.get(stream_id)
        if stream is not None and stream.task is None:
            stream.timer = None
            log.debug("stream %d: the request did not arrive within %g s", stream_id, self._limits.read_timeout)
            self.reset(stream_id, f.CANCEL)

    def on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "DATA on stream 0")
        self._conn_outstanding -= len(payload)  # padding included, as flow control counts it
        if self._conn_outstanding < 0:
            raise f.ProtocolViolation(f.FLOW_CONTROL_ERROR, "the client sent more than its window")
        self._conn_unacked += len(payload)
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_stream_id:
                raise f.ProtocolViolation(f.PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            self._credit_connection()  # a stream closed here: the bytes still count, and are credited back
            if len(payload) == 0:
                self._conduct.glitch("an empty DATA frame")
            return
        if stream.ended:
            self.reset(stream_id, f.STREAM_CLOSED)
            self._credit_connection()
            return
        data = f.strip_padding(flags, payload, "DATA") if flags & f.PADDED else payload
        if not data and not flags & f.END_STREAM:
            self._conduct.glitch("an empty DATA frame")
        stream.unacked += len(payload)
        if flags & f.END_STREAM:
            stream.ended = True
        if stream.task is None:  # still collecting the request
            stream.size += len(data)
            if stream.size > self._limit:
                stream.too_large = True
                self._drop_body(stream)
                self._dispatch(stream_id, stream)  # refused now; what follows is read and dropped
            elif data:
                if self._budget is not None and not self._budget.take(len(data)):
                    self._shed(stream_id, stream)  # the server holds all the bodies it may
                    self._credit_connection()
                    return
                stream.body.append(data)
                stream.held += len(data)
                self._buffered += len(data)
            if stream.ended and stream.task is None:
                self._dispatch(stream_id, stream)
        if not stream.ended and stream.unacked >= self._stream_credit_at:
            self._write(f.window_update(stream_id, stream.unacked))
            stream.unacked = 0
        if self._conn_unacked >= self._credit_at:
            self._credit_connection()

    def _drop_body(self, stream: Stream) -> None:
        held = stream.held
        if held:
            stream.held = 0
            self._buffered -= held
            if self._budget is not None:
                self._budget.give(held)
        if stream.body:
            stream.body = []

    def _credit_connection(self) -> None:
        """Give the peer back what it spent, unless request bodies held here are already at the cap."""
        if self._conn_unacked >= self._credit_at and self._buffered <= self._buffer_cap:
            self._write(f.window_update(0, self._conn_unacked))
            self._conn_outstanding += self._conn_unacked
            self._conn_unacked = 0

    # the client on a stream
    def on_window_update(self, stream_id: int, increment: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_stream_id:
                raise f.ProtocolViolation(f.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            self._conduct.glitch("a WINDOW_UPDATE on a closed stream")
            return
        if increment == 0:
            self.reset(stream_id, f.PROTOCOL_ERROR)
            self._conduct.glitch("a WINDOW_UPDATE of 0")
            return
        stream.send_window += increment
        if stream.send_window > f.MAX_WINDOW:
            self.reset(stream_id, f.FLOW_CONTROL_ERROR)
            return
        if stream.pending is not None:
            self.outbox.send(stream_id, stream)
        else:
            self._conduct.glitch("a WINDOW_UPDATE nothing waits for")

    def on_rst_stream(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_stream_id:
                raise f.ProtocolViolation(f.PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
            self._conduct.glitch("RST_STREAM on a closed stream")
            return
        if stream.task is not None:
            stream.task.cancel()  # the client gave up: stop working for it
        self._release(stream_id, stream)
        self._conduct.reset()

    # answers
    def _dispatch(self, stream_id: int, stream: Stream) -> None:
        stream.stop_timer()
        body = None if stream.too_large else b"".join(stream.body)
        stream.body = []
        request = Request(stream_id, stream.headers, body, self.peer)
        stream.task = asyncio.get_running_loop().create_task(self._answer(stream_id, stream, request))

    async def _answer(self, stream_id: int, stream: Stream, request: Request) -> None:
        # A task cancelled before its first step never enters this body: the
        # stream's release gives its body and its gate pass back, not this.
        try:
            reply = await self._handle(request)
        except asyncio.CancelledError:
            return
        except Exception:  # the handler maps every expected error; this is a bug
            log.exception("unexpected error answering stream %d", stream_id)
            self.reset(stream_id, f.INTERNAL_ERROR)
            return
        finally:
            request.body = None
            self._drop_body(stream)
        if self.streams.get(stream_id) is not stream:
            return  # reset or disconnected meanwhile
        self._conduct.answered += 1  # progress: it buys back a reset and some glitches
        self.outbox.reply(stream_id, stream, reply)

    def _shed(self, stream_id: int, stream: Stream) -> None:
        """Refuse a stream that the gate or the body budget cannot take, at once."""
        self._drop_body(stream)
        shed = self._shared.shed
        if shed is None:
            self.reset(stream_id, f.REFUSED_STREAM)
        else:
            self.outbox.reply(stream_id, stream, shed)

    def _write_timed_out(self, stream_id: int) -> None:
        """A reply that has not moved for the write timeout (the client gives
        no window): the stream is reset (CANCEL), so it stops counting as busy."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.pending is None:
            return
        stream.timer = None
        left = stream.stamp + self._limits.write_timeout - time.monotonic()
        if left > 0:
            stream.timer = asyncio.get_running_loop().call_later(left, self._write_timed_out, stream_id)
            return
        log.debug("stream %d: the reply did not move for %g s", stream_id, self._limits.write_timeout)
        self.reset(stream_id, f.CANCEL)

    def _finish(self, stream_id: int, stream: Stream) -> None:
        """The reply is out. A client still sending (its body was refused early) is told to stop."""
        if not stream.ended:
            self._write(f.rst_stream(stream_id, f.NO_ERROR))
        self._release(stream_id, stream)

    # ends
    def _release(self, stream_id: int, stream: Stream) -> None:
        """The stream ends, however it ends: everything it held goes back."""
        if self.streams.pop(stream_id, None) is None:
            return
        stream.stop_timer()
        if stream.pending is not None:  # a reply cut short
            self.outbox.forget(stream_id)
        self._drop_body(stream)
        ticket = stream.ticket
        if ticket is not None:
            stream.ticket = None
            ticket.leave()
        if self._conn_unacked >= self._credit_at:
            self._credit_connection()
        if not self.streams:  # idle from now
            self.idle.set()
            self._idle()

    def reset(self, stream_id: int, code: int) -> None:
        stream = self.streams.get(stream_id)
        self._write(f.rst_stream(stream_id, code))
        if stream is not None:
            if stream.task is not None and stream.task is not asyncio.current_task():
                stream.task.cancel()
            self._release(stream_id, stream)

    def teardown(self) -> None:
        """Every open stream ends unanswered: handlers cancelled, bodies and gate passes given back."""
        streams = self.streams
        if not streams:
            return
        self.streams = {}
        self.outbox.clear()
        for stream in streams.values():
            stream.stop_timer()
            if stream.task is not None:
                stream.task.cancel()
            self._drop_body(stream)
            if stream.ticket is not None:
                stream.ticket.leave()
                stream.ticket = None
        self.idle.set()
