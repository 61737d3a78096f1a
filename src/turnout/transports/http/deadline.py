"""A deadline that costs nothing to move later.

A connection's deadline changes several times per request (head due, body
due, none while answering, idle due); cancelling and scheduling a timer each
time would be most of that cost. Here the timer moves only when the deadline
comes earlier; when it fires early it sleeps again until the deadline now
set. In steady keep-alive traffic a connection schedules about one timer per
``head_timeout``, not one per request.

On a request's path the deadline is moved without a call (each Python call
there is a measurable share of a small request's cost)::

    deadline.at = when
    if when < deadline.armed_at:
        deadline.arm()

and cleared with ``deadline.at = 0.0``; ``set`` does the same in one call,
for the paths that are not hot.

Event-loop only.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable


class Deadline:
    __slots__ = ("_expired", "_loop", "_timer", "armed_at", "at")

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Callable[[], None]) -> None:
        self._loop = loop
        self._expired = expired  # called at the deadline, which stays set until cleared or moved
        self.at = 0.0  # loop time; 0: none
        self.armed_at = math.inf  # when the timer fires; inf: no timer
        self._timer: asyncio.TimerHandle | None = None

    def set(self, when: float) -> None:
        self.at = when
        if when < self.armed_at:
            self.arm()

    def arm(self) -> None:
        """Schedule the timer at ``at``, which is earlier than it was armed for."""
        if self._timer is not None:
            self._timer.cancel()
        self.armed_at = when = self.at
        self._timer = self._loop.call_at(when, self._fire)

    def clear(self) -> None:
        self.at = 0.0

    def cancel(self) -> None:
        self.at = 0.0
        self.armed_at = math.inf
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        self.armed_at = math.inf
        at = self.at
        if not at:
            return
        if self._loop.time() < at:
            self.arm()
        else:
            self._expired()
