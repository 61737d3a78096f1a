"""A token bucket for what one connection may do without making progress.

``spend`` takes a token for each event (a stream reset, a PING, ...); tokens
come back at a steady rate up to the burst, and one for each unit of real
progress (a stream answered: the caller keeps a running count, passed to
``spend``, so progress costs it an increment, not a call), so a client whose
cost tracks its useful work never runs dry while a flood does within
``burst`` events. The design
of nghttp2's stream-reset and glitch limiters (token buckets of 1,000
refilled at 33 per second), with the refund for progress added after
h2o's reset budget.

Pure: the clock is passed in. Event-loop only: no lock.
"""

from __future__ import annotations


class Allowance:
    __slots__ = ("_burst", "_progress", "_rate", "_stamp", "_tokens")

    def __init__(self, burst: int, per_second: float, now: float) -> None:
        self._burst = float(burst)
        self._rate = per_second
        self._tokens = float(burst)
        self._stamp = now
        self._progress = 0

    def spend(self, now: float, progress: int = 0) -> bool:
        """Take one token; False (nothing taken) when none is left.
        ``progress``: the caller's running count of progress so far."""
        tokens = self._tokens + (now - self._stamp) * self._rate + (progress - self._progress)
        if tokens > self._burst:
            tokens = self._burst
        self._stamp = now
        self._progress = progress
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    @property
    def tokens(self) -> float:
        """Tokens left as of the last ``spend``."""
        return self._tokens
