"""A progressive canary rollout as a pure state machine.

A rollout moves a candidate through steps of traffic (e.g. 5% -> 25% -> 50%
-> 100%), each held for a time and/or a number of the candidate's requests.
Throughout a step a guard compares the candidate with the baseline over the
step's window: error rate and p99 latency, as ratios with a small absolute
slack (a baseline with no errors must not make one error an infinite ratio).
Unhealthy: rolled back to 0% at once, with the reason. Healthy when the step
is done: the next step, and after the last, promotion (the candidate becomes
the default).

``advance`` is a pure function of the rollout, the time and the window's
statistics, so every transition is tested without a server or a clock; the
caller keeps the windows, persists the result and logs the event. At a 100%
step the baseline serves nothing, so the caller passes the baseline's window
from the step before, to keep the guard comparing.
"""

from __future__ import annotations

import enum
import itertools
import math
from dataclasses import dataclass, replace

from turnout.routing.policy import PolicyError


@dataclass(frozen=True, slots=True)
class Step:
    weight: float  # percent of traffic to the candidate
    hold_seconds: float | None = None  # at least this long...
    min_requests: int | None = None  # ...and at least this many candidate requests

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and 0.0 < self.weight <= 100.0):
            raise PolicyError(f"a rollout step's weight must be above 0 and at most 100, got {self.weight!r}")
        if self.hold_seconds is None and self.min_requests is None:
            raise PolicyError(f"the {self.weight:g}% step needs a hold time, a minimum of requests, or both")
        if self.hold_seconds is not None and not (math.isfinite(self.hold_seconds) and self.hold_seconds > 0):
            raise PolicyError(f"the {self.weight:g}% step's hold time must be a positive number of seconds")
        if self.min_requests is not None and self.min_requests < 1:
            raise PolicyError(f"the {self.weight:g}% step's minimum of requests must be at least 1")


@dataclass(frozen=True, slots=True)
class GuardLimits:
    max_error_ratio: float = 2.0  # candidate error rate <= this x the baseline's...
    error_slack: float = 0.01  # ...or the baseline's plus this (absolute), whichever is larger
    max_p99_ratio: float = 1.5  # candidate p99 <= this x the baseline's
    min_samples: int = 20  # requests each side before the guard judges
    # output divergence: mirror this percent of the baseline's requests to the
    # candidate, and require their outputs to agree on at least min_agreement of them
    mirror_percent: float = 0.0
    min_agreement: float | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """One variant's requests in the current step's window."""

    requests: int
    errors: int
    p99_seconds: float | None  # None: no successful request yet

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Divergence:
    """The baseline's requests mirrored to the candidate in the current window."""

    compared: int
    agreeing: int

    @property
    def agreement(self) -> float:
        return self.agreeing / self.compared if self.compared else 1.0


class State(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True)
class Rollout:
    baseline: str
    candidate: str
    steps: tuple[Step, ...]
    step: int = 0  # index into steps
    step_started: float = 0.0  # when the current step began (monotonic seconds)
    state: State = State.RUNNING
    reason: str = ""  # why it was rolled back, paused or promoted

    def __post_init__(self) -> None:
        if not self.steps:
            raise PolicyError("a rollout needs at least one step")
        weights = [s.weight for s in self.steps]
        if any(b <= a for a, b in itertools.pairwise(weights)):
            raise PolicyError(f"rollout step weights must rise, got {weights}")
        if self.baseline == self.candidate:
            raise PolicyError("the candidate must differ from the baseline")

    @property
    def weight(self) -> float:
        """Percent of traffic the candidate gets now."""
        if self.state is State.PROMOTED:
            return 100.0
        if self.state is State.ROLLED_BACK:
            return 0.0
        return self.steps[self.step].weight

    @property
    def finished(self) -> bool:
        return self.state in (State.PROMOTED, State.ROLLED_BACK)


@dataclass(frozen=True, slots=True)
class Event:
    """What happened, for the event log."""

    kind: str  # "step", "promoted", "rolled_back", "paused", "resumed"
    detail: str


def start(baseline: str, candidate: str, steps: tuple[Step, ...], now: float) -> Rollout:
    return Rollout(baseline, candidate, steps, 0, now)


def advance(
    rollout: Rollout,
    now: float,
    baseline: Window,
    candidate: Window,
    limits: GuardLimits,
    divergence: Divergence | None = None,
) -> tuple[Rollout, Event | None]:
    """The rollout after looking at the current step's window at ``now``."""
    if rollout.state is not State.RUNNING:
        return rollout, None
    whole = rollout.weight >= 100.0
    if whole and baseline.requests < limits.min_samples:
        # the baseline serves nothing at 100%: without its earlier window (a restart), the
        # candidate is held to the absolute slack alone
        baseline = Window(0, 0, None)
        problem = _diverged(divergence, limits) or _too_many_errors(baseline, candidate, limits)
    else:
        problem = unhealthy(baseline, candidate, limits, divergence)
    if problem is not None:
        reason = f"at {rollout.weight:g}%: {problem}"
        return replace(rollout, state=State.ROLLED_BACK, reason=reason), Event("rolled_back", reason)
    step = rollout.steps[rollout.step]
    held = step.hold_seconds is None or now - rollout.step_started >= step.hold_seconds
    counted = step.min_requests is None or candidate.requests >= step.min_requests
    judged = candidate.requests >= limits.min_samples and (whole or baseline.requests >= limits.min_samples)
    if not (held and counted and judged):
        return rollout, None
    if rollout.step + 1 == len(rollout.steps):
        reason = f"healthy through {len(rollout.steps)} step(s)"
        return replace(rollout, state=State.PROMOTED, reason=reason), Event("promoted", reason)
    following = replace(rollout, step=rollout.step + 1, step_started=now)
    return following, Event("step", f"{step.weight:g}% -> {following.weight:g}%: healthy")


def unhealthy(
    baseline: Window, candidate: Window, limits: GuardLimits, divergence: Divergence | None = None
) -> str | None:
    """Why the candidate is worse than the baseline allows; None if it is not
    (or there are too few samples on either side to say)."""
    problem = _diverged(divergence, limits)
    if problem is not None:
        return problem
    if candidate.requests < limits.min_samples or baseline.requests < limits.min_samples:
        return None
    problem = _too_many_errors(baseline, candidate, limits)
    if problem is not None:
        return problem
    if candidate.p99_seconds is not None and baseline.p99_seconds is not None:
        limit = baseline.p99_seconds * limits.max_p99_ratio
        if candidate.p99_seconds > limit:
            return (
                f"p99 {candidate.p99_seconds * 1000:.1f} ms against the baseline's "
                f"{baseline.p99_seconds * 1000:.1f} ms (allowed {limit * 1000:.1f} ms)"
            )
    return None


def _diverged(divergence: Divergence | None, limits: GuardLimits) -> str | None:
    if (
        limits.min_agreement is not None
        and divergence is not None
        and divergence.compared >= limits.min_samples
        and divergence.agreement < limits.min_agreement
    ):
        return (
            f"outputs agree on {divergence.agreement:.1%} of {divergence.compared} mirrored requests "
            f"(at least {limits.min_agreement:.1%} required)"
        )
    return None


def _too_many_errors(baseline: Window, candidate: Window, limits: GuardLimits) -> str | None:
    if candidate.requests < limits.min_samples:
        return None
    allowed = max(baseline.error_rate * limits.max_error_ratio, baseline.error_rate + limits.error_slack)
    if candidate.error_rate > allowed:
        return (
            f"error rate {candidate.error_rate:.1%} against the baseline's {baseline.error_rate:.1%} "
            f"(allowed {allowed:.1%})"
        )
    return None


def pause(rollout: Rollout, reason: str = "paused by an operator") -> tuple[Rollout, Event | None]:
    if rollout.state is not State.RUNNING:
        return rollout, None
    return replace(rollout, state=State.PAUSED, reason=reason), Event("paused", reason)


def resume(rollout: Rollout, now: float) -> tuple[Rollout, Event | None]:
    """Back to running; the current step's hold starts again."""
    if rollout.state is not State.PAUSED:
        return rollout, None
    return replace(rollout, state=State.RUNNING, step_started=now, reason=""), Event("resumed", "")


def promote(rollout: Rollout, reason: str = "promoted by an operator") -> tuple[Rollout, Event | None]:
    if rollout.finished:
        return rollout, None
    return replace(rollout, state=State.PROMOTED, reason=reason), Event("promoted", reason)


def roll_back(rollout: Rollout, reason: str = "rolled back by an operator") -> tuple[Rollout, Event | None]:
    """Back to the baseline, from any step or after promotion (an operator's undo)."""
    if rollout.state is State.ROLLED_BACK:
        return rollout, None
    return replace(rollout, state=State.ROLLED_BACK, reason=reason), Event("rolled_back", reason)
