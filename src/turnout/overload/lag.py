"""How late the event loop runs a timer: the length of its turns.

A timer asks to run every ``period`` seconds and reports, each time it runs,
how much later than asked it ran. Timers run at the start of a loop turn, so
on a saturated loop every sample is the previous turn's length minus the
period; on an idle loop, about zero (less than a millisecond of timer
granularity). One callback per turn at most: the cost is negligible next to
any request.

The next run is asked for ``period`` after this one ran (not after it was
due), so a long turn yields one sample, not a burst of catch-up samples.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

Observe = Callable[[float, float], None]  # (now, lag), seconds


class LagProbe:
    __slots__ = ("_clock", "_due", "_handle", "_loop", "_observe", "_period")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        period: float,
        observe: Observe,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loop = loop
        self._period = period
        self._observe = observe
        self._clock = clock
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self._handle is None:
            self._schedule(self._clock())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, now: float) -> None:
        self._due = now + self._period
        self._handle = self._loop.call_later(self._period, self._run)

    def _run(self) -> None:
        now = self._clock()
        self._observe(now, now - self._due)
        self._schedule(now)
