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

``Allowance`` is pure (the clock is passed in); ``Conduct``, the two buckets
a connection keeps, reads the clock. Event-loop only: no lock.
"""

from __future__ import annotations

import time

from turnout.transports.http2.frames import ENHANCE_YOUR_CALM, ProtocolViolation
from turnout.transports.http2.limits import Http2Limits


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


class Conduct:
    """One connection's two allowances: frames that make the server work
    without moving a request forward (glitches), and streams the client
    reset before their answer or opened past the limit. Both are refilled
    by answers (``answered``, counted by whoever answers)."""

    __slots__ = ("_glitches", "_per_answer", "_resets", "answered")

    def __init__(self, limits: Http2Limits, now: float) -> None:
        self._resets = Allowance(limits.reset_burst, limits.resets_per_second, now)
        self._glitches = Allowance(limits.glitch_burst, limits.glitches_per_second, now)
        self._per_answer = limits.glitches_per_answer
        self.answered = 0  # streams whose handler answered: the buckets' progress

    def glitch(self, what: str) -> None:
        """A frame that makes the server work without moving a request forward."""
        if not self._glitches.spend(time.monotonic(), self.answered * self._per_answer):
            raise ProtocolViolation(ENHANCE_YOUR_CALM, f"too many frames without progress (last: {what})")

    def reset(self) -> None:
        """A stream the client reset before its answer, or opened past the limit."""
        if not self._resets.spend(time.monotonic(), self.answered):
            raise ProtocolViolation(ENHANCE_YOUR_CALM, "too many streams reset or refused")
