"""One budget for the request bodies all connections hold in memory.

Each connection already caps what one request may send; without a global
budget, many connections (or many streams) each under their own cap still
add up to unbounded memory. Servers ``take`` bytes as body data arrives and
``give`` them back when the body is dropped or handed off and consumed. A
request whose bytes cannot be taken is refused (HTTP 503, gRPC
RESOURCE_EXHAUSTED) and its body dropped, so memory stays under the budget.

Event-loop only: no lock.
"""

from __future__ import annotations


class BodyBudget:
    __slots__ = ("_held", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a body budget needs at least 1 byte, got {limit}")
        self.limit = limit
        self._held = 0

    def take(self, size: int) -> bool:
        """Hold ``size`` more bytes if they fit; False (nothing taken) if not."""
        if self._held + size > self.limit:
            return False
        self._held += size
        return True

    def give(self, size: int) -> None:
        self._held -= size
        if self._held < 0:  # a bug in a caller; never let the budget grow past its limit
            self._held = 0

    @property
    def held(self) -> int:
        return self._held
