"""A deadline that costs nothing to move later.

A connection's deadline changes several times per request (head due, body
due, none while answering, idle due); cancelling and scheduling a timer each
time would be most of that cost. Here the timer moves only when the deadline
comes earlier; when it fires early it sleeps again until the deadline now
set. In steady keep-alive traffic a connection schedules about one timer per
``head_timeout``, not one per request.

Event-loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadline:
    __slots__ = ("_at", "_expired", "_loop", "_timer", "_timer_at")

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Callable[[], None]) -> None:
        self._loop = loop
        self._expired = expired  # called at the deadline, which stays set until cleared or moved
        self._at = 0.0  # loop time; 0: none
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    @property
    def at(self) -> float:
        return self._at

    def set(self, when: float) -> None:
        self._at = when
        if self._timer is None or when < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = self._loop.call_at(when, self._fire)

    def clear(self) -> None:
        self._at = 0.0

    def cancel(self) -> None:
        self._at = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        at = self._at
        if not at:
            return
        if self._loop.time() < at:
            self.set(at)
        else:
            self._expired()
