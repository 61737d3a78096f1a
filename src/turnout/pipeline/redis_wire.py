"""One connection to Redis that sends framed commands and waits for their
answers: the feature lookup's wire, below redis-py.

Why not redis-py's asyncio connection: its writer and parser layers (a
StreamWriter with a drain, a StreamReader read by an awaited parser for each
answer) cost ~15 µs of CPU a round trip on this machine's cores (62-66 µs
against 48-49 µs here, an HMGET of 30 fields to a redis-server on another
core), and a lookup is one round trip. Here the answers are parsed by
hiredis (redis-py's own accelerator) as the bytes arrive, in the protocol's
callback, and the round trip is woken once, when all its answers are in.

The URL means what it means to redis-py (``redis.connection.parse_url``):
host, port, ``/db``, username and password, ``unix://`` paths, and
``rediss://`` for TLS with its ``ssl_*`` query options, made into a context
by redis-py's own ``RedisSSLContext`` (when the step loads: a bad option is
a load error). Its socket and pool options (``socket_timeout``,
``max_connections``...) do not apply: the step's ``timeout_ms`` bounds each
round trip, and one connection is held.

A Redis that breaks the protocol loses the connection, never the server's
memory or another lookup's answers: bytes with no round trip waiting, more
answers than were asked for, or an answer past ``MAX_ANSWER_BYTES``.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.asyncio.connection import RedisSSLContext
from redis.connection import SSLConnection, parse_url
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as Lost

Answer = Any  # a RESP value as hiredis gives it (bytes, None, int, list...)

# One round trip's answers: 30 features of 64 entities are ~40 KB. Past this the store is not a feature store.
MAX_ANSWER_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Address:
    """Where a Redis is and how to log in to it, read from its URL once."""

    host: str
    port: int
    path: str | None  # a Unix socket instead
    db: int
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None

    @classmethod
    def from_url(cls, url: str) -> Address:
        """Raises ``ValueError`` (or redis-py's ``RedisError``) for a URL or TLS option it cannot use."""
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        tls = None
        if options.get("connection_class") is SSLConnection:
            tls = RedisSSLContext(
                keyfile=options.get("ssl_keyfile"),
                certfile=options.get("ssl_certfile"),
                cert_reqs=options.get("ssl_cert_reqs", "required"),
                include_verify_flags=options.get("ssl_include_verify_flags"),
                exclude_verify_flags=options.get("ssl_exclude_verify_flags"),
                ca_certs=options.get("ssl_ca_certs"),
                ca_data=options.get("ssl_ca_data"),
                ca_path=options.get("ssl_ca_path"),
                check_hostname=options.get("ssl_check_hostname", True),
                min_version=options.get("ssl_min_version"),
                ciphers=options.get("ssl_ciphers"),
                password=options.get("ssl_password"),
            ).get()
        return cls(
            host=options.get("host", "localhost"),
            port=int(options.get("port", 6379)),
            path=options.get("path"),
            db=int(options.get("db") or 0),
            username=options.get("username"),
            password=options.get("password"),
            tls=tls,
        )


def command(*parts: bytes) -> bytes:
    """One command in RESP framing."""
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)


class _Answers(asyncio.Protocol):
    """A connection's answers, parsed as they arrive; the one round trip on
    the wire is woken when it has as many as it asked for."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = hiredis.Reader()
        self._answers: list[Answer] = []
        self._expected = 0
        self._received = 0  # bytes of the round trip on the wire so far
        self._waiter: asyncio.Future[list[Answer]] | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        waiter, answers = self._waiter, self._answers
        if waiter is None:
            return self._broken("Redis sent bytes no command asked for")
        self._received += len(data)
        if self._received > MAX_ANSWER_BYTES:
            return self._broken(f"Redis's answer passed {MAX_ANSWER_BYTES // (1024 * 1024)} MiB")
        try:
            self._parser.feed(data)
            while (answer := self._parser.gets()) is not False:
                answers.append(answer)
        except hiredis.ProtocolError as exc:
            return self._broken(f"the answer is not RESP: {exc}")
        if len(answers) > self._expected:
            return self._broken(f"Redis sent {len(answers)} answers to {self._expected} commands")
        if len(answers) == self._expected:
            self._waiter, self._answers = None, []
            if not waiter.done():
                waiter.set_result(answers)
        return None

    def _broken(self, why: str) -> None:
        """Not Redis speaking: the connection is unusable, and whoever waits on it is told why."""
        self.fail(Lost(why))
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(Lost(f"the connection closed: {exc}" if exc else "the connection closed"))

    def fail(self, exc: BaseException) -> None:
        self.lost = exc
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def ask(self, framed: bytes, count: int) -> asyncio.Future[list[Answer]]:
        """Send ``count`` framed commands; their answers, in order, once all are in."""
        assert self._waiter is None and self.transport is not None, "one round trip at a time"
        if self.lost is not None:
            raise self.lost
        self._answers, self._expected, self._received = [], count, 0
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        if count == 0:
            self._waiter = None
            waiter.set_result([])
            return waiter
        self.transport.write(framed)
        return waiter


class RedisWire:
    """A connection for commands framed by the caller, one round trip at a time."""

    def __init__(self, answers: _Answers) -> None:
        self._answers = answers

    @classmethod
    async def open(cls, address: Address) -> RedisWire:
        """Connected, authenticated and on its database. Raises ``Lost`` (or
        ``AuthenticationError``) or ``OSError``."""
        loop = asyncio.get_running_loop()
        if address.path is not None:
            _, answers = await loop.create_unix_connection(_Answers, address.path)
        else:
            _, answers = await loop.create_connection(_Answers, address.host, address.port, ssl=address.tls)
        wire = cls(answers)
        try:
            await wire._hello(address)
        except BaseException:
            wire.close()
            raise
        return wire

    async def _hello(self, address: Address) -> None:
        hello = []
        if address.password is not None:
            login = [address.username.encode()] if address.username else []
            hello.append(command(b"AUTH", *login, address.password.encode()))
        if address.db:
            hello.append(command(b"SELECT", str(address.db).encode()))
        for answer in await self.ask(b"".join(hello), len(hello)):
            if isinstance(answer, hiredis.ReplyError):
                failed = AuthenticationError if "AUTH" in str(answer) or "WRONGPASS" in str(answer) else Lost
                raise failed(f"Redis refused the connection's set-up: {answer}")

    def ask(self, framed: bytes, count: int) -> asyncio.Future[list[Answer]]:
        """The answers to ``count`` framed commands. An error answer is a
        ``ResponseError`` for the caller to raise; a lost connection fails it
        with ``Lost``."""
        return self._answers.ask(framed, count)

    def abandon(self, exc: BaseException) -> None:
        """Fail the round trip on the wire with ``exc`` (its deadline passed) and close."""
        self._answers.fail(exc)
        self.close()

    @property
    def usable(self) -> bool:
        return self._answers.lost is None

    def close(self) -> None:
        transport = self._answers.transport
        if transport is not None:
            transport.abort()  # an answer half read must never reach another round trip


def error_in(answer: Answer) -> ResponseError | None:
    """The error Redis answered with, as redis-py's exception; None for a value."""
    return ResponseError(str(answer)) if isinstance(answer, hiredis.ReplyError) else None
