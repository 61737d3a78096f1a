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

One stream is one exchange (``exchanges``): once screened (``Screen``) and
admitted (``Gate``), the request's headers and whole body go to ``handle``,
and its ``Reply`` goes back as HEADERS, DATA and trailing HEADERS. This
module is the connection: the preface, reading and checking frames,
SETTINGS, PING, GOAWAY, the connection's windows and its timeouts.

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
from turnout.transports.http2.allowance import Conduct
from turnout.transports.http2.exchanges import Exchanges
from turnout.transports.http2.shared import Shared

log = logging.getLogger("turnout.http2")

_PREFACE, _FIRST_FRAME, _OPEN = 0, 1, 2  # what the connection waits for


class Http2Protocol(asyncio.Protocol):
    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._limits = limits = shared.limits
        self._transport: asyncio.Transport | None = None
        self._out: asyncio.Transport | None = None  # the transport, until the server closes the connection
        # frames are not read: closed, or replies wait for the client to read (the write buffer is full)
        self._halted = True
        self._stage = _PREFACE
        self._settled = False  # the client's first SETTINGS arrived
        self._buffer = bytearray()
        # (stream id, HEADERS flags, block so far, CONTINUATION frames so far)
        self._continuation: tuple[int, int, bytearray, int] | None = None
        now = time.monotonic()
        self._conduct = Conduct(limits, now)
        self._glitch = self._conduct.glitch
        self._exchanges = Exchanges(shared, self._write, self._conduct, self._busy, self._idle)
        self._outbox = self._exchanges.outbox
        self._going_away = False
        self._idle_since = now
        self._timer: asyncio.TimerHandle | None = None  # the preface timeout, then the idle timeout
        self._stall: asyncio.TimerHandle | None = None  # the write timeout, while the client reads nothing
        self.idle = self._exchanges.idle  # set while no stream is open (shutdown waits for it)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        shared = self._shared
        if shared.connections is not None and not shared.connections.open(self):
            self._transport.close()  # full of busy connections: refused before a byte is read
            return
        self._out = self._transport
        self._halted = False
        self._exchanges.peer = peer_address(transport)
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
        self._exchanges.teardown()
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
            self._exchanges.arriving.clear()
            self._abort(exc.code, exc.reason)
            return
        del buffer[:position]
        if self._exchanges.arriving:  # most requests end in the read that opens them: no call
            self._exchanges.arm_read_timeouts()

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
            self._exchanges.on_data(flags, stream_id, payload)
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
            if len(payload) != 4:
                raise f.ProtocolViolation(f.FRAME_SIZE_ERROR, "RST_STREAM must carry 4 bytes")
            if stream_id == 0:
                raise f.ProtocolViolation(f.PROTOCOL_ERROR, "RST_STREAM on stream 0")
            self._exchanges.on_rst_stream(stream_id)
        elif kind == f.GOAWAY:
            self._glitch("GOAWAY")
            self._going_away = self._exchanges.refusing = True  # the client opens no more streams; ours finish
            self._close_if_done()
        elif kind == f.PUSH_PROMISE:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "clients cannot push")
        elif kind == f.PRIORITY:
            if stream_id == 0:
                raise f.ProtocolViolation(f.PROTOCOL_ERROR, "PRIORITY on stream 0")
            self._glitch("PRIORITY")
            if len(payload) != 5 and stream_id in self._exchanges.streams:
                self._exchanges.reset(stream_id, f.FRAME_SIZE_ERROR)
        else:
            self._glitch("an unknown frame type")  # otherwise ignored (RFC 9113 section 4.1)

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
            self._exchanges.on_header_block(stream_id, flags, payload)
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
            self._exchanges.on_header_block(stream_id, first_flags, bytes(block))
        else:
            if not payload:
                self._glitch("an empty CONTINUATION")
            self._continuation = (stream_id, first_flags, block, count)

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
        self._exchanges.on_window_update(stream_id, increment)

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
                self._outbox.shift(self._exchanges.streams, value)
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

    # connection
    def _busy(self) -> None:
        """Its first stream opened: not idle for the idle timeout, nor closed to make room."""
        if self._shared.connections is not None:
            self._shared.connections.busy(self)

    def _idle(self) -> None:
        self._idle_since = time.monotonic()
        if self._shared.connections is not None:
            self._shared.connections.idle_again(self)
        self._close_if_done()

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
        if not self._exchanges.streams:
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
        self._exchanges.teardown()
        if self._transport is not None:
            self._transport.abort()

    def _write(self, data: bytes) -> None:
        out = self._out
        if out is not None:
            out.write(data)

    def _abort(self, code: int, reason: str) -> None:
        log.debug("closing an HTTP/2 connection: %s", reason)
        self._write(f.goaway(self._exchanges.last_stream_id, code, reason))
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
        self._exchanges.teardown()
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
        if self._going_away and not self._exchanges.streams:
            self._close()

    def go_away(self) -> None:
        """Refuse new streams, let open ones finish, then close (graceful shutdown)."""
        if self._out is None:
            return
        self._going_away = self._exchanges.refusing = True
        self._write(f.goaway(self._exchanges.last_stream_id, f.NO_ERROR))
        self._close_if_done()

    def close(self) -> None:
        """Close now: the connection limit making room (the connection is
        idle), or a shutdown whose grace has passed."""
        if self._out is None:
            if self._transport is not None:
                self._transport.close()  # lingering after GOAWAY: no longer
            return
        if not self._going_away:
            self._going_away = self._exchanges.refusing = True
            self._write(f.goaway(self._exchanges.last_stream_id, f.NO_ERROR))
        self._close()
