"""HTTP/1.1 to one replica: keep-alive connections, one exchange at a time
each, and a pool of the idle ones.

turnout's own, on an asyncio ``Protocol`` with ``httptools`` parsing (the
parser the server side uses), because a gateway's cost per request is the
product: a general client (httpx, aiohttp) spends more CPU per request than
the replica's whole answer may cost.

What a replica may do to a gateway is bounded: an answer's head past
``MAX_HEAD_BYTES`` or body past ``max_answer_bytes``, or bytes nobody asked
for, lose the replica its connection (the exchange fails as the replica's
fault), never the gateway's memory. A kept connection the replica closed
while idle (its keep-alive ran out) is told apart from a failure: the
exchange is sent again once on a new connection, as browsers and curl do,
since the replica never read it.

Event-loop only.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import cast

import httptools

from turnout.model.runtimes.base import Relayed

MAX_HEAD_BYTES = 64 * 1024
IDLE_SECONDS = 4.0  # a kept connection is dropped after this idle (uvicorn, behind MLServer, closes at 5 s)


class ReplicaFailed(Exception):
    """No answer from the replica: refused, reset, closed early, or an answer that broke HTTP or a bound."""


class ConnectFailed(ReplicaFailed):
    """No connection: refused, unreachable, or not within the connect timeout (the replica is down, not slow)."""


class _Stale(ReplicaFailed):
    """A kept connection was closed before any byte of the answer came: the replica never read the request."""


Answer = Relayed  # status, headers (names lower-cased), body


class _Parsing:
    """An answer as it is parsed (a plain class: one is made per answer, and a
    dataclass's factories cost more)."""

    __slots__ = ("body", "body_bytes", "head_bytes", "head_done", "header_bytes", "headers")

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.head_bytes = 0  # bytes read before the head ended: bounds a header httptools is still joining
        self.header_bytes = 0  # of the headers parsed
        self.head_done = False
        self.body: list[bytes] = []
        self.body_bytes = 0


# What a connection calls once an exchange ends: the answer, or why there is none.
Ended = Callable[[Answer | None, ReplicaFailed | None], None]


class Connection(asyncio.Protocol):
    """One kept connection; ``send`` sends a request and calls back with its
    answer, from the protocol's own callbacks (no future, no loop turn: a
    gateway's path per request is this module's product)."""

    def __init__(self, max_answer_bytes: int) -> None:
        self._max_answer = max_answer_bytes
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._ended: Ended | None = None
        self._complete: tuple[Ended, Answer] | None = None  # an answer parsed, handed out once the read is
        self._parsing = _Parsing()
        self._heard = False  # a byte of the current answer arrived
        self._reused = False  # the current exchange runs on a connection kept from before
        self.reusable = False  # the last answer left the connection open for another
        self.closed = False
        self.idle_since = 0.0

    # the exchange

    def send(self, head: bytes, body: bytes, reused: bool, ended: Ended) -> None:
        """Send a request; ``ended`` is called once, with its answer or its failure
        (``_Stale`` when ``reused`` and the replica had closed the connection unread)."""
        assert self._transport is not None and self._ended is None
        self._ended = ended
        self._parsing, self._heard, self._reused, self.reusable = _Parsing(), False, reused, False
        if len(body) < 16_384:
            self._transport.write(head + body)
        else:  # a large body is not copied to be joined
            self._transport.writelines((head, body))

    def exchange(self, head: bytes, body: bytes, reused: bool) -> asyncio.Future[Answer]:
        """``send``, as a future."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

        def ended(answer: Answer | None, error: ReplicaFailed | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(answer)  # type: ignore[arg-type]  # one of the two is given

        self.send(head, body, reused, ended)
        return future

    def abort(self) -> None:
        """Drop the connection (an exchange given up: cancelled, or past its deadline)."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is none of asyncio's classes

    def data_received(self, data: bytes) -> None:
        if self._ended is None:  # nothing was asked
            self._fail(ReplicaFailed("the replica sent bytes nobody asked for"))
            return
        self._heard = True
        parsing = self._parsing
        if not parsing.head_done:  # httptools joins a header's pieces itself: an endless one is bounded here
            if parsing.head_bytes > MAX_HEAD_BYTES:
                self._fail(ReplicaFailed(f"the replica's answer has more than {MAX_HEAD_BYTES} bytes of headers"))
                return
            parsing.head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ReplicaFailed("the replica switched protocols"))
        except httptools.HttpParserError as exc:
            bound = exc.__context__  # a callback's own refusal (a bound), which httptools wraps
            self._fail(bound if isinstance(bound, ReplicaFailed) else ReplicaFailed(
                f"the replica's answer is not HTTP/1.1: {exc}"))  # fmt: skip
        complete = self._complete
        if complete is not None:
            # Handed out only now, the read parsed whole: whatever ``ended`` starts
            # (the connection kept and sent on again) never meets this read's bytes.
            # Bytes after the answer (one nobody asked for) have closed the connection.
            self._complete = None
            complete[0](complete[1], None)

    def eof_received(self) -> bool:
        return False  # close: a replica that stops writing will not answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ended, self._ended = self._ended, None
        if ended is not None:
            if self._reused and not self._heard:
                ended(None, _Stale("a kept connection was closed by the replica"))
            else:
                why = f": {exc}" if exc is not None else ""
                ended(None, ReplicaFailed(f"the replica closed the connection before answering{why}"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._ended is None:  # a second answer in the same bytes as the first: to no request
            raise ReplicaFailed("the replica sent an answer nobody asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        parsing = self._parsing
        parsing.header_bytes += len(name) + len(value)
        if parsing.header_bytes > MAX_HEAD_BYTES:
            raise ReplicaFailed(f"the replica's answer has more than {MAX_HEAD_BYTES} bytes of headers")
        parsing.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self._parsing.head_done = True
        if self._parser.get_status_code() < 200:  # 1xx: not an answer, and nothing turnout asks for
            raise ReplicaFailed(f"the replica answered {self._parser.get_status_code()}, not a final status")

    def on_body(self, body: bytes) -> None:
        parsing = self._parsing
        parsing.body_bytes += len(body)
        if parsing.body_bytes > self._max_answer:
            raise ReplicaFailed(f"the replica's answer is larger than {self._max_answer} bytes")
        parsing.body.append(body)

    def on_message_complete(self) -> None:
        ended, self._ended = self._ended, None
        parsing, self._parsing = self._parsing, _Parsing()  # the answer handed out is never written to again
        self.reusable = self._parser.should_keep_alive()
        self.idle_since = time.monotonic()
        if ended is not None:
            body = parsing.body[0] if len(parsing.body) == 1 else b"".join(parsing.body)
            self._complete = ended, Answer(self._parser.get_status_code(), parsing.headers, body)

    def _fail(self, error: ReplicaFailed) -> None:
        ended, self._ended = self._ended, None
        self.abort()
        if ended is not None:
            ended(None, error)


class Pool:
    """The kept connections to one replica (``host:port``), at most
    ``max_idle`` of them idle; more open while more exchanges run at once."""

    def __init__(
        self,
        host: str,
        port: int,
        max_idle: int = 64,
        max_answer_bytes: int = 64 * 1024 * 1024,
        tls: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port = host, port
        self._max_idle = max_idle
        self._max_answer = max_answer_bytes
        self._tls = tls
        self._clock = clock
        self._idle: deque[Connection] = deque()
        self._closed = False
        self.host_header = f"{host}:{port}".encode() if ":" not in host else f"[{host}]:{port}".encode()

    def idle_connection(self) -> Connection | None:
        """A kept connection ready for an exchange, or None (then ``open`` one)."""
        now = self._clock()
        while self._idle:
            connection = self._idle.pop()  # the most recent: the least likely to have been closed
            if not connection.closed and now - connection.idle_since < IDLE_SECONDS:
                return connection
            connection.close()
        return None

    async def open(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: Connection(self._max_answer), self.host, self.port, ssl=self._tls
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        return connection

    def give_back(self, connection: Connection) -> None:
        """After an exchange answered: kept for the next, or closed (always, once the pool is)."""
        if not self._closed and connection.reusable and not connection.closed and len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            connection.close()

    async def exchange(self, head: bytes, body: bytes) -> Answer:
        """One exchange on a kept or a new connection; a kept one found closed is tried once anew."""
        connection = self.idle_connection()
        if connection is not None:
            try:
                answer = await self._on(connection, head, body, reused=True)
            except _Stale:
                pass
            else:
                return answer
        return await self._on(await self.open(), head, body, reused=False)

    async def _on(self, connection: Connection, head: bytes, body: bytes, reused: bool) -> Answer:
        try:
            answer = await connection.exchange(head, body, reused)
        except BaseException:
            connection.abort()  # cancelled or failed mid-answer: the connection is in no state to reuse
            raise
        self.give_back(connection)
        return answer

    def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()


def request_head(method: bytes, path: bytes, host: bytes, length: int, headers: bytes = b"") -> bytes:
    """The head of a request with a body of ``length`` bytes; ``headers``: more lines, each ending CRLF."""
    return b"%s %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n%s\r\n" % (method, path, host, length, headers)
