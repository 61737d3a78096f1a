"""One endpoint's routing in force (:class:`Route`), as it is kept and
stored: the policy, where it came from, a rollout under way and its guard;
its stored form and back; what it sends where (weights, mirrored variants);
the step syntax of the CLI. Pure: no state beyond the values themselves."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from turnout.routing import rollout as rollouts
from turnout.routing.document import RoutingDocument, describe, parse
from turnout.routing.guard import GuardLimits, Window
from turnout.routing.policy import ABTest, BlueGreen, Canary, Policy, PolicyError, Shadow, Single
from turnout.routing.rollout import Rollout, Step

DEFAULT_GUARD = GuardLimits()
CONFIG = "model.toml"  # the actor of changes read from a model's configuration
GUARD = "rollout guard"  # the actor of automatic rollout decisions


@dataclass(slots=True)
class Route:
    """One endpoint's routing in force. Replaced whole, never changed in place."""

    policy: Policy
    source: str  # "model.toml" or who set it through the admin API
    config_digest: str | None  # of the [routing] table this state was made under
    rollout: Rollout | None = None
    guard: GuardLimits = DEFAULT_GUARD
    # the baseline's last window before a 100% step, where it serves nothing: the guard compares with it
    baseline_before: Window | None = None

    @property
    def key_name(self) -> str | None:
        """The header / request parameter holding the assignment key (A/B only)."""
        return self.policy.key if isinstance(self.policy, ABTest) else None

    def with_rollout(self, plan: Rollout, actor: str) -> Route:
        """This route with the rollout moved on to ``plan`` (its weight becomes the canary's)."""
        policy = Canary(plan.baseline, plan.candidate, plan.weight)
        return dataclasses.replace(self, policy=policy, rollout=plan, source=actor)

    def as_state(self) -> dict[str, Any]:
        return {
            "policy": describe(self.policy),
            "source": self.source,
            "config_digest": self.config_digest,
            "rollout": None if self.rollout is None else rollout_state(self.rollout),
            "guard": dataclasses.asdict(self.guard),
            "baseline_before": None if self.baseline_before is None else dataclasses.asdict(self.baseline_before),
        }


def table_digest(document: RoutingDocument | None) -> str | None:
    if document is None:
        return None
    text = json.dumps(document.model_dump(exclude_none=True), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def weights(policy: Policy) -> dict[str, float]:
    """Percent of the endpoint's requests each variant answers under ``policy``
    (a shadow's copies are not answers: its weight is 0)."""
    if isinstance(policy, Single):
        return {policy.variant: 100.0}
    if isinstance(policy, Canary):
        return {policy.baseline: 100.0 - policy.weight, policy.candidate: policy.weight}
    if isinstance(policy, BlueGreen):
        return {policy.blue: 100.0 if policy.live == policy.blue else 0.0,
                policy.green: 100.0 if policy.live == policy.green else 0.0}  # fmt: skip
    if isinstance(policy, Shadow):
        return {policy.primary: 100.0, policy.shadow: 0.0}
    assert isinstance(policy, ABTest)
    return dict(policy.weights)


def mirrors(route: Route | None) -> frozenset[str]:
    """The variants a route sends copies of requests to."""
    if route is None:
        return frozenset()
    policy, plan = route.policy, route.rollout
    mirrored = set()
    if isinstance(policy, Shadow) and policy.percent > 0:
        mirrored.add(policy.shadow)
    if plan is not None and plan.state is rollouts.State.RUNNING and route.guard.mirror_percent > 0:
        mirrored.add(plan.candidate)
    return frozenset(mirrored)


def summary(route: Route) -> str:
    text = json.dumps(describe(route.policy), sort_keys=True)
    if route.rollout is not None:
        text += f"; rollout {steps_text(route.rollout.steps)}"
    return text


def steps_text(steps: tuple[Step, ...]) -> str:
    def one(step: Step) -> str:
        held = [f"{step.hold_seconds:g}s"] if step.hold_seconds is not None else []
        counted = [f"{step.min_requests}r"] if step.min_requests is not None else []
        return ":".join([f"{step.weight:g}", *held, *counted])

    return ",".join(one(s) for s in steps)


def rollout_state(plan: Rollout) -> dict[str, Any]:
    return {
        "baseline": plan.baseline,
        "candidate": plan.candidate,
        "steps": [dataclasses.asdict(s) for s in plan.steps],
        "step": plan.step,
        "weight": plan.weight,
        "state": plan.state.value,
        "reason": plan.reason,
    }


def route_from_state(state: dict[str, Any], now: float) -> Route:
    """A stored state back into a route; a running step's hold starts again."""
    policy = parse(state["policy"]).to_policy()
    plan = None
    stored = state.get("rollout")
    if stored is not None:
        steps = tuple(Step(**s) for s in stored["steps"])
        plan = Rollout(
            stored["baseline"],
            stored["candidate"],
            steps,
            stored["step"],
            now,
            rollouts.State(stored["state"]),
            stored["reason"],
        )
    guard = GuardLimits(**state.get("guard", {}))
    before = state.get("baseline_before")
    baseline_before = None if before is None else Window(**before)
    return Route(policy, state["source"], state.get("config_digest"), plan, guard, baseline_before)


def parse_steps(text: str) -> tuple[Step, ...]:
    """``5:30s,25:30s:200r,100:60s``: weight, then a hold time and/or a minimum of requests."""
    steps = []
    for part in text.split(","):
        weight, *rest = part.strip().split(":")
        hold, count = None, None
        try:
            for item in rest:
                if item.endswith("s"):
                    hold = float(item[:-1])
                elif item.endswith("r"):
                    count = int(item[:-1])
                else:
                    raise ValueError(item)
            value = float(weight)
        except ValueError:
            raise PolicyError(f"step {part!r}: write WEIGHT:SECONDSs and/or WEIGHT:COUNTr, e.g. 25:60s:200r") from None
        steps.append(Step(value, hold, count))  # which says what is wrong with the numbers
    return tuple(steps)
