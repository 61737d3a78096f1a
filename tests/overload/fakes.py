"""A clock and a loop run by hand, for the admission law and its probe."""

from __future__ import annotations

from collections.abc import Callable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class HandLoop:
    """The one loop method the lag probe uses; ``fire`` runs the pending timer."""

    def __init__(self) -> None:
        self.calls = 0
        self.pending: Handle | None = None

    def call_later(self, delay: float, callback: Callable[[], None]) -> Handle:
        self.calls += 1
        self.pending = Handle(self, callback)
        return self.pending

    def fire(self) -> None:
        assert self.pending is not None
        handle, self.pending = self.pending, None
        handle.callback()


class Handle:
    def __init__(self, loop: HandLoop, callback: Callable[[], None]) -> None:
        self.loop = loop
        self.callback = callback

    def cancel(self) -> None:
        if self.loop.pending is self:
            self.loop.pending = None
