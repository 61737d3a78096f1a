"""A model's service-level objectives, judged window by window (a count of
requests): the p99 latency of its answers and the share of requests that
failed on the server's side. Pure: the data plane feeds it and posts the
verdicts to the alert notifier."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SloVerdict:
    requests: int
    p99_seconds: float | None  # None: no request succeeded
    error_rate: float


@dataclass(slots=True)
class SloWindow:
    size: int = 1000
    latencies: list[float] = field(default_factory=list)
    failures: int = 0

    def add(self, seconds: float | None) -> SloVerdict | None:
        """One request (``seconds`` None: it failed); the verdict when the window is full."""
        if seconds is None:
            self.failures += 1
        else:
            self.latencies.append(seconds)
        requests = len(self.latencies) + self.failures
        if requests < self.size:
            return None
        ordered = sorted(self.latencies)
        p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] if ordered else None
        verdict = SloVerdict(requests, p99, self.failures / requests)
        self.latencies, self.failures = [], 0
        return verdict
