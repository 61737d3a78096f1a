"""The rollout guard's statistics, and its error rates over many simulated rollouts.

The rollouts run the real pure core (``VariantWindow``, ``advance``) the way
``TrafficControl.tick`` does, a look every tick, on latencies drawn from a
server-like distribution (a log-normal body, queueing bursts, rare pauses of
the whole process) and errors drawn at known rates. What they must show
(issue 16): identical candidates promoted in at least 99% of rollouts;
candidates with 5% errors or 3x the latency rolled back in at least 99%,
each within the first two steps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pytest

from turnout.routing.guard import GuardLimits, Window, quantile_bounds, summarise, wilson
from turnout.routing.rollout import State, Step, advance, start
from turnout.routing.windows import SAMPLE, VariantWindow

STEPS = (Step(10, min_requests=400), Step(50, min_requests=600), Step(100, min_requests=300))
PER_TICK = 50  # requests between two looks: 200 requests/s and the default 0.25 s tick
ROLLOUTS = 200  # of each kind


@pytest.mark.parametrize("n", [20, 100, 700, 5000])
def test_quantile_bounds_hold_with_their_confidence(n: int) -> None:
    rng = np.random.default_rng(n)
    confidence = 0.99
    low, high = quantile_bounds(n, 0.99, confidence)
    samples = np.sort(rng.exponential(size=(4000, n)), axis=1)
    true_p99 = -np.log(0.01)
    assert low is not None
    assert np.mean(samples[:, low] > true_p99) <= 1 - confidence + 0.005
    if high is not None:
        assert np.mean(samples[:, high] < true_p99) <= 1 - confidence + 0.005
    else:
        assert n < 460  # 1 - 0.99^n < 0.99: even the largest sample is not an upper bound yet


def test_wilson_bounds_contain_the_rate() -> None:
    low, high = wilson(5, 100, 0.999)
    assert 0 < low < 0.05 < high < 0.2
    assert wilson(0, 0, 0.999) == (0.0, 1.0)
    assert wilson(0, 1000, 0.999)[0] == 0.0


def test_a_window_keeps_a_uniform_sample_of_the_whole_step() -> None:
    window = VariantWindow(random.Random(0))
    for i in range(4 * SAMPLE):
        window.observe(True, float(i))
    window.observe(False, 1.0)
    assert (window.requests, window.errors, len(window.latencies)) == (4 * SAMPLE + 1, 1, SAMPLE)
    quarters = np.histogram(window.latencies, bins=4, range=(0, 4 * SAMPLE))[0]
    assert all(abs(q - SAMPLE / 4) < 0.1 * SAMPLE for q in quarters), quarters  # not just the latest
    summary = window.summary(0.999)
    assert summary.p99_low is not None and summary.p99_high is not None
    assert summary.p99_low <= summary.p99_seconds <= summary.p99_high  # type: ignore[operator]


def test_a_summary_takes_the_nearest_rank_p99() -> None:
    summary = summarise(101, 1, [i / 1000 for i in range(1, 101)], 0.999)
    assert (summary.requests, summary.errors, summary.p99_seconds) == (101, 1, 0.099)
    assert summarise(3, 3, [], 0.999) == Window(3, 3, None)


@dataclass(frozen=True)
class Variant:
    """How a simulated variant answers: its latency scale and error rate."""

    latency_factor: float = 1.0
    error_rate: float = 0.0

    def answer(self, rng: random.Random) -> tuple[bool, float]:
        if rng.random() < self.error_rate:
            return False, 0.0
        seconds = rng.lognormvariate(-6.9, 0.25)  # about 1 ms
        if rng.random() < 0.02:  # a queueing burst
            seconds += rng.expovariate(1 / 0.003)
        if rng.random() < 0.002:  # the whole process paused (a collection, a noisy neighbour)
            seconds += 0.015
        return True, seconds * self.latency_factor


DEFAULT = GuardLimits()
SERVER_LIKE = Variant()


def simulate(
    candidate: Variant, rng: random.Random, limits: GuardLimits = DEFAULT, baseline: Variant = SERVER_LIKE
) -> tuple[State, int]:
    """One rollout, looked at every PER_TICK requests as TrafficControl.tick
    does; (how it ended, the step it ended at)."""
    rollout = start("v1", "v2", STEPS, 0.0)
    windows = {"v1": VariantWindow(rng), "v2": VariantWindow(rng)}
    before: Window | None = None
    while not rollout.finished:
        for _ in range(PER_TICK):
            to_candidate = rng.random() * 100 < rollout.weight
            name, variant = ("v2", candidate) if to_candidate else ("v1", baseline)
            windows[name].observe(*variant.answer(rng))
        base = windows["v1"].summary(limits.confidence)
        if rollout.weight >= 100 and before is not None:
            base = before
        following, event = advance(rollout, 0.0, base, windows["v2"].summary(limits.confidence), limits)
        if event is not None and event.kind == "step":
            before = base if base.requests else before
            windows = {"v1": VariantWindow(rng), "v2": VariantWindow(rng)}
        if following.finished:
            return following.state, rollout.step
        rollout = following
    raise AssertionError("unreachable")


def rates(candidate: Variant, seed: int, baseline: Variant = SERVER_LIKE) -> tuple[float, float]:
    """(share promoted, share rolled back within the first two steps) over ROLLOUTS rollouts."""
    rng = random.Random(seed)
    ends = [simulate(candidate, rng, baseline=baseline) for _ in range(ROLLOUTS)]
    promoted = sum(state is State.PROMOTED for state, _ in ends) / ROLLOUTS
    early = sum(state is State.ROLLED_BACK and step <= 1 for state, step in ends) / ROLLOUTS
    return promoted, early


@pytest.mark.parametrize("variant", [Variant(), Variant(error_rate=0.02)], ids=str)
def test_identical_candidates_are_promoted(variant: Variant) -> None:
    promoted, _ = rates(variant, seed=1, baseline=variant)
    assert promoted >= 0.99, promoted


@pytest.mark.parametrize("candidate", [Variant(error_rate=0.05), Variant(latency_factor=3.0)], ids=str)
def test_bad_candidates_are_rolled_back_within_two_steps(candidate: Variant) -> None:
    _, early = rates(candidate, seed=2)
    assert early >= 0.99, early
