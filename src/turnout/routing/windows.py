"""Each variant's requests during a rollout step: counts, errors and a
uniform sample of its latencies, summarised into the ``Window`` the guard judges.

The sample is a reservoir (Vitter's algorithm R): every latency of the step
is kept with the same probability, so the baseline's sample and the
candidate's cover the same stretch of time even when one side gets nine
times the other's requests. A deque of the latest would leave the busy side
judged on its last seconds and the quiet side on the whole step.
"""

from __future__ import annotations

import random

from turnout.routing.guard import Window, summarise

SAMPLE = 5_000  # enough for p99 bounds within a fraction of a percentile, without growing with the step


class VariantWindow:
    __slots__ = ("_rng", "_seen", "errors", "latencies", "requests")

    def __init__(self, rng: random.Random | None = None) -> None:
        self.requests = 0
        self.errors = 0
        self.latencies: list[float] = []
        self._seen = 0  # successful requests, of which latencies holds a sample
        self._rng = rng or random.Random()

    def observe(self, ok: bool, seconds: float) -> None:
        self.requests += 1
        if not ok:
            self.errors += 1
            return
        self._seen += 1
        if len(self.latencies) < SAMPLE:
            self.latencies.append(seconds)
            return
        slot = self._rng.randrange(self._seen)
        if slot < SAMPLE:
            self.latencies[slot] = seconds

    def summary(self, confidence: float) -> Window:
        return summarise(self.requests, self.errors, self.latencies, confidence)
