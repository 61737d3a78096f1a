"""Rollout windows shared between replicas: a window merged with other
replicas' counts its requests and errors all together and samples each
replica's latencies in proportion to the successes it stands for; a leader
that served none of a step's requests still judges it on the others'."""

from __future__ import annotations

import random

import pytest

from turnout.routing import rollout as rollouts
from turnout.routing.guard import GuardLimits
from turnout.routing.policy import Canary
from turnout.routing.rollout import Step
from turnout.routing.route import Route
from turnout.routing.windows import SHARED_SAMPLE, RolloutWindows, VariantWindow


def window(requests: int, errors: int, seconds: float) -> VariantWindow:
    found = VariantWindow(random.Random(0))
    for index in range(requests):
        found.observe(index >= errors, seconds)
    return found


def test_a_merged_window_sums_counts_and_samples_each_replica_by_its_weight() -> None:
    here = window(100, 10, 0.001)  # 90 successes at 1 ms
    there = window(3000, 0, 0.005).shared()  # 3,000 at 5 ms, of which it shares a part
    assert len(there["latencies"]) == SHARED_SAMPLE
    merged = here.merged([there], random.Random(0))
    assert (merged.requests, merged.errors) == (3100, 10)
    slow = sum(1 for latency in merged.latencies if latency == 0.005) / len(merged.latencies)
    assert slow == pytest.approx(3000 / 3090, abs=0.01)  # as many as the successes they stand for


def test_a_leader_without_requests_judges_the_step_on_the_other_replicas_windows() -> None:
    plan = rollouts.start("1", "2", (Step(50.0, 0.5, 20), Step(100.0, 0.5, 20)), now=0.0)
    route = Route(Canary("1", "2", 50.0), "ops", None, plan, GuardLimits(min_samples=20))
    shared = {"1": window(200, 0, 0.002).shared(), "2": window(200, 0, 0.002).shared()}
    alone = RolloutWindows(lambda endpoint, shadow: (0, 0))
    alone.follow("wine", route)
    assert alone.judge("wine", route, now=1.0) is None  # no evidence here: the step waits
    together = RolloutWindows(lambda endpoint, shadow: (0, 0),
                              lambda endpoint, step: [shared] if step == ("2", 0) else [])  # fmt: skip
    together.follow("wine", route)
    judged = together.judge("wine", route, now=1.0)
    assert judged is not None and judged[1].kind == "step"
    assert together.shared()["wine"]["step"] == ["2", 1]  # its windows are now the next step's
