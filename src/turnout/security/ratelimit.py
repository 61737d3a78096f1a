"""Request rate limits per credential: a token bucket each.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; a
request takes one, or is refused with the time until one is back (HTTP 429
with Retry-After, gRPC RESOURCE_EXHAUSTED). Pure: the clock is passed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not self.per_second > 0 or self.burst < 1:
            raise ValueError(f"a rate limit needs requests per second > 0 and a burst >= 1, got {self}")


class TokenBucket:
    __slots__ = ("_rate", "_tokens", "_updated")

    def __init__(self, rate: Rate, now: float) -> None:
        self._rate = rate
        self._tokens = float(rate.burst)
        self._updated = now

    def take(self, now: float) -> float:
        """0.0 when a token was taken; otherwise the seconds until one will be there."""
        rate = self._rate
        self._tokens = min(float(rate.burst), self._tokens + (now - self._updated) * rate.per_second)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / rate.per_second

    def full_at(self) -> float:
        """When the bucket will be full again if nothing takes from it."""
        return self._updated + (self._rate.burst - self._tokens) / self._rate.per_second


class RateLimiter:
    """One bucket per credential, made on its first request. A credential's
    own rate (from its key record) overrides the default; with neither, no
    limit. Event-loop only: no lock."""

    SWEEP_ABOVE = 10_000  # buckets kept before full ones are forgotten

    def __init__(self, default: Rate | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._default = default
        self._clock = clock
        self._buckets: dict[tuple[str, Rate], TokenBucket] = {}

    @property
    def limits_by_default(self) -> bool:
        return self._default is not None

    def check(self, credential: str, own: Rate | None = None) -> float:
        """0.0 if the request may go ahead, else the seconds to wait."""
        rate = own or self._default
        if rate is None:
            return 0.0
        now = self._clock()
        # keyed by the rate too: a key whose limit changed starts a fresh bucket
        bucket = self._buckets.get((credential, rate))
        if bucket is None:
            if len(self._buckets) >= self.SWEEP_ABOVE:
                self._sweep(now)
            bucket = self._buckets[(credential, rate)] = TokenBucket(rate, now)
        return bucket.take(now)

    def _sweep(self, now: float) -> None:
        """Forget the buckets that have refilled: a new one would be the same.
        Keeps memory bounded however many callers (JWT subjects) come and go."""
        self._buckets = {k: b for k, b in self._buckets.items() if b.full_at() > now}

    def __len__(self) -> int:
        return len(self._buckets)
