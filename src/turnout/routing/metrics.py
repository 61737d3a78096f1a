"""What traffic control shows: Prometheus families, read from it when
scraped (the policy in force per endpoint, each variant's weight, a
rollout's step and state, the guard's and operators' decisions with their
cause, routed requests and errors per variant), and the dashboard's
overview of one endpoint (:func:`overview`).

Read at scrape time, like the shadow families: the request path only bumps
two integers per routed request (``TrafficControl.observe``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from turnout.routing import rollout as rollouts
from turnout.routing.document import describe
from turnout.routing.route import Route, weights


class Traffic(Protocol):
    """What the collector reads of ``TrafficControl``."""

    @property
    def routes(self) -> Mapping[str, Route]: ...

    @property
    def served(self) -> Mapping[tuple[str, str], list[int]]: ...

    @property
    def decisions(self) -> Mapping[tuple[str, str, str], int]: ...


def overview(traffic: Traffic, endpoint: str) -> dict[str, Any] | None:
    """What a dashboard shows of an endpoint's routing: the policy, each
    variant's weight and routed requests and errors, the rollout's step,
    state and last reason, and the decisions taken; None without a policy."""
    route = traffic.routes.get(endpoint)
    if route is None:
        return None
    plan = route.rollout
    variants = {
        variant: {"weight": weight, "requests": 0, "errors": 0} for variant, weight in weights(route.policy).items()
    }
    for (name, variant), (requests, errors) in traffic.served.items():
        if name == endpoint:
            variants.setdefault(variant, {"weight": 0.0})
            variants[variant].update(requests=requests, errors=errors)
    rollout = None
    if plan is not None:
        rollout = {"step": plan.step + 1, "steps": len(plan.steps), "state": plan.state.value, "reason": plan.reason}
    decisions = [
        {"decision": kind, "cause": cause, "count": count}
        for (name, kind, cause), count in sorted(traffic.decisions.items())
        if name == endpoint
    ]
    return {"policy": describe(route.policy), "source": route.source, "variants": variants,
            "rollout": rollout, "decisions": decisions}  # fmt: skip


class RoutingCollector(Collector):
    def __init__(self, traffic: Traffic) -> None:
        self._traffic = traffic

    def describe(self) -> Iterator[Metric]:
        return iter(_families())

    def collect(self) -> Iterator[Metric]:
        families = _families()
        traffic = self._traffic
        for endpoint, route in sorted(traffic.routes.items()):
            families.policy.add_metric([endpoint, describe(route.policy)["policy"], route.source], 1)
            for variant, weight in weights(route.policy).items():
                families.weight.add_metric([endpoint, variant], weight)
            plan = route.rollout
            if plan is not None:
                families.step.add_metric([endpoint], plan.step + 1)
                families.steps.add_metric([endpoint], len(plan.steps))
                for state in rollouts.State:
                    families.state.add_metric([endpoint, state.value], 1.0 if plan.state is state else 0.0)
        for (endpoint, variant), (requests, errors) in sorted(traffic.served.items()):
            families.requests.add_metric([endpoint, variant, "success"], requests - errors)
            families.requests.add_metric([endpoint, variant, "error"], errors)
        for (endpoint, kind, cause), count in sorted(traffic.decisions.items()):
            families.decisions.add_metric([endpoint, kind, cause], count)
        yield from families


class _Families(NamedTuple):
    policy: GaugeMetricFamily
    weight: GaugeMetricFamily
    step: GaugeMetricFamily
    steps: GaugeMetricFamily
    state: GaugeMetricFamily
    decisions: CounterMetricFamily
    requests: CounterMetricFamily


def _families() -> _Families:
    return _Families(
        GaugeMetricFamily(
            "turnout_routing_policy", "The routing policy in force (1), and who set it.",
            labels=["model", "policy", "source"],
        ),
        GaugeMetricFamily(
            "turnout_routing_weight_percent", "Percent of the endpoint's requests each variant answers.",
            labels=["model", "variant"],
        ),
        GaugeMetricFamily("turnout_rollout_step", "The rollout's current step, from 1.", labels=["model"]),
        GaugeMetricFamily("turnout_rollout_steps", "The rollout's number of steps.", labels=["model"]),
        GaugeMetricFamily(
            "turnout_rollout_state", "1 for the rollout's state (running, paused, promoted, rolled_back), else 0.",
            labels=["model", "state"],
        ),
        CounterMetricFamily(
            "turnout_rollout_decisions",
            "Rollout decisions (step, promoted, rolled_back, paused, resumed) by cause: healthy, errors, "
            "latency, divergence (the guard's), operator.",
            labels=["model", "decision", "cause"],
        ),
        CounterMetricFamily(
            "turnout_routing_requests",
            "Requests routed by a policy, by the variant that answered and outcome (error: a server-side "
            "failure, as the rollout guard counts them).",
            labels=["model", "variant", "outcome"],
        ),
    )  # fmt: skip


def register_routing_metrics(registry: CollectorRegistry, traffic: Traffic) -> None:
    registry.register(RoutingCollector(traffic))
