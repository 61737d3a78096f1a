"""Flow control both ways for one HTTP/1.1 connection.

Reading stops while the client does not read our answers (the transport's
write buffer above its high-water mark: ``pause_writing``), and while the
connection asks (``max_pipelined`` requests wait); the next answer waits
until the write buffer drains; a client that reads nothing for
``write_timeout`` is cut off. Time paused by us is not the client's:
``resume_reading`` says how long reading was paused, so its deadlines move on.

Event-loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Pacing:
    __slots__ = (
        "_cut_off", "_drained", "_loop", "_paused_at", "_timeout", "_timer", "reading_paused", "transport",
        "writing_paused",
    )  # fmt: skip

    def __init__(self, loop: asyncio.AbstractEventLoop, write_timeout: float, cut_off: Callable[[], None]) -> None:
        self._loop = loop
        self._timeout = write_timeout
        self._cut_off = cut_off  # the client read nothing for the write timeout
        self.transport: asyncio.Transport | None = None
        self.reading_paused = False
        self._paused_at = 0.0
        self.writing_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self._paused_at = self._loop.time()
            self.transport.pause_reading()

    def resume_reading(self) -> float | None:
        """Read again unless the client's answers still wait; the seconds
        reading was paused, or None if it stays paused (or was not)."""
        if self.reading_paused and not self.writing_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
            return self._loop.time() - self._paused_at
        return None

    def pause_writing(self) -> None:
        """The client does not read our answers fast enough: stop reading its
        requests until it does, and give it ``write_timeout`` to catch up."""
        self.writing_paused = True
        self.pause_reading()
        if self._timer is None:
            self._timer = self._loop.call_later(self._timeout, self._timed_out)

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._stop_waiting()

    async def drained(self) -> None:
        """Once what is written is taken by the client (or it is gone)."""
        if self.writing_paused:
            self._drained = self._loop.create_future()
            await self._drained
            self._drained = None

    def lost(self) -> None:
        """The connection is gone: nothing waits for it any more."""
        self.transport = None
        self._stop_waiting()

    def _stop_waiting(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport is not None:
            self._cut_off()
