"""Each variant's requests during a rollout step: counts, errors and recent
latencies, summarised into the ``Window`` the rollout guard judges."""

from __future__ import annotations

import math
from collections import deque

from turnout.routing.rollout import Window

# enough for a p99 over the latest requests without growing with the step
RECENT_LATENCIES = 5_000


class VariantWindow:
    __slots__ = ("errors", "latencies", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latencies: deque[float] = deque(maxlen=RECENT_LATENCIES)

    def observe(self, ok: bool, seconds: float) -> None:
        self.requests += 1
        if ok:
            self.latencies.append(seconds)
        else:
            self.errors += 1

    def summary(self) -> Window:
        return Window(self.requests, self.errors, p99(self.latencies))


def p99(latencies: deque[float]) -> float | None:
    """The nearest-rank 99th percentile; None without samples."""
    if not latencies:
        return None
    ordered = sorted(latencies)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
