"""Each variant's requests during a rollout step: counts, errors and a
uniform sample of its latencies, summarised into the ``Window`` the guard
judges; and each running rollout's windows (:class:`RolloutWindows`), judged
at every tick.

The sample is a reservoir (Vitter's algorithm R): every latency of the step
is kept with the same probability, so the baseline's sample and the
candidate's cover the same stretch of time even when one side gets nine
times the other's requests. A deque of the latest would leave the busy side
judged on its last seconds and the quiet side on the whole step.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from turnout.routing import rollout as rollouts
from turnout.routing.guard import Divergence, Window, summarise
from turnout.routing.rollout import Event as RolloutEvent
from turnout.routing.route import GUARD, Route

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


@dataclass(slots=True)
class _StepWindows:
    """One endpoint's windows for its rollout's current step."""

    by_variant: dict[str, VariantWindow] = field(default_factory=dict)
    mirrored_at_start: tuple[int, int] = (0, 0)  # the candidate's (compared, agreeing) copies then


class RolloutWindows:
    """The evidence each running rollout is judged on: per endpoint, the
    current step's window of each variant, and the candidate's mirrored
    comparisons counted since the step began. A new or changed rollout
    judges its own requests only; a step starts fresh windows."""

    def __init__(self, mirrored: Callable[[str, str], tuple[int, int]]) -> None:
        self._mirrored = mirrored  # (endpoint, shadow) -> (compared, agreeing) copies so far
        self._by_endpoint: dict[str, _StepWindows] = {}

    def observe(self, endpoint: str, variant: str, ok: bool, seconds: float) -> None:
        windows = self._by_endpoint.get(endpoint)
        if windows is None:
            return
        window = windows.by_variant.get(variant)
        if window is None:
            window = windows.by_variant[variant] = VariantWindow()
        window.observe(ok, seconds)

    def follow(self, endpoint: str, route: Route | None, keep: bool = False) -> None:
        """``route`` is now in force: a running rollout gets fresh windows
        unless ``keep`` (the guard's own decisions keep the step's)."""
        plan = None if route is None else route.rollout
        if plan is None or plan.state is not rollouts.State.RUNNING:
            self._by_endpoint.pop(endpoint, None)
        elif not keep or endpoint not in self._by_endpoint:
            self._restart(endpoint, plan.candidate)

    def judge(self, endpoint: str, route: Route, now: float) -> tuple[Route, RolloutEvent] | None:
        """The rollout's decision on this step's evidence, as the route that
        follows and its event; None while it keeps going (or runs not at all)."""
        plan = route.rollout
        if plan is None or plan.state is not rollouts.State.RUNNING:
            return None
        windows = self._by_endpoint.get(endpoint) or self._restart(endpoint, plan.candidate)
        confidence = route.guard.confidence
        baseline = _summary_of(windows.by_variant.get(plan.baseline), confidence)
        if plan.weight >= 100.0 and route.baseline_before is not None:
            baseline = route.baseline_before  # the baseline serves nothing at 100%: its last window
        candidate = _summary_of(windows.by_variant.get(plan.candidate), confidence)
        divergence = None
        if route.guard.min_agreement is not None:
            compared, agreeing = self._mirrored(endpoint, plan.candidate)
            start = windows.mirrored_at_start
            divergence = Divergence(compared - start[0], agreeing - start[1])
        changed, event = rollouts.advance(plan, now, baseline, candidate, route.guard, divergence)
        if event is None:
            return None
        new = route.with_rollout(changed, GUARD)
        if event.kind == "step":
            kept = baseline if baseline.requests else route.baseline_before
            new = dataclasses.replace(new, baseline_before=kept)
            self._restart(endpoint, plan.candidate)
        return new, event

    def summaries(self, endpoint: str, confidence: float) -> dict[str, dict[str, Any]] | None:
        windows = self._by_endpoint.get(endpoint)
        if windows is None:
            return None
        return {
            name: dataclasses.asdict(window.summary(confidence)) for name, window in sorted(windows.by_variant.items())
        }

    def _restart(self, endpoint: str, candidate: str) -> _StepWindows:
        windows = self._by_endpoint[endpoint] = _StepWindows(mirrored_at_start=self._mirrored(endpoint, candidate))
        return windows


def _summary_of(window: VariantWindow | None, confidence: float) -> Window:
    return Window(0, 0, None) if window is None else window.summary(confidence)
