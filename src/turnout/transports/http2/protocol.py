"""One HTTP/2 connection (RFC 9113) carrying request/response exchanges.

What it implements: the connection preface (whose first frame must be
SETTINGS) and the SETTINGS exchange, HEADERS/CONTINUATION (HPACK through
``headers``, requests checked by ``fields``), DATA with padding, flow control
both ways, PING, RST_STREAM (cancels the stream's handler), GOAWAY both ways
(a graceful shutdown lets open streams finish), a limit on concurrent streams
and on a request body's size. It does not implement server push or
priorities (both optional), or the HTTP/1.1 Upgrade path: clients use prior
knowledge, as gRPC clients do.

What one client may cost is bounded by ``Http2Limits``, because everything
runs on one event loop and any unbounded per-byte cost becomes an outage for
every client:

- memory: request bodies are held against the shared ``BodyBudget`` (the
  stream is shed when it refuses) and, per connection, stop being credited
  past the largest body allowed; replies wait in place while the transport's
  write buffer is above its high-water mark, and meanwhile the socket is not
  read (``pause_writing``), so a client that never reads cannot make the
  server queue acknowledgements or replies;
- CPU: frames of at most 16 KiB, header blocks and their CONTINUATION frames
  capped, HPACK kept linear (``headers``), two token buckets (``allowance``)
  for resets and for frames that make no progress, answered with GOAWAY
  ENHANCE_YOUR_CALM when empty, and a bounded number of frames per turn of
  the event loop, so that one connection's read never holds it for long;
- time: preface, idle, read and write timeouts; the shared ``Connections``
  limit closes the longest-idle connection when full.

One stream is one exchange: once screened (``Screen``) and admitted
(``Gate``), the request's headers and whole body go to ``handle``, and its
``Reply`` goes back as HEADERS, DATA and trailing HEADERS.

Event-loop only: no lock.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from typing import cast

from turnout.transports.addresses import peer_address
from turnout.transports.http2 import frames as f
from turnout.transports.http2.allowance import Allowance
from turnout.transports.http2.fields import Malformed
from turnout.transports.http2.headers import HeaderDecoder
from turnout.transports.http2.outbox import Outbox
from turnout.transports.http2.shared import Request, Shared
from turnout.transports.http2.stream import Stream

log = logging.getLogger("turnout.http2")

_PREFACE, _FIRST_FRAME, _OPEN = 0, 1, 2  # what the connection waits for


class Http2Protocol(asyncio.Protocol):
    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._limits = limits = shared.limits
        self._handle = shared.handle
        self._budget = shared.budget
        self._limit = shared.max_body_bytes
        self._transport: asyncio.Transport | None = None
        self._out: asyncio.Transport | None = None  # the transport, until the server closes the connection
        # frames are not read: closed, or replies wait for the client to read (the write buffer is full)
        self._halted = True
        self._stage = _PREFACE
        self._settled = False  # the client's first SETTINGS arrived
        self._buffer = bytearray()
        self._decoder = HeaderDecoder(limits.max_header_bytes)
        self._streams: dict[int, Stream] = {}
        # streams opened by the frames of this read, their read timeout not yet armed: most
        # requests end in the read that opens them, so their timer is never made
        self._arriving: list[tuple[int, Stream]] = []
        self._last_stream_id = 0
        # (stream id, HEADERS flags, block so far, CONTINUATION frames so far)
        self._continuation: tuple[int, int, bytearray, int] | None = None
        self._outbox = Outbox(self._write, self._finish, self._write_timed_out, limits.write_timeout)
        # what we let the peer send
        self._conn_unacked = 0
        self._conn_outstanding = limits.connection_window  # credit the peer holds
        self._buffered = 0  # request body bytes held for streams not yet answered
        self._buffer_cap = max(shared.max_body_bytes, limits.connection_window)  # one largest body at a time
        # credit back once half a window is spent: fewer WINDOW_UPDATE frames, never a stall
        self._credit_at = limits.connection_window // 2
        self._stream_credit_at = limits.stream_window // 2
        self._max_streams = limits.max_concurrent_streams
        self._going_away = False
        self._peer = ""
        now = time.monotonic()
        self._resets = Allowance(limits.reset_burst, limits.resets_per_second, now)
        self._glitches = Allowance(limits.glitch_burst, limits.glitches_per_second, now)
        self._answered = 0  # streams whose handler answered: the buckets' progress
        self._idle_since = now
        self._timer: asyncio.TimerHandle | None = None  # the preface timeout, then the idle timeout
        self._stall: asyncio.TimerHandle | None = None  # the write timeout, while the client reads nothing
        self.idle = asyncio.Event()  # set while no stream is open (shutdown waits for it)
        self.idle.set()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        shared = self._shared
        if shared.connections is not None and not shared.connections.open(self):
            self._transport.close()  # full of busy connections: refused before a byte is read
            return
        self._out = self._transport
        self._halted = False
        self._peer = peer_address(transport)
        shared.protocols.add(self)
        limits = self._limits
        self._out.write(
            f.settings(
                {
                    f.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                    f.INITIAL_WINDOW_SIZE: limits.stream_window,
                    f.MAX_FRAME_SIZE: limits.max_frame_size,
                    f.MAX_HEADER_LIST_SIZE: limits.max_header_bytes,
                    f.ENABLE_PUSH: 0,
                }
            )
            + f.window_update(0, limits.connection_window - f.DEFAULT_WINDOW)
        )
        self._timer = asyncio.get_running_loop().call_later(limits.preface_timeout, self._preface_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._out = None
        self._halted = True
        self._teardown()
        for timer in (self._timer, self._stall):
            if timer is not None:
                timer.cancel()
        self._timer = self._stall = None
        self._shared.protocols.discard(self)
        if self._shared.connections is not None:
            self._shared.connections.closed(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._out is None:
            return  # closed here: what still arrives is dropped
        self._buffer += data
        if not self._halted:
            self._consume()

    def pause_writing(self) -> None:
        """The client reads slower than we answer: stop reading its frames
        until it catches up, so nothing it sends meanwhile (PINGs, SETTINGS,
        requests) can add to what waits for it."""
        self._outbox.paused = True
        self._halted = True
        if self._out is not None:
            self._out.pause_reading()
            if self._stall is None:
                self._stall = asyncio.get_running_loop().call_later(self._limits.write_timeout, self._stalled)

    def resume_writing(self) -> None:
        # Deferred: a TLS transport calls this from inside our own write()
        # when its buffer drains, and frames must not be read re-entrantly.
        self._outbox.paused = False
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        asyncio.get_running_loop().call_soon(self._resumed)

    def _resumed(self) -> None:
        if self._outbox.paused or self._out is None:
            return
        self._halted = False
        self._outbox.flush()
        if not self._halted:
            self._consume()  # frames that arrived before the pause
        if not self._halted and self._out is not None:
            self._out.resume_reading()

    # frames
    def _consume(self) -> None:
        if self._stage != _OPEN and not self._opening():
            return
        buffer = self._buffer
        position, available = 0, len(buffer)
        max_frame = self._limits.max_frame_size
        turn = self._limits.frames_per_turn
        try:
            while available - position >= f.HEADER_SIZE and not self._halted:
                if turn == 0:
                    self._yield_turn()
                    break
                turn -= 1
                high, low, kind, flags, stream_id = f.HEADER.unpack_from(buffer, position)
                size = (high << 8) | low
                if size > max_frame:
                    raise f.ProtocolViolation(f.FRAME_SIZE_ERROR, f"a frame of {size} bytes exceeds {max_frame}")
                end = position + f.HEADER_SIZE + size
                if end > available:
                    break
                payload = bytes(buffer[position + f.HEADER_SIZE : end])
                position = end
                self._frame(kind, flags, stream_id & 0x7FFFFFFF, payload)
        except f.ProtocolViolation as exc:
            self._arriving.clear()
            self._abort(exc.code, exc.reason)
            return
        del buffer[:position]
        if self._arriving:
            self._arm_read_timeouts()

    def _arm_read_timeouts(self) -> None:
        """The streams this read opened and did not complete get their read timeout."""
        loop = asyncio.get_running_loop()
        timeout = self._limits.read_timeout
        for stream_id, stream in self._arriving:
            if stream.task is None and stream.timer is None and self._streams.get(stream_id) is stream:
                stream.timer = loop.call_later(timeout, self._read_timed_out, stream_id)
        self._arriving.clear()

    def _yield_turn(self) -> None:
        """One read brought many frames: the rest wait while other connections
        run (20,000 tiny HEADERS frames fit in one 256 KiB read: ~0.5 s of work)."""
        self._halted = True
        if self._out is not None:
            self._out.pause_reading()
        asyncio.get_running_loop().call_soon(self._resumed)

    def _opening(self) -> bool:
        """True once the preface is past and the first frame is known to be SETTINGS."""
        buffer = self._buffer
        if self._stage == _PREFACE:
            if len(buffer) < len(f.PREFACE):
                if not f.PREFACE.startswith(bytes(buffer)):
                    self._abort(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return False
            if not buffer.startswith(f.PREFACE):
                self._abort(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return False
            del buffer[: len(f.PREFACE)]
            self._stage = _FIRST_FRAME
        if len(buffer) < f.HEADER_SIZE:
            return False
        if buffer[3] != f.SETTINGS or buffer[4] & f.ACK:
            self._abort(f.PROTOCOL_ERROR, "the first frame after the preface must be SETTINGS")
            return False
        self._stage = _OPEN
        return True

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuation is not None and kind != f.CONTINUATION:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "expected CONTINUATION")
        if kind == f.DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == f.HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif kind == f.CONTINUATION:
            self._on_continuation(flags, stream_id, payload)
        elif kind == f.WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == f.SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif kind == f.PING:
            if len(payload) != 8 or stream_id:
                raise f.ProtocolViolation(f.FRAME_SIZE_ERROR, "PING must carry 8 bytes on stream 0")
            self._glitch("PING")
            if not flags & f.ACK:
                self._write(f.frame(f.PING, f.ACK, 0, payload))
        elif kind == f.RST_STREAM:
            self._on_rst_stream(stream_id, payload)
        elif kind == f.GOAWAY:
            self._glitch("GOAWAY")
            self._going_away = True  # the client opens no more streams; ours finish
            self._close_if_done()
        elif kind == f.PUSH_PROMISE:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "clients cannot push")
        elif kind == f.PRIORITY:
            if stream_id == 0:
                raise f.ProtocolViolation(f.PROTOCOL_ERROR, "PRIORITY on stream 0")
            self._glitch("PRIORITY")
            if len(payload) != 5 and stream_id in self._streams:
                self._reset(stream_id, f.FRAME_SIZE_ERROR)
        else:
            self._glitch("an unknown frame type")  # otherwise ignored (RFC 9113 section 4.1)

    def _glitch(self, what: str) -> None:
        """A frame that makes the server work without moving a request forward."""
        if not self._glitches.spend(time.monotonic(), self._answered * self._limits.glitches_per_answer):
            raise f.ProtocolViolation(f.ENHANCE_YOUR_CALM, f"too many frames without progress (last: {what})")

    def _count_reset(self) -> None:
        """A stream the client reset before its answer, or opened past the limit."""
        if not self._resets.spend(time.monotonic(), self._answered):
            raise f.ProtocolViolation(f.ENHANCE_YOUR_CALM, "too many streams reset or refused")

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & f.PADDED:  # the test written out: every request's path
            payload = f.strip_padding(flags, payload, "HEADERS")
        if flags & f.PRIORITY_FLAG:
            if len(payload) < 5:
                raise f.ProtocolViolation(f.FRAME_SIZE_ERROR, "HEADERS priority fields cut short")
            payload = payload[5:]
        if len(payload) > self._limits.max_header_bytes:
            raise f.ProtocolViolation(f.COMPRESSION_ERROR, "header block too large")
        if flags & f.END_HEADERS:
            self._on_header_block(stream_id, flags, payload)
        else:
            self._continuation = (stream_id, flags, bytearray(payload), 0)

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuation is None or self._continuation[0] != stream_id:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        _, first_flags, block, count = self._continuation
        count += 1
        if count > self._limits.max_continuations:
            raise f.ProtocolViolation(f.ENHANCE_YOUR_CALM, "too many CONTINUATION frames")
        block += payload
        if len(block) > self._limits.max_header_bytes:
            raise f.ProtocolViolation(f.COMPRESSION_ERROR, "header block too large")
        if flags & f.END_HEADERS:
            self._continuation = None
            self._on_header_block(stream_id, first_flags, bytes(block))
        else:
            if not payload:
                self._glitch("an empty CONTINUATION")
            self._continuation = (stream_id, first_flags, block, count)

    def _on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        # Every block is decoded, whatever becomes of its stream: the HPACK table must see them all.
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._on_trailers(stream_id, stream, flags, block)
            return
        if stream_id % 2 == 0:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, f"stream {stream_id} cannot be opened by a client")
        if stream_id <= self._last_stream_id:  # a stream closed here (refused or answered early, reset)
            self._decoder.trailers(block)
            self._glitch("HEADERS on a closed stream")
            return
        headers = self._decoder.request(block)
        self._last_stream_id = stream_id
        if isinstance(headers, Malformed):  # a stream error: the handler never sees it
            log.debug("stream %d: a malformed request: %s", stream_id, headers.reason)
            self._write(f.rst_stream(stream_id, f.PROTOCOL_ERROR))
            self._glitch("a malformed request")
            return
        if self._going_away:
            self._write(f.rst_stream(stream_id, f.REFUSED_STREAM))
            return
        if len(self._streams) >= self._max_streams:
            self._write(f.rst_stream(stream_id, f.REFUSED_STREAM))
            self._count_reset()
            return
        stream = Stream(headers, self._outbox.initial_window)
        shared = self._shared
        if not self._streams:  # busy now: not idle for the idle timeout, nor closed to make room
            self.idle.clear()
            if shared.connections is not None:
                shared.connections.busy(self)
        self._streams[stream_id] = stream
        stream.ended = bool(flags & f.END_STREAM)
        refusal = shared.screen(headers, self._peer)
        if refusal is not None:
            self._outbox.reply(stream_id, stream, refusal)  # and RST_STREAM(NO_ERROR) if the client is still sending
            return
        ticket = shared.gate.enter(headers[":path"])
        if ticket is None:
            self._shed(stream_id, stream)
            return
        stream.ticket = ticket
        if stream.ended:
            self._dispatch(stream_id, stream)
        else:
            self._arriving.append((stream_id, stream))  # its read timeout, once this read's frames are done

    def _on_trailers(self, stream_id: int, stream: Stream, flags: int, block: bytes) -> None:
        trailers = self._decoder.trailers(block)
        if not flags & f.END_STREAM or stream.ended:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "HEADERS after the request's headers must end it")
        if isinstance(trailers, Malformed):
            log.debug("stream %d: malformed trailers: %s", stream_id, trailers.reason)
            self._reset(stream_id, f.PROTOCOL_ERROR)
            self._glitch("malformed trailers")
            return
        stream.ended = True
        if stream.task is None:
            self._dispatch(stream_id, stream)

    def _read_timed_out(self, stream_id: int) -> None:
        """A request still arriving after the read timeout (a client trickling
        it): the stream is reset (CANCEL), its buffered body dropped."""
        stream = self._streams.get(stream_id)
        if stream is not None and stream.task is None:
            stream.timer = None
            log.debug("stream %d: the request did not arrive within %g s", stream_id, self._limits.read_timeout)
            self._reset(stream_id, f.CANCEL)

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "DATA on stream 0")
        self._conn_outstanding -= len(payload)  # padding included, as flow control counts it
        if self._conn_outstanding < 0:
            raise f.ProtocolViolation(f.FLOW_CONTROL_ERROR, "the client sent more than its window")
        self._conn_unacked += len(payload)
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_stream_id:
                raise f.ProtocolViolation(f.PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            self._credit_connection()  # a stream closed here: the bytes still count, and are credited back
            if len(payload) == 0:
                self._glitch("an empty DATA frame")
            return
        if stream.ended:
            self._reset(stream_id, f.STREAM_CLOSED)
            self._credit_connection()
            return
        data = f.strip_padding(flags, payload, "DATA") if flags & f.PADDED else payload
        if not data and not flags & f.END_STREAM:
            self._glitch("an empty DATA frame")
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

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise f.ProtocolViolation(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE must carry 4 bytes")
        increment = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise f.ProtocolViolation(f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            if not self._outbox.grow(increment):
                self._glitch("a WINDOW_UPDATE nothing waits for")
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_stream_id:
                raise f.ProtocolViolation(f.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            self._glitch("a WINDOW_UPDATE on a closed stream")
            return
        if increment == 0:
            self._reset(stream_id, f.PROTOCOL_ERROR)
            self._glitch("a WINDOW_UPDATE of 0")
            return
        stream.send_window += increment
        if stream.send_window > f.MAX_WINDOW:
            self._reset(stream_id, f.FLOW_CONTROL_ERROR)
            return
        if stream.pending is not None:
            self._outbox.send(stream_id, stream)
        else:
            self._glitch("a WINDOW_UPDATE nothing waits for")

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        self._glitch("SETTINGS")
        if flags & f.ACK:
            if payload:
                raise f.ProtocolViolation(f.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) > 6 * self._limits.max_settings:
            raise f.ProtocolViolation(f.ENHANCE_YOUR_CALM, "too many settings in one frame")
        for key, value in f.parse_settings(payload):
            if key == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise f.ProtocolViolation(f.FLOW_CONTROL_ERROR, "initial window too large")
                self._outbox.shift(self._streams, value)
            elif key == f.MAX_FRAME_SIZE:
                if not f.DEFAULT_MAX_FRAME <= value <= f.MAX_FRAME_LIMIT:
                    raise f.ProtocolViolation(f.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
                self._outbox.max_frame = value
        self._write(f.frame(f.SETTINGS, f.ACK, 0))
        if not self._settled:  # the preface is complete: from now on the idle timeout applies
            self._settled = True
            if self._timer is not None:
                self._timer.cancel()
            self._idle_since = time.monotonic()
            self._timer = asyncio.get_running_loop().call_later(self._limits.idle_timeout, self._idle_check)
        self._outbox.flush()

    def _on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise f.ProtocolViolation(f.FRAME_SIZE_ERROR, "RST_STREAM must carry 4 bytes")
        if stream_id == 0:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_stream_id:
                raise f.ProtocolViolation(f.PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
            self._glitch("RST_STREAM on a closed stream")
            return
        if stream.task is not None:
            stream.task.cancel()  # the client gave up: stop working for it
        self._release(stream_id, stream)
        self._count_reset()

    # exchanges
    def _dispatch(self, stream_id: int, stream: Stream) -> None:
        stream.stop_timer()
        body = None if stream.too_large else b"".join(stream.body)
        stream.body = []
        request = Request(stream_id, stream.headers, body, self._peer)
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
            self._reset(stream_id, f.INTERNAL_ERROR)
            return
        finally:
            request.body = None
            self._drop_body(stream)
        if self._streams.get(stream_id) is not stream:
            return  # reset or disconnected meanwhile
        self._answered += 1  # progress: it buys back a reset and some glitches
        self._outbox.reply(stream_id, stream, reply)

    def _shed(self, stream_id: int, stream: Stream) -> None:
        """Refuse a stream that the gate or the body budget cannot take, at once."""
        self._drop_body(stream)
        shed = self._shared.shed
        if shed is None:
            self._reset(stream_id, f.REFUSED_STREAM)
        else:
            self._outbox.reply(stream_id, stream, shed)

    def _write_timed_out(self, stream_id: int) -> None:
        """A reply that has not moved for the write timeout (the client gives
        no window): the stream is reset (CANCEL), so it stops counting as busy."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.pending is None:
            return
        stream.timer = None
        left = stream.stamp + self._limits.write_timeout - time.monotonic()
        if left > 0:
            stream.timer = asyncio.get_running_loop().call_later(left, self._write_timed_out, stream_id)
            return
        log.debug("stream %d: the reply did not move for %g s", stream_id, self._limits.write_timeout)
        self._reset(stream_id, f.CANCEL)

    def _finish(self, stream_id: int, stream: Stream) -> None:
        """The reply is out. A client still sending (its body was refused early) is told to stop."""
        if not stream.ended:
            self._write(f.rst_stream(stream_id, f.NO_ERROR))
        self._release(stream_id, stream)

    def _release(self, stream_id: int, stream: Stream) -> None:
        """The stream ends, however it ends: everything it held goes back."""
        if self._streams.pop(stream_id, None) is None:
            return
        stream.stop_timer()
        if stream.pending is not None:  # a reply cut short
            self._outbox.forget(stream_id)
        self._drop_body(stream)
        ticket = stream.ticket
        if ticket is not None:
            stream.ticket = None
            ticket.leave()
        if self._conn_unacked >= self._credit_at:
            self._credit_connection()
        if not self._streams:  # idle from now
            self.idle.set()
            self._idle_since = time.monotonic()
            if self._shared.connections is not None:
                self._shared.connections.idle_again(self)
            self._close_if_done()

    def _reset(self, stream_id: int, code: int) -> None:
        stream = self._streams.get(stream_id)
        self._write(f.rst_stream(stream_id, code))
        if stream is not None:
            if stream.task is not None and stream.task is not asyncio.current_task():
                stream.task.cancel()
            self._release(stream_id, stream)

    # connection
    def _preface_late(self) -> None:
        self._timer = None
        log.debug("closing an HTTP/2 connection: no preface and SETTINGS within %g s", self._limits.preface_timeout)
        self._close()

    def _idle_check(self) -> None:
        """The idle timeout, checked lazily: one timer per connection, not one per stream."""
        self._timer = None
        if self._out is None:
            return
        wait = self._limits.idle_timeout
        if not self._streams:
            wait += self._idle_since - time.monotonic()
            if wait <= 0:
                log.debug("closing an HTTP/2 connection idle for %g s", self._limits.idle_timeout)
                self.go_away()
                return
        self._timer = asyncio.get_running_loop().call_later(wait, self._idle_check)

    def _stalled(self) -> None:
        """The client has read nothing for the write timeout: give up on it."""
        self._stall = None
        log.debug("aborting an HTTP/2 connection: replies unread for %g s", self._limits.write_timeout)
        self._out = None
        self._halted = True
        self._teardown()
        if self._transport is not None:
            self._transport.abort()

    def _teardown(self) -> None:
        """Every open stream ends unanswered: handlers cancelled, bodies and gate passes given back."""
        streams = self._streams
        if not streams:
            return
        self._streams = {}
        self._outbox.clear()
        for stream in streams.values():
            stream.stop_timer()
            if stream.task is not None:
                stream.task.cancel()
            self._drop_body(stream)
            if stream.ticket is not None:
                stream.ticket.leave()
                stream.ticket = None
        self.idle.set()

    def _write(self, data: bytes) -> None:
        out = self._out
        if out is not None:
            out.write(data)

    def _abort(self, code: int, reason: str) -> None:
        log.debug("closing an HTTP/2 connection: %s", reason)
        self._write(f.goaway(self._last_stream_id, code, reason))
        self._close()

    def _close(self) -> None:
        """What is written goes first, then FIN; what the client still sends
        meanwhile is read and dropped for the linger timeout, so that it reads
        our GOAWAY rather than a reset (closing with unread bytes sends RST)."""
        out = self._out
        if out is None:
            return
        self._out = None
        self._halted = True
        self._teardown()
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        if out.can_write_eof():
            try:
                out.write_eof()
            except OSError:  # the client has gone already
                out.abort()
                return
            if not out.is_reading():
                out.resume_reading()
            self._timer = loop.call_later(self._limits.linger_timeout, out.close)
        else:
            self._timer = None
            out.close()
        if out.get_write_buffer_size() and self._stall is None:  # the client may never read the rest
            self._stall = loop.call_later(self._limits.write_timeout, self._stalled)

    def _close_if_done(self) -> None:
        if self._going_away and not self._streams:
            self._close()

    def go_away(self) -> None:
        """Refuse new streams, let open ones finish, then close (graceful shutdown)."""
        if self._out is None:
            return
        self._going_away = True
        self._write(f.goaway(self._last_stream_id, f.NO_ERROR))
        self._close_if_done()

    def close(self) -> None:
        """Close now: the connection limit making room (the connection is
        idle), or a shutdown whose grace has passed."""
        if self._out is None:
            if self._transport is not None:
                self._transport.close()  # lingering after GOAWAY: no longer
            return
        if not self._going_away:
            self._going_away = True
            self._write(f.goaway(self._last_stream_id, f.NO_ERROR))
        self._close()
