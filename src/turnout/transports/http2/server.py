"""An HTTP/2 server for request/response exchanges, on asyncio, for gRPC's unary calls.

Why not grpcio's server: on one core its asyncio server peaks near 3,600 calls
per second with a servicer that does nothing (its threaded server ~5,900),
while turnout's REST path answers 11,000-14,000 inferences per second on the
same core. gRPC is the protocol clients pick for speed, so turnout frames it
itself, as it does HTTP/1.1 (``http_server``).

What it implements of RFC 9113: the connection preface and SETTINGS exchange,
HEADERS/CONTINUATION (HPACK through ``headers``), DATA with padding, flow
control both ways (receive windows are credited back as data is consumed, but
not while this connection's buffered request bodies exceed a cap, so a client
cannot make the server buffer without bound), PING, RST_STREAM (cancels the
stream's handler), GOAWAY both ways (a graceful shutdown lets open streams
finish), a limit on concurrent streams and on a request body's size. It does
not implement server push or priorities (both optional), or the HTTP/1.1
Upgrade path: clients use prior knowledge, as gRPC clients do.

One stream is one exchange: the request's headers and whole body are handed to
``handle``, and its ``Reply`` goes back as HEADERS, DATA and trailing HEADERS.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from turnout.transports.addresses import peer_address
from turnout.transports.http2 import frames as f
from turnout.transports.http2.headers import HeaderDecoder

log = logging.getLogger("turnout.http2")

STREAM_WINDOW = 4 * 1024 * 1024  # what a client may send on one stream before we credit it
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_CONCURRENT_STREAMS = 1024
MAX_HEADER_LIST_SIZE = 64 * 1024
MAX_FRAME_SIZE = 1024 * 1024  # larger frames from the client: fewer of them to parse


@dataclass(slots=True)
class Request:
    stream_id: int
    headers: dict[str, str]
    body: bytes | None  # None: it passed the size limit and was dropped as it arrived
    peer: str = ""  # the client's address, "host:port"


@dataclass(slots=True)
class Reply:
    """Encoded header blocks and a body. ``trailers`` None with an empty body
    sends ``head`` alone, ending the stream (gRPC's trailers-only answer)."""

    head: bytes
    body: bytes = b""
    trailers: bytes | None = None


Handle = Callable[[Request], Awaitable[Reply]]
# Looks at a stream's headers as soon as they arrive: a Reply refuses it at
# once (an unknown gRPC method must not wait for a body a streaming client
# may never finish); None lets the body come.
Screen = Callable[[dict[str, str]], Reply | None]


def _admit_all(headers: dict[str, str]) -> Reply | None:
    return None


class _Stream:
    __slots__ = (
        "body", "ended", "headers", "held", "pending", "send_window", "size", "task", "timer", "too_large", "unacked"
    )  # fmt: skip

    def __init__(self, headers: dict[str, str], send_window: int) -> None:
        self.headers = headers
        self.body: list[bytes] = []
        self.size = 0  # request body bytes received
        self.held = 0  # of them, bytes counted in the connection's buffered total
        self.too_large = False
        self.ended = False  # the client sent END_STREAM
        self.unacked = 0  # bytes received on this stream not yet credited back
        self.send_window = send_window
        self.pending: tuple[bytes, bytes | None] | None = None  # reply data waiting for window, and trailers
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None  # the read timeout, while the request arrives


def _stop(stream: _Stream) -> None:
    """Cancel a stream's read timeout: its request has arrived, or it is gone."""
    if stream.timer is not None:
        stream.timer.cancel()
        stream.timer = None


# How long a request may take to arrive, HEADERS to END_STREAM, before its
# stream is reset: a client trickling messages (slowloris) holds a stream and
# its buffered body only this long.
READ_TIMEOUT_SECONDS = 30.0


class Http2Protocol(asyncio.Protocol):
    def __init__(
        self,
        handle: Handle,
        max_body_bytes: int,
        connections: set[Http2Protocol],
        screen: Screen = _admit_all,
        read_timeout: float = READ_TIMEOUT_SECONDS,
    ) -> None:
        self._handle = handle
        self._screen = screen
        self._read_timeout = read_timeout
        self._limit = max_body_bytes
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._preface_seen = False
        self._decoder = HeaderDecoder(MAX_HEADER_LIST_SIZE)
        self._streams: dict[int, _Stream] = {}
        self._last_stream_id = 0
        self._continuation: tuple[int, int, bytearray] | None = None  # (stream id, HEADERS flags, block so far)
        # what the peer lets us send
        self._peer_initial_window = f.DEFAULT_WINDOW
        self._peer_max_frame = f.DEFAULT_MAX_FRAME
        self._send_window = f.DEFAULT_WINDOW
        # what we let the peer send
        self._conn_unacked = 0
        self._conn_outstanding = CONNECTION_WINDOW  # credit the peer holds
        self._buffered = 0  # request body bytes held for streams not yet answered
        self._buffer_cap = max(2 * max_body_bytes, CONNECTION_WINDOW)
        self._going_away = False
        self._peer = ""
        self.idle = asyncio.Event()
        self.idle.set()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._peer = peer_address(transport)
        self._connections.add(self)
        self._transport.write(
            f.settings(
                {
                    f.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                    f.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                    f.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
                    f.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
                    f.ENABLE_PUSH: 0,
                }
            )
            + f.window_update(0, CONNECTION_WINDOW - f.DEFAULT_WINDOW)
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._transport = None
        for stream in self._streams.values():
            _stop(stream)
            if stream.task is not None:
                stream.task.cancel()
        self._streams.clear()
        self.idle.set()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        try:
            if not self._preface_seen:
                if len(buffer) < len(f.PREFACE):
                    if not f.PREFACE.startswith(bytes(buffer)):
                        self._abort(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    return
                if not buffer.startswith(f.PREFACE):
                    self._abort(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    return
                del buffer[: len(f.PREFACE)]
                self._preface_seen = True
            position = 0
            available = len(buffer)
            while available - position >= f.HEADER_SIZE and self._transport is not None:
                high, low, kind, flags, stream_id = f.HEADER.unpack_from(buffer, position)
                size = (high << 8) | low
                if size > MAX_FRAME_SIZE:
                    raise f.ProtocolViolation(f.FRAME_SIZE_ERROR, f"a frame of {size} bytes exceeds {MAX_FRAME_SIZE}")
                end = position + f.HEADER_SIZE + size
                if end > available:
                    break
                payload = bytes(buffer[position + f.HEADER_SIZE : end])
                position = end
                self._frame(kind, flags, stream_id & 0x7FFFFFFF, payload)
            del buffer[:position]
        except f.ProtocolViolation as exc:
            self._abort(exc.code, exc.reason)

    # frames
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
            if not flags & f.ACK:
                self._write(f.frame(f.PING, f.ACK, 0, payload))
        elif kind == f.RST_STREAM:
            self._on_rst_stream(stream_id, payload)
        elif kind == f.GOAWAY:
            self._going_away = True  # the client opens no more streams; ours finish
            self._close_if_done()
        elif kind == f.PUSH_PROMISE:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "clients cannot push")
        elif kind == f.PRIORITY and stream_id == 0:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "PRIORITY on stream 0")
        # unknown frame types are ignored (RFC 9113 section 4.1)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "HEADERS on stream 0")
        payload = f.strip_padding(flags, payload, "HEADERS")
        if flags & f.PRIORITY_FLAG:
            if len(payload) < 5:
                raise f.ProtocolViolation(f.FRAME_SIZE_ERROR, "HEADERS priority fields cut short")
            payload = payload[5:]
        if flags & f.END_HEADERS:
            self._on_header_block(stream_id, flags, payload)
        else:
            self._continuation = (stream_id, flags, bytearray(payload))

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuation is None or self._continuation[0] != stream_id:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        _, first_flags, block = self._continuation
        block += payload
        if len(block) > MAX_HEADER_LIST_SIZE:
            raise f.ProtocolViolation(f.COMPRESSION_ERROR, "header block too large")
        if flags & f.END_HEADERS:
            self._continuation = None
            self._on_header_block(stream_id, first_flags, bytes(block))

    def _on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self._decoder.decode(block)  # always: the HPACK table must see every block
        stream = self._streams.get(stream_id)
        if stream is not None:  # trailers from the client: they end its side
            if not flags & f.END_STREAM or stream.ended:
                raise f.ProtocolViolation(f.PROTOCOL_ERROR, "HEADERS after the request's headers must end it")
            stream.ended = True
            if stream.task is None:
                self._dispatch(stream_id, stream)
            return
        if stream_id % 2 == 0 or stream_id <= self._last_stream_id:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, f"stream {stream_id} cannot be opened now")
        self._last_stream_id = stream_id
        if self._going_away:
            self._write(f.rst_stream(stream_id, f.REFUSED_STREAM))
            return
        if len(self._streams) >= MAX_CONCURRENT_STREAMS:
            self._write(f.rst_stream(stream_id, f.REFUSED_STREAM))
            return
        stream = _Stream(headers, self._peer_initial_window)
        self._streams[stream_id] = stream
        self.idle.clear()
        refusal = self._screen(headers)
        if refusal is not None:
            stream.ended = bool(flags & f.END_STREAM)
            self._send_reply(stream_id, stream, refusal)  # and RST_STREAM(NO_ERROR) if the client is still sending
            return
        if flags & f.END_STREAM:
            stream.ended = True
            self._dispatch(stream_id, stream)
        else:
            stream.timer = asyncio.get_running_loop().call_later(self._read_timeout, self._read_timed_out, stream_id)

    def _read_timed_out(self, stream_id: int) -> None:
        """A request still arriving after the read timeout (a client trickling
        it): the stream is reset (CANCEL), its buffered body dropped."""
        stream = self._streams.get(stream_id)
        if stream is not None and stream.task is None:
            stream.timer = None
            log.debug("stream %d: the request did not arrive within %g s", stream_id, self._read_timeout)
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
            return
        if stream.ended:
            self._reset(stream_id, f.STREAM_CLOSED)
            self._credit_connection()
            return
        data = f.strip_padding(flags, payload, "DATA")
        stream.unacked += len(payload)
        if stream.task is None:  # still collecting the request
            stream.size += len(data)
            if stream.size > self._limit:
                stream.too_large = True
                self._drop_body(stream)
                self._dispatch(stream_id, stream)  # refused now; what follows is read and dropped
            elif data:
                stream.body.append(data)
                stream.held += len(data)
                self._buffered += len(data)
        if flags & f.END_STREAM:
            stream.ended = True
            if stream.task is None:
                self._dispatch(stream_id, stream)
        elif stream.unacked >= STREAM_WINDOW // 2:
            self._write(f.window_update(stream_id, stream.unacked))
            stream.unacked = 0
        self._credit_connection()

    def _drop_body(self, stream: _Stream) -> None:
        self._buffered -= stream.held
        stream.held = 0
        stream.body = []

    def _credit_connection(self) -> None:
        """Give the peer back what it spent, unless request bodies held here are already at the cap."""
        if self._conn_unacked >= CONNECTION_WINDOW // 2 and self._buffered <= self._buffer_cap:
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
            self._send_window += increment
            if self._send_window > f.MAX_WINDOW:
                raise f.ProtocolViolation(f.FLOW_CONTROL_ERROR, "connection window overflow")
            self._flush_pending()
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # a stream already closed here
        if increment == 0:
            self._reset(stream_id, f.PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > f.MAX_WINDOW:
            self._reset(stream_id, f.FLOW_CONTROL_ERROR)
            return
        self._flush_pending()

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.ACK:
            if payload:
                raise f.ProtocolViolation(f.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        for key, value in f.parse_settings(payload):
            if key == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise f.ProtocolViolation(f.FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
            elif key == f.MAX_FRAME_SIZE:
                if not f.DEFAULT_MAX_FRAME <= value <= f.MAX_FRAME_LIMIT:
                    raise f.ProtocolViolation(f.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
                self._peer_max_frame = value
        self._write(f.frame(f.SETTINGS, f.ACK, 0))
        self._flush_pending()

    def _on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise f.ProtocolViolation(f.FRAME_SIZE_ERROR, "RST_STREAM must carry 4 bytes")
        if stream_id == 0:
            raise f.ProtocolViolation(f.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        stream = self._streams.get(stream_id)
        if stream is not None:
            if stream.task is not None:
                stream.task.cancel()  # the client gave up: stop working for it
            self._release(stream_id, stream)

    # exchanges
    def _dispatch(self, stream_id: int, stream: _Stream) -> None:
        _stop(stream)
        body = None if stream.too_large else b"".join(stream.body)
        stream.body = []
        request = Request(stream_id, stream.headers, body, self._peer)
        stream.task = asyncio.get_running_loop().create_task(self._answer(stream_id, stream, request))

    async def _answer(self, stream_id: int, stream: _Stream, request: Request) -> None:
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
        if self._streams.get(stream_id) is not stream or self._transport is None:
            return  # reset or disconnected meanwhile
        self._send_reply(stream_id, stream, reply)

    def _send_reply(self, stream_id: int, stream: _Stream, reply: Reply) -> None:
        max_frame = self._peer_max_frame
        if not reply.body and reply.trailers is None:
            self._write(_headers_frames(stream_id, reply.head, max_frame, end_stream=True))
            self._finish(stream_id, stream)
            return
        stream.pending = (reply.body, reply.trailers)
        self._send_pending(stream_id, stream, _headers_frames(stream_id, reply.head, max_frame, end_stream=False))

    def _send_pending(self, stream_id: int, stream: _Stream, prefix: bytes = b"") -> None:
        """As much of the stream's reply as the windows allow, after ``prefix``, in one write;
        the rest waits for WINDOW_UPDATE. A reply that fits is not sliced (``body[:len]`` is ``body``)."""
        assert stream.pending is not None
        body, trailers = stream.pending
        take = max(0, min(self._send_window, stream.send_window, len(body)))
        chunk, rest = body[:take], body[take:]
        self._send_window -= take
        stream.send_window -= take
        done = not rest
        out = prefix
        if chunk:
            out += f.data_frames(stream_id, chunk, self._peer_max_frame, done and trailers is None)
        if done and trailers is not None:
            out += _headers_frames(stream_id, trailers, self._peer_max_frame, end_stream=True)
        if out:
            self._write(out)
        if done:
            stream.pending = None
            self._finish(stream_id, stream)
        else:
            stream.pending = (rest, trailers)

    def _flush_pending(self) -> None:
        for stream_id, stream in list(self._streams.items()):
            if self._send_window <= 0:
                return
            if stream.pending is not None and stream.send_window > 0:
                self._send_pending(stream_id, stream)

    def _finish(self, stream_id: int, stream: _Stream) -> None:
        """The reply is out. A client still sending (its body was refused early) is told to stop."""
        if not stream.ended:
            self._write(f.rst_stream(stream_id, f.NO_ERROR))
        self._release(stream_id, stream)

    def _release(self, stream_id: int, stream: _Stream) -> None:
        if self._streams.pop(stream_id, None) is None:
            return
        _stop(stream)
        self._drop_body(stream)
        self._credit_connection()
        if not self._streams:
            self.idle.set()
            self._close_if_done()

    def _reset(self, stream_id: int, code: int) -> None:
        stream = self._streams.get(stream_id)
        self._write(f.rst_stream(stream_id, code))
        if stream is not None:
            if stream.task is not None and stream.task is not asyncio.current_task():
                stream.task.cancel()
            self._release(stream_id, stream)

    # connection
    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def _abort(self, code: int, reason: str) -> None:
        log.debug("closing an HTTP/2 connection: %s", reason)
        if self._transport is not None:
            self._transport.write(f.goaway(self._last_stream_id, code, reason))
            self._transport.close()

    def _close_if_done(self) -> None:
        if self._going_away and not self._streams and self._transport is not None:
            self._transport.close()

    def go_away(self) -> None:
        """Refuse new streams, let open ones finish, then close (graceful shutdown)."""
        if self._transport is None:
            return
        self._going_away = True
        self._write(f.goaway(self._last_stream_id, f.NO_ERROR))
        self._close_if_done()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _headers_frames(stream_id: int, block: bytes, max_frame: int, end_stream: bool) -> bytes:
    flags = f.END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return f.frame(f.HEADERS, flags | f.END_HEADERS, stream_id, block)
    parts = [f.frame(f.HEADERS, flags, stream_id, block[:max_frame])]
    for start in range(max_frame, len(block), max_frame):
        last = start + max_frame >= len(block)
        parts.append(f.frame(f.CONTINUATION, f.END_HEADERS if last else 0, stream_id, block[start : start + max_frame]))
    return b"".join(parts)


class Http2Server:
    """Listens on a bound socket; ``shutdown`` stops accepting, sends GOAWAY,
    lets open streams finish (up to ``grace`` seconds) and closes every connection."""

    def __init__(
        self,
        handle: Handle,
        max_body_bytes: int,
        screen: Screen = _admit_all,
        tls: ssl.SSLContext | None = None,
        read_timeout: float = READ_TIMEOUT_SECONDS,
    ) -> None:
        self._handle = handle
        self._read_timeout = read_timeout
        self._screen = screen
        self._limit = max_body_bytes
        self._tls = tls  # its ALPN must offer h2: gRPC clients insist
        self._connections: set[Http2Protocol] = set()
        self._server: asyncio.base_events.Server | None = None

    async def start(self, sock: Any) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.protocol, sock=sock, ssl=self._tls)

    def protocol(self) -> Http2Protocol:
        """A connection's protocol; for a listener that decides the protocol itself (``dual``)."""
        return Http2Protocol(self._handle, self._limit, self._connections, self._screen, self._read_timeout)

    async def shutdown(self, grace: float) -> None:
        if self._server is not None:
            self._server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.go_away()
        waits = [asyncio.ensure_future(c.idle.wait()) for c in connections if not c.idle.is_set()]
        if waits:
            await asyncio.wait(waits, timeout=grace)
            for waiting in waits:
                waiting.cancel()
        for connection in list(self._connections):
            connection.close()
