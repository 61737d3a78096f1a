"""Replies on their way out of one connection.

A reply goes out as far as the client's flow-control windows allow (RFC 9113
section 5.2) and only while the client reads: while the transport's write
buffer is above its high-water mark (``paused``) nothing more is written, and
the rest of each reply waits here, in place, as a slice of the handler's own
bytes. So what the server holds for a client that never reads is bounded by
the replies of its open streams, never by what it asks for.

Event-loop only. Writes may pause or resume the transport at once (a TLS
transport does either from inside ``write``), so each stream's state is
settled before its bytes are written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from turnout.transports.http2 import frames as f
from turnout.transports.http2.shared import Reply
from turnout.transports.http2.stream import Stream


class Outbox:
    __slots__ = (
        "_blocked",
        "_finish",
        "_stuck",
        "_timeout",
        "_write",
        "initial_window",
        "max_frame",
        "paused",
        "window",
    )

    def __init__(
        self,
        write: Callable[[bytes], None],
        finish: Callable[[int, Stream], None],
        stuck: Callable[[int], None],
        write_timeout: float,
    ) -> None:
        self._write = write
        self._finish = finish  # a reply is all out
        self._stuck = stuck  # a waiting reply's write timeout came due (it may have moved since: see ``stamp``)
        self._timeout = write_timeout
        self.window = f.DEFAULT_WINDOW  # the connection's send window
        self.initial_window = f.DEFAULT_WINDOW  # a new stream's (SETTINGS_INITIAL_WINDOW_SIZE)
        self.max_frame = f.DEFAULT_MAX_FRAME
        self.paused = False  # the client is not reading
        self._blocked: dict[int, Stream] = {}  # replies waiting for the connection's window or for reading

    def reply(self, stream_id: int, stream: Stream, reply: Reply) -> None:
        if not reply.body and reply.trailers is None:
            self._write(_headers_frames(stream_id, reply.head, self.max_frame, end_stream=True))
            self._finish(stream_id, stream)
            return
        stream.pending = (reply.body, reply.trailers)
        self.send(stream_id, stream, _headers_frames(stream_id, reply.head, self.max_frame, end_stream=False))

    def send(self, stream_id: int, stream: Stream, prefix: bytes = b"") -> None:
        """As much of the stream's reply as the windows allow, after ``prefix``,
        in one write; the rest waits. A reply that fits is not sliced
        (``body[:len]`` is ``body``)."""
        assert stream.pending is not None
        body, trailers = stream.pending
        take = 0 if self.paused else max(0, min(self.window, stream.send_window, len(body)))
        chunk, rest = body[:take], body[take:]
        self.window -= take
        stream.send_window -= take
        done = not rest
        out = prefix
        if chunk:
            out += f.data_frames(stream_id, chunk, self.max_frame, done and trailers is None)
        if done and trailers is not None:
            out += _headers_frames(stream_id, trailers, self.max_frame, end_stream=True)
        if done:
            stream.pending = None
            if self._blocked:
                self._blocked.pop(stream_id, None)
        else:
            self._wait(stream_id, stream, rest, trailers, moved=take > 0)
        if out:
            self._write(out)
        if done:
            self._finish(stream_id, stream)

    def _wait(self, stream_id: int, stream: Stream, rest: bytes, trailers: bytes | None, moved: bool) -> None:
        stream.pending = (rest, trailers)
        if stream.send_window > 0:
            self._blocked[stream_id] = stream  # the connection's window, or the client's reading, holds it
        else:
            self._blocked.pop(stream_id, None)  # its own window: its WINDOW_UPDATE sends the rest
        now = time.monotonic()
        if moved:
            stream.stamp = now
        if stream.timer is None:
            stream.stamp = now
            stream.timer = asyncio.get_running_loop().call_later(self._timeout, self._stuck, stream_id)

    def flush(self) -> None:
        """Send what waits, as far as the connection's window goes."""
        for stream_id, stream in list(self._blocked.items()):
            if self.window <= 0 or self.paused:
                return
            if stream.pending is not None:
                self.send(stream_id, stream)

    def grow(self, increment: int) -> bool:
        """The connection's window grew (WINDOW_UPDATE on stream 0): True if a reply waited for it."""
        self.window += increment
        if self.window > f.MAX_WINDOW:
            raise f.ProtocolViolation(f.FLOW_CONTROL_ERROR, "connection window overflow")
        if not self._blocked:
            return False
        self.flush()
        return True

    def shift(self, streams: dict[int, Stream], initial_window: int) -> None:
        """SETTINGS_INITIAL_WINDOW_SIZE changed: every stream's window moves by the difference."""
        delta = initial_window - self.initial_window
        self.initial_window = initial_window
        if delta:
            for stream_id, stream in streams.items():
                stream.send_window += delta
                if stream.pending is not None and stream.send_window > 0:
                    self._blocked[stream_id] = stream

    def forget(self, stream_id: int) -> None:
        if self._blocked:
            self._blocked.pop(stream_id, None)

    def clear(self) -> None:
        self._blocked.clear()


def _headers_frames(stream_id: int, block: bytes, max_frame: int, end_stream: bool) -> bytes:
    flags = f.END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return f.frame(f.HEADERS, flags | f.END_HEADERS, stream_id, block)
    parts = [f.frame(f.HEADERS, flags, stream_id, block[:max_frame])]
    for start in range(max_frame, len(block), max_frame):
        last = start + max_frame >= len(block)
        parts.append(f.frame(f.CONTINUATION, f.END_HEADERS if last else 0, stream_id, block[start : start + max_frame]))
    return b"".join(parts)
