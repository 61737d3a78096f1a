"""A progressive canary rollout as a pure state machine.

A rollout moves a candidate through steps of traffic (e.g. 5% -> 25% -> 50%
-> 100%), each held for a time and/or a number of the candidate's requests.
Throughout a step the guard (``guard``) compares the candidate with the
baseline over the step's window, where both serve: error rate and p99
latency, with confidence bounds and absolute slack. Unhealthy: rolled back
to 0% at once, with the reason. Healthy when the step is done: the next
step, and after the last, promotion (the candidate becomes the default).

At a 100% step the baseline serves nothing, so there is no window where both
serve: the caller passes the baseline's window from the step before (the
last where both ran), the candidate's errors are judged against it, and its
latency, already judged where both ran, is not compared across windows (a
model serving all the traffic is not slower than one serving half of it by
any fault of its own).

``advance`` is a pure function of the rollout, the time and the windows'
statistics, so every transition is tested without a server or a clock; the
caller keeps the windows, persists the result and logs the event.
"""

from __future__ import annotations

import enum
import itertools
import math
from dataclasses import dataclass, replace

from turnout.routing.guard import Divergence, GuardLimits, Window, diverged, slower, worse_errors
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
    cause: str = "operator"  # "healthy", "errors", "latency", "divergence" (the guard's), or "operator"


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
    if whole:  # errors against the last window where both ran; latency was judged there
        reference = baseline if baseline.requests >= limits.min_samples else Window(0, 0, None)
        found = _first(
            ("divergence", diverged(divergence, limits)), ("errors", worse_errors(reference, candidate, limits))
        )
    else:
        found = judge(baseline, candidate, limits, divergence)
    if found is not None:
        cause, problem = found
        reason = f"at {rollout.weight:g}%: {problem}"
        return replace(rollout, state=State.ROLLED_BACK, reason=reason), Event("rolled_back", reason, cause)
    step = rollout.steps[rollout.step]
    held = step.hold_seconds is None or now - rollout.step_started >= step.hold_seconds
    counted = step.min_requests is None or candidate.requests >= step.min_requests
    judged = candidate.requests >= limits.min_samples and (whole or baseline.requests >= limits.min_samples)
    if not (held and counted and judged):
        return rollout, None
    if rollout.step + 1 == len(rollout.steps):
        reason = f"healthy through {len(rollout.steps)} step(s)"
        return replace(rollout, state=State.PROMOTED, reason=reason), Event("promoted", reason, "healthy")
    following = replace(rollout, step=rollout.step + 1, step_started=now)
    return following, Event("step", f"{step.weight:g}% -> {following.weight:g}%: healthy", "healthy")


def judge(
    baseline: Window, candidate: Window, limits: GuardLimits, divergence: Divergence | None = None
) -> tuple[str, str] | None:
    """(cause, why) the candidate is shown worse than the baseline allows, in a
    window where both served; None if it is not (or there are too few samples to say)."""
    if candidate.requests < limits.min_samples or baseline.requests < limits.min_samples:
        return _first(("divergence", diverged(divergence, limits)))
    return _first(
        ("divergence", diverged(divergence, limits)),
        ("errors", worse_errors(baseline, candidate, limits)),
        ("latency", slower(baseline, candidate, limits)),
    )


def unhealthy(
    baseline: Window, candidate: Window, limits: GuardLimits, divergence: Divergence | None = None
) -> str | None:
    """Why the candidate is shown worse than the baseline allows; None if it is not."""
    found = judge(baseline, candidate, limits, divergence)
    return None if found is None else found[1]


def _first(*checks: tuple[str, str | None]) -> tuple[str, str] | None:
    for cause, problem in checks:
        if problem is not None:
            return cause, problem
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
