"""One limit on the open connections of all of a server's listeners.

A connection counts from accept to close. When the limit is reached, a new
connection is let in by closing the connection that has been idle longest
(no request in progress: a keep-alive connection between requests, or one
that never sent a byte), as a busy proxy would; only when every connection
is busy is the new one refused. So silent connections cannot lock clients
out, and the process stays well under its open-file limit.

A connection turns busy and idle with every request, so on that path it
changes ``idle`` itself, without a call: ``idle.pop(self, None)`` when a
request begins, ``idle[self] = None`` when it waits for the next (the
newest idle). ``busy`` and ``idle_again`` do the same in a call.

Event-loop only: no lock.
"""

from __future__ import annotations

from typing import Protocol


class Closable(Protocol):
    def close(self) -> None: ...


class Connections:
    __slots__ = ("_open", "idle", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a connection limit needs at least 1, got {limit}")
        self.limit = limit
        self._open: set[Closable] = set()
        self.idle: dict[Closable, None] = {}  # insertion order: longest idle first

    def __len__(self) -> int:
        return len(self._open)

    def open(self, connection: Closable) -> bool:
        """Count a new connection, idle. False: refused (full, none idle to close)."""
        while len(self._open) >= self.limit:
            if not self.idle:
                return False
            oldest = next(iter(self.idle))
            self.closed(oldest)  # counted out now: its close may take a loop turn
            oldest.close()
        self._open.add(connection)
        self.idle[connection] = None
        return True

    def busy(self, connection: Closable) -> None:
        """The connection has a request in progress: never closed to make room."""
        self.idle.pop(connection, None)

    def idle_again(self, connection: Closable) -> None:
        """The connection waits for its next request (the newest idle)."""
        if connection in self._open:
            self.idle[connection] = None

    def closed(self, connection: Closable) -> None:
        self.idle.pop(connection, None)
        self._open.discard(connection)
