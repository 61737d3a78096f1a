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
SHARED_SAMPLE = 1_000  # latencies a replica shares of each variant's window (shared_routing.py)


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

    def shared(self) -> dict[str, Any]:
        """What another replica's leader needs of this window: counts and part of the sample."""
        return {"requests": self.requests, "errors": self.errors, "seen": self._seen,
                "latencies": self.latencies[:SHARED_SAMPLE]}  # fmt: skip

    def merged(self, others: list[dict[str, Any]], rng: random.Random) -> VariantWindow:
        """This window and other replicas' (``shared``) as one: counts summed,
        and a sample drawn from each in proportion to the successes it stands for."""
        parts = [{"seen": self._seen, "latencies": self.latencies}, *others]
        whole = VariantWindow(rng)
        whole.requests = self.requests + sum(int(o["requests"]) for o in others)
        whole.errors = self.errors + sum(int(o["errors"]) for o in others)
        whole._seen = sum(int(p["seen"]) for p in parts)
        room = min(SAMPLE, sum(len(p["latencies"]) for p in parts))
        for part in parts:
            share = round(room * int(part["seen"]) / whole._seen) if whole._seen else 0
            whole.latencies += [float(x) for x in part["latencies"][:share]]  # a reservoir: any slice is uniform
        return whole


@dataclass(slots=True)
class _StepWindows:
    """One endpoint's windows for its rollout's current step."""

    by_variant: dict[str, VariantWindow] = field(default_factory=dict)
    mirrored_at_start: tuple[int, int] = (0, 0)  # the candidate's (compared, agreeing) copies then
    step: tuple[str, int] = ("", 0)  # the rollout's candidate and step these windows are of


class RolloutWindows:
    """The evidence each running rollout is judged on: per endpoint, the
    current step's window of each variant, and the candidate's mirrored
    comparisons counted since the step began. A new or changed rollout
    judges its own requests only; a step starts fresh windows."""

    def __init__(
        self,
        mirrored: Callable[[str, str], tuple[int, int]],
        elsewhere: Callable[[str, tuple[str, int]], list[dict[str, Any]]] = lambda endpoint, step: [],
    ) -> None:
        self._mirrored = mirrored  # (endpoint, shadow) -> (compared, agreeing) copies so far
        # other replicas' windows of the same step (shared state: shared_routing.py), each {variant: shared()}
        self._elsewhere = elsewhere
        self._by_endpoint: dict[str, _StepWindows] = {}
        self._rng = random.Random()

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
            self._restart(endpoint, plan)

    def judge(self, endpoint: str, route: Route, now: float) -> tuple[Route, RolloutEvent] | None:
        """The rollout's decision on this step's evidence, as the route that
        follows and its event; None while it keeps going (or runs not at all)."""
        plan = route.rollout
        if plan is None or plan.state is not rollouts.State.RUNNING:
            return None
        windows = self._by_endpoint.get(endpoint) or self._restart(endpoint, plan)
        confidence = route.guard.confidence
        elsewhere = self._elsewhere(endpoint, windows.step)
        baseline = self._summary_of(windows, plan.baseline, elsewhere, confidence)
        if plan.weight >= 100.0 and route.baseline_before is not None:
            baseline = route.baseline_before  # the baseline serves nothing at 100%: its last window
        candidate = self._summary_of(windows, plan.candidate, elsewhere, confidence)
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
            self._restart(endpoint, changed)
        return new, event

    def shared(self) -> dict[str, dict[str, Any]]:
        """This replica's windows of each running rollout's step, for the leader elsewhere."""
        return {
            endpoint: {"step": list(windows.step), "windows": {v: w.shared() for v, w in windows.by_variant.items()}}
            for endpoint, windows in self._by_endpoint.items()
        }

    def summaries(self, endpoint: str, confidence: float) -> dict[str, dict[str, Any]] | None:
        windows = self._by_endpoint.get(endpoint)
        if windows is None:
            return None
        return {
            name: dataclasses.asdict(window.summary(confidence)) for name, window in sorted(windows.by_variant.items())
        }

    def _restart(self, endpoint: str, plan: rollouts.Rollout) -> _StepWindows:
        windows = self._by_endpoint[endpoint] = _StepWindows(
            mirrored_at_start=self._mirrored(endpoint, plan.candidate), step=(plan.candidate, plan.step)
        )
        return windows

    def _summary_of(
        self, windows: _StepWindows, variant: str, elsewhere: list[dict[str, Any]], confidence: float
    ) -> Window:
        window = windows.by_variant.get(variant) or VariantWindow(self._rng)
        others = [found[variant] for found in elsewhere if variant in found]
        return (window.merged(others, self._rng) if others else window).summary(confidence)
