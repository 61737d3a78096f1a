"""The canary rollout state machine, on made-up windows and a made-up clock."""

from __future__ import annotations

import pytest

from turnout.routing.policy import PolicyError
from turnout.routing.rollout import (
    Divergence,
    GuardLimits,
    State,
    Step,
    Window,
    advance,
    pause,
    promote,
    resume,
    roll_back,
    start,
    unhealthy,
)

STEPS = (Step(5, hold_seconds=60), Step(25, hold_seconds=60, min_requests=100), Step(100, hold_seconds=30))
LIMITS = GuardLimits(max_error_ratio=2.0, error_slack=0.01, max_p99_ratio=1.5, min_samples=20)
HEALTHY = Window(requests=500, errors=1, p99_seconds=0.010)


def test_a_healthy_candidate_goes_through_every_step_to_promotion() -> None:
    rollout = start("v1", "v2", STEPS, now=0.0)
    assert rollout.weight == 5
    rollout, event = advance(rollout, 30.0, HEALTHY, Window(50, 0, 0.011), LIMITS)
    assert event is None and rollout.weight == 5  # held 30 of 60 s
    rollout, event = advance(rollout, 60.0, HEALTHY, Window(100, 0, 0.011), LIMITS)
    assert event is not None and event.kind == "step" and rollout.weight == 25 and rollout.step_started == 60.0
    rollout, event = advance(rollout, 130.0, HEALTHY, Window(99, 0, 0.011), LIMITS)
    assert event is None  # held long enough, but 99 of the 100 requests the step asks
    rollout, event = advance(rollout, 131.0, HEALTHY, Window(100, 0, 0.011), LIMITS)
    assert rollout.weight == 100
    rollout, event = advance(rollout, 161.0, HEALTHY, Window(300, 0, 0.011), LIMITS)
    assert rollout.state is State.PROMOTED and event is not None and event.kind == "promoted"
    assert rollout.weight == 100
    assert advance(rollout, 999.0, HEALTHY, Window(300, 300, 1.0), LIMITS) == (rollout, None)  # finished


def test_a_candidate_with_errors_is_rolled_back_within_the_step() -> None:
    rollout = start("v1", "v2", STEPS, now=0.0)
    rollout, event = advance(rollout, 5.0, HEALTHY, Window(40, 8, 0.010), LIMITS)  # 5 s into a 60 s step
    assert rollout.state is State.ROLLED_BACK and rollout.weight == 0
    assert event is not None and event.kind == "rolled_back" and event.cause == "errors"
    assert (
        rollout.reason == "at 5%: error rate 20.0% against the baseline's 0.2%: at least 6.9% more (allowed 1.0% more)"
    )


def test_a_slow_candidate_is_rolled_back_with_its_p99() -> None:
    slow = Window(40, 0, 0.050, p99_low=0.040)
    baseline = Window(500, 1, 0.010, p99_low=0.009, p99_high=0.012)
    rollout, event = advance(start("v1", "v2", STEPS, 0.0), 1.0, baseline, slow, LIMITS)
    assert rollout.state is State.ROLLED_BACK and event is not None and event.cause == "latency"
    assert rollout.reason == (
        "at 5%: p99 50.00 ms (at least 40.00 ms) against the baseline's 10.00 ms (bound 12.00 ms; allowed 18.00 ms)"
    )


def test_latency_is_judged_on_bounds_with_an_absolute_slack() -> None:
    baseline = Window(2000, 0, 0.0002, p99_low=0.00018, p99_high=0.00025)  # a 0.2 ms model
    # 5 ms is 20x the baseline, but its lower bound, 1.1 ms, is within 0.25 ms + the 1 ms slack
    assert unhealthy(baseline, Window(40, 0, 0.005, p99_low=0.0011), LIMITS) is None
    assert unhealthy(baseline, Window(40, 0, 0.005, p99_low=0.0013), LIMITS) is not None
    # too few candidate samples for a lower bound: nothing is shown
    assert unhealthy(baseline, Window(40, 0, 0.5, p99_low=None), LIMITS) is None
    # a slow model: the ratio is the larger allowance
    slow_baseline = Window(2000, 0, 0.010, p99_low=0.009, p99_high=0.011)
    assert unhealthy(slow_baseline, Window(40, 0, 0.02, p99_low=0.016), LIMITS) is None  # 16 <= 16.5 ms
    assert unhealthy(slow_baseline, Window(40, 0, 0.02, p99_low=0.017), LIMITS) is not None


def test_too_few_samples_neither_judge_nor_advance() -> None:
    rollout = start("v1", "v2", STEPS, now=0.0)
    few = Window(19, 19, 9.0)  # all errors, very slow, but only 19 requests
    assert unhealthy(HEALTHY, few, LIMITS) is None
    assert advance(rollout, 3600.0, HEALTHY, few, LIMITS) == (rollout, None)


def test_error_rates_are_judged_on_bounds_with_an_absolute_slack() -> None:
    clean = Window(1000, 0, 0.01)  # one point more than the baseline is allowed
    assert unhealthy(clean, Window(1000, 22, 0.01), LIMITS) is None  # 2.2%, but at least only 0.8% more
    assert unhealthy(clean, Window(1000, 30, 0.01), LIMITS) is not None  # at least 1.4% more
    # one error in 20 is not a 5% error rate shown
    assert unhealthy(Window(1000, 5, 0.01), Window(20, 1, 0.01), LIMITS) is None
    # a baseline whose 25 requests happened to fail none is not taken to fail never
    assert unhealthy(Window(25, 0, 0.01), Window(25, 2, 0.01), LIMITS) is None
    # a baseline failing often allows its ratio: 10% -> 20%
    assert unhealthy(Window(5000, 500, 0.01), Window(5000, 750, 0.01), LIMITS) is None
    assert unhealthy(Window(5000, 500, 0.01), Window(5000, 1250, 0.01), LIMITS) is not None


def test_operators_pause_resume_promote_and_roll_back() -> None:
    rollout = start("v1", "v2", STEPS, now=0.0)
    paused, event = pause(rollout)
    assert paused.state is State.PAUSED and event is not None
    assert advance(paused, 500.0, HEALTHY, HEALTHY, LIMITS) == (paused, None)  # a paused rollout stays put
    resumed, _ = resume(paused, now=500.0)
    assert resumed.state is State.RUNNING and resumed.step_started == 500.0
    promoted, event = promote(resumed)
    assert promoted.weight == 100 and event is not None and event.kind == "promoted"
    undone, event = roll_back(promoted)  # an operator's undo after promotion
    assert undone.weight == 0 and event is not None and event.kind == "rolled_back"
    assert roll_back(undone) == (undone, None)
    back, event = roll_back(start("v1", "v2", STEPS, 0.0), "bad outputs")
    assert back.weight == 0 and back.reason == "bad outputs"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Step(0, hold_seconds=1), "above 0 and at most 100"),
        (lambda: Step(120, hold_seconds=1), "above 0 and at most 100"),
        (lambda: Step(5), "needs a hold time, a minimum of requests, or both"),
        (lambda: Step(5, hold_seconds=-1), "positive number of seconds"),
        (lambda: start("v1", "v2", (Step(50, 1), Step(25, 1)), 0.0), r"must rise, got \[50, 25\]"),
        (lambda: start("v1", "v1", (Step(50, 1),), 0.0), "must differ from the baseline"),
        (lambda: start("v1", "v2", (), 0.0), "at least one step"),
    ],
)
def test_bad_rollouts_are_refused(make: object, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        make()  # type: ignore[operator]


def test_outputs_diverging_on_mirrored_requests_roll_back() -> None:
    limits = GuardLimits(min_samples=20, mirror_percent=50.0, min_agreement=0.95)
    rollout = start("v1", "v2", STEPS, 0.0)
    healthy = Window(100, 0, 0.01)
    assert unhealthy(healthy, healthy, limits, Divergence(19, 0)) is None  # too few compared to judge
    assert unhealthy(healthy, healthy, limits, Divergence(40, 38)) is None  # 95%: enough
    back, event = advance(rollout, 1.0, healthy, healthy, limits, Divergence(40, 37))
    assert back.state is State.ROLLED_BACK and event is not None
    assert event.detail == "at 5%: outputs agree on 92.5% of 40 mirrored requests (at least 95.0% required)"
    without = GuardLimits(min_samples=20)  # no min_agreement: divergence is not judged
    assert unhealthy(healthy, healthy, without, Divergence(40, 0)) is None


def test_the_last_step_needs_enough_candidate_requests_and_still_judges_errors() -> None:
    limits = GuardLimits(min_samples=20)
    last = start("v1", "v2", (Step(100, hold_seconds=1),), 0.0)
    baseline_before = Window(500, 0, 0.01)
    few = Window(15, 15, None)  # every request failed, but too few to judge
    assert advance(last, 5.0, baseline_before, few, limits) == (last, None)  # not promoted on a hunch
    failing = Window(40, 10, 0.01)
    back, event = advance(last, 5.0, baseline_before, failing, limits)
    assert back.state is State.ROLLED_BACK and event is not None and "error rate 25.0%" in event.detail
    # after a restart the baseline's earlier window is gone: the absolute slack still holds
    back, event = advance(last, 5.0, Window(0, 0, None), failing, limits)
    assert back.state is State.ROLLED_BACK and event is not None and "allowed 1.0%" in event.detail
    promoted, event = advance(last, 5.0, Window(0, 0, None), Window(40, 0, 0.01), limits)
    assert promoted.state is State.PROMOTED and event is not None


def test_the_last_step_does_not_compare_latency_across_windows() -> None:
    # at 100% the candidate serves all the traffic: slower than the baseline was at 50%,
    # through no fault of its own; its latency was judged where both ran
    last = start("v1", "v2", (Step(100, hold_seconds=1),), 0.0)
    baseline_before = Window(2000, 0, 0.001, p99_low=0.0009, p99_high=0.0011)
    loaded = Window(2000, 0, 0.010, p99_low=0.009, p99_high=0.011)
    promoted, event = advance(last, 5.0, baseline_before, loaded, GuardLimits())
    assert promoted.state is State.PROMOTED and event is not None and event.cause == "healthy"
