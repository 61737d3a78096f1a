"""One limit on the open connections of all of a server's listeners.

A connection counts from accept to close. When the limit is reached, a new
connection is let in by closing the connection that has been idle longest
(no request in progress: a keep-alive connection between requests, or one
that never sent a byte), as a busy proxy would; only when every connection
is busy is the new one refused. So silent connections cannot lock clients
out, and the process stays well under its open-file limit.

Event-loop only: no lock.
"""

from __future__ import annotations

from typing import Protocol


class Closable(Protocol):
    def close(self) -> None: ...


class Connections:
    __slots__ = ("_busy", "_idle", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a connection limit needs at least 1, got {limit}")
        self.limit = limit
        self._idle: dict[Closable, None] = {}  # insertion order: longest idle first
        self._busy: set[Closable] = set()

    def __len__(self) -> int:
        return len(self._idle) + len(self._busy)

    def open(self, connection: Closable) -> bool:
        """Count a new connection, idle. False: refused (full, none idle to close)."""
        while len(self) >= self.limit:
            if not self._idle:
                return False
            oldest = next(iter(self._idle))
            del self._idle[oldest]
            oldest.close()
        self._idle[connection] = None
        return True

    def busy(self, connection: Closable) -> None:
        """The connection has a request in progress: never closed to make room."""
        if self._idle.pop(connection, 0) is None:
            self._busy.add(connection)

    def idle(self, connection: Closable) -> None:
        """The connection waits for its next request (the newest idle)."""
        if connection in self._busy:
            self._busy.discard(connection)
            self._idle[connection] = None

    def closed(self, connection: Closable) -> None:
        self._idle.pop(connection, None)
        self._busy.discard(connection)
