"""When to hedge: a set's recent latency quantile.

A hedge (a second attempt to another replica) goes once the first has waited
longer than the set's recent 95th percentile, as "The Tail at Scale" (Dean
and Barroso) sends its backup requests: about 5% of requests then cost two
attempts, and the slowest 5% stop deciding the tail. The quantile is of the
last ``size`` answered attempts (a ring), recomputed every ``every`` new ones
rather than on each request: sorting 256 floats each time would cost more
than the request's own bookkeeping. Until ``least`` attempts are known there
is no quantile and no hedge, so a cold set does not double its first load.

Pure: the caller says how long each answered attempt took.
"""

from __future__ import annotations


class RecentLatency:
    def __init__(self, quantile: float = 0.95, size: int = 256, every: int = 16, least: int = 20) -> None:
        if not 0 < quantile < 1 or size < 1 or every < 1 or not 1 <= least <= size:
            raise ValueError("recent latency needs 0 < quantile < 1, size >= 1, every >= 1 and 1 <= least <= size")
        self._quantile = quantile
        self._ring = [0.0] * size
        self._next = 0
        self._count = 0
        self._every = every
        self._least = least
        self._since = 0  # answers since the quantile was last worked out
        self._value: float | None = None

    def observe(self, seconds: float) -> None:
        """An answered attempt took ``seconds`` (failed ones are not counted: a fast refusal is no latency)."""
        self._ring[self._next] = seconds
        self._next = (self._next + 1) % len(self._ring)
        self._count = min(self._count + 1, len(self._ring))
        self._since += 1
        if self._since >= self._every or self._value is None:
            self._since = 0
            if self._count >= self._least:
                recent = sorted(self._ring[: self._count])
                self._value = recent[min(int(self._quantile * self._count), self._count - 1)]

    def value(self) -> float | None:
        """The quantile of the recent answers; None until ``least`` are known."""
        return self._value
