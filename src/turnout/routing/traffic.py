"""Traffic control for the running server: each endpoint's policy in force,
the changes to it, and the rollouts that change it on their own.

The decisions are the pure core's (``choose``, ``rollout.advance``); this
module checks a policy against the loaded models before it takes effect,
hands it to the :class:`~turnout.routing.route_table.RouteTable` (saved with
its event, swapped in at once), and ticks the rollouts, each judged on its
:class:`~turnout.routing.windows.RolloutWindows`.

Precedence between ``model.toml`` and the admin API: a change through the
API lasts (across restarts) until the ``[routing]`` table of the model's
``model.toml`` itself changes; then the file wins. Each stored state keeps a
digest of the table it was made under to tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from turnout.errors import InvalidRequest, NotFound, TurnoutError, Unavailable
from turnout.routing import rollout as rollouts
from turnout.routing.choose import Decision, RandomSource, choose
from turnout.routing.document import RoutingDocument, describe, parse
from turnout.routing.guard import GuardLimits
from turnout.routing.policy import BlueGreen, Canary, Policy, PolicyError, Shadow, Single
from turnout.routing.policy_check import Registry, check_policy
from turnout.routing.rollout import Step
from turnout.routing.route import (
    CONFIG,
    DEFAULT_GUARD,
    GUARD,
    Route,
    mirrors,
    route_from_state,
    steps_text,
    summary,
    table_digest,
)
from turnout.routing.route_table import RouteTable
from turnout.routing.state_store import LoggedEvent, StateStore
from turnout.routing.variants import target
from turnout.routing.windows import RolloutWindows

log = logging.getLogger("turnout.routing")


NO_POLICY = ("cleared", "no policy applies: the default version serves", CONFIG)


class TrafficControl:
    def __init__(
        self,
        registry: Registry,
        store: StateStore,
        rng: RandomSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick_seconds: float = 0.25,
        mirrored: Callable[[str, str], tuple[int, int]] | None = None,
        stop_mirroring: Callable[[str, frozenset[str]], object] | None = None,
        leads: Callable[[], bool] = lambda: True,
        elsewhere: Callable[[str, tuple[str, int]], list[dict[str, Any]]] = lambda endpoint, step: [],
    ) -> None:
        self._leads = leads  # shared state (shared_routing.py): whether this replica judges rollouts
        self._windows = RolloutWindows(mirrored or (lambda endpoint, shadow: (0, 0)), elsewhere)  # others' too
        self._table = RouteTable(store, self._windows, stop_mirroring)
        self.routes = self._table.routes  # the one dict, replaced entry by entry, never whole
        self._registry = registry
        self._store = store
        self._rng = rng or random.Random()
        self._clock = clock
        self._tick = tick_seconds
        self._stored = store.load()  # states from earlier runs, taken up as their endpoints load
        self._ticker: asyncio.Task[None] | None = None
        self._started = False  # changes wait until every model's saved routing is taken up
        self._cleared: dict[str, str | None] = {}  # policies removed through the API, by [routing] digest
        # for the metrics: routed requests per (endpoint, variant) as [requests, errors], and
        # rollout decisions per (endpoint, kind, cause); counted on the event loop, read at scrape
        self.served: dict[tuple[str, str], list[int]] = {}
        self.decisions: Counter[tuple[str, str, str]] = Counter()

    def has_saved(self, endpoint: str) -> bool:
        """A state saved by an earlier run waits for this endpoint's model."""
        return endpoint in self._stored

    # the request path
    def decide(self, route: Route, key: str | None) -> Decision:
        decision = choose(route.policy, key, self._rng)
        plan, guard = route.rollout, route.guard
        if (  # the guard compares outputs: a share of the baseline's requests also go to the candidate
            guard.mirror_percent > 0
            and plan is not None
            and plan.state is rollouts.State.RUNNING
            and decision.serve == plan.baseline
            and self._rng.random() * 100.0 < guard.mirror_percent
        ):
            return Decision(decision.serve, plan.candidate)
        return decision

    def mirrors(self, endpoint: str, variant: str) -> bool:
        """The policy in force now still sends copies of ``endpoint``'s requests to ``variant``
        (a decision made before a request ran may have been overtaken by a change)."""
        return variant in mirrors(self.routes.get(endpoint))

    def observe(self, endpoint: str, variant: str, ok: bool, seconds: float) -> None:
        """A routed request's outcome: counted, and for the rollout guard (while one runs)."""
        counts = self.served.get((endpoint, variant))
        if counts is None:
            counts = self.served[(endpoint, variant)] = [0, 0]
        counts[0] += 1
        if not ok:
            counts[1] += 1
        self._windows.observe(endpoint, variant, ok, seconds)

    # changes
    def configured(self, endpoint: str, document: RoutingDocument | None) -> None:
        """The endpoint's model (re)loaded with this ``[routing]`` table.

        At start, the state stored by an earlier run is taken up if it was made
        under the same table and still applies to the loaded models; a reload
        keeps the policy in force (or its removal through the API) on the same
        terms. Otherwise the file's policy applies. When it cannot (a variant
        missing, say), a policy in force that still applies stays; if none
        does, the file's first variant (its baseline) serves alone, so a
        refused canary never leaves its candidate serving everything. Changes
        made here take effect even when they cannot be saved (retried later).
        ``PolicyError`` says why the file's policy was refused.
        """
        digest = table_digest(document)
        current = self.routes.get(endpoint)
        stored = self._stored.pop(endpoint, None)
        if stored is not None and stored.get("config_digest") == digest:
            if stored.get("policy") is None:  # removed through the API under this very table
                self._cleared[endpoint] = digest
                return
            try:
                route = route_from_state(stored, self._clock())
                self._check(endpoint, route.policy)
            except (PolicyError, KeyError, TypeError, ValueError) as exc:
                self._table.log(endpoint, "refused", f"the saved policy no longer applies: {exc}", CONFIG)
            else:
                self._table.install(endpoint, route)
                return
        elif stored is None and current is None and endpoint in self._cleared:
            if self._cleared[endpoint] == digest:
                return  # removed through the API, and the table has not changed since
        elif stored is None and current is not None and current.config_digest == digest:
            try:  # a reload with the same table: keep what is in force (a rollout, an API change)...
                self._check(endpoint, current.policy)
            except PolicyError as exc:  # ...unless the reload took one of its variants away
                self._table.log(endpoint, "refused", f"the policy in force no longer applies: {exc}", CONFIG)
                current = None
            else:
                return
        elif current is not None and not self._applies(endpoint, current):
            current = None
        self._cleared.pop(endpoint, None)
        if document is None:
            if current is not None or stored is not None or endpoint in self.routes:
                cleared = ("cleared", f"no [routing] in {CONFIG}: the default version serves", CONFIG)
                self._table.set(endpoint, None, cleared, required=False)
            return
        try:
            route = self._route_from_document(endpoint, document, CONFIG, digest)
        except PolicyError as exc:
            self._table.log(endpoint, "refused", f"{CONFIG}: {exc}", CONFIG)
            if current is None:
                self._fall_back(endpoint, document, digest)
            raise
        self._table.set(endpoint, route, ("policy", summary(route), CONFIG), required=False)

    def model_changed(self, model: str) -> None:
        """``model`` (re)loaded or unloaded: policies of other endpoints that
        route to it are checked again; one that no longer applies gives way
        to its endpoint's file policy, or to none."""
        for endpoint, route in list(self.routes.items()):
            if endpoint == model or all(target(endpoint, v).model != model for v in route.policy.variants):
                continue
            if self._applies(endpoint, route):
                continue
            reason = f"the policy in force no longer applies once {model!r} changed"
            self._table.log(endpoint, "refused", reason, CONFIG)
            self._table.install(endpoint, None)
            try:
                document = self._registry.get(endpoint).routing
            except TurnoutError:
                document = None
            if document is None:
                self._table.set(endpoint, None, NO_POLICY, required=False, local=True)
                continue
            with contextlib.suppress(PolicyError):  # refused: logged, and a fallback is in force
                self.configured(endpoint, document)

    def _applies(self, endpoint: str, route: Route) -> bool:
        try:
            self._check(endpoint, route.policy)
        except PolicyError:
            return False
        return True

    def _fall_back(self, endpoint: str, document: RoutingDocument, digest: str | None) -> None:
        """The file's policy was refused and nothing else applies: its first
        variant serves alone if it can, else the default version does."""
        try:
            policy = document.to_policy()
            first = policy.live if isinstance(policy, BlueGreen) else policy.variants[0]
            fallback = Route(Single(first), CONFIG, digest)
            self._check(endpoint, fallback.policy)
        except PolicyError:
            self._table.set(endpoint, None, NO_POLICY, required=False, local=True)
            return
        self._table.set(endpoint, fallback, ("fallback", f"{first!r} alone, until the policy can apply", CONFIG),
                  required=False, local=True)  # fmt: skip

    def apply(self, endpoint: str, body: Any, actor: str) -> Route:
        """Set a policy from an admin API document; ``InvalidRequest`` saying why not."""
        self._changing(endpoint)
        try:
            document = parse(body)
            route = self._route_from_document(endpoint, document, actor, self._config_digest(endpoint))
        except PolicyError as exc:
            self._table.log(endpoint, "refused", str(exc), actor)
            raise InvalidRequest(f"policy refused, the one in force stays: {exc}") from None
        self._table.set(endpoint, route, ("policy", summary(route), actor))
        return route

    def note(self, endpoint: str, text: str, actor: str) -> None:
        """Why a change was made, in the endpoint's event log beside it (a report, a ticket)."""
        self._table.log(endpoint, "note", text, actor)

    def clear(self, endpoint: str, actor: str) -> None:
        """No policy: the default version serves. Lasts, across restarts, until
        the model's [routing] table changes (as any change through the API)."""
        self._changing(endpoint)
        if endpoint in self.routes:
            digest = self._config_digest(endpoint)
            removed = {"policy": None, "source": actor, "config_digest": digest}
            self._table.save(endpoint, removed, ("cleared", "no policy: the default version serves", actor))
            self._table.install(endpoint, None)
            self._cleared[endpoint] = digest

    def switch(self, endpoint: str, actor: str, to: str | None = None) -> Route:
        """Blue/green: all traffic to the other colour (or to ``to``)."""
        route = self._route(endpoint)
        policy = route.policy
        if not isinstance(policy, BlueGreen):
            raise InvalidRequest(f"'{endpoint}' has a {describe(policy)['policy']} policy, not blue_green")
        live = to or (policy.green if policy.live == policy.blue else policy.blue)
        try:
            switched = BlueGreen(policy.blue, policy.green, live)
            self._check(endpoint, switched)  # the other colour may have been unloaded since
        except PolicyError as exc:
            self._table.log(endpoint, "refused", f"switch to {live!r}: {exc}", actor)
            raise InvalidRequest(f"switch refused, the policy in force stays: {exc}") from None
        new = dataclasses.replace(route, policy=switched, source=actor)
        self._table.set(endpoint, new, ("switched", f"{policy.live} -> {live}", actor))
        return new

    def start_rollout(
        self,
        endpoint: str,
        candidate: str,
        steps: tuple[Step, ...],
        actor: str,
        baseline: str | None = None,
        guard: GuardLimits = DEFAULT_GUARD,
    ) -> Route:
        self._changing(endpoint)
        current = self.routes.get(endpoint)
        try:
            baseline = baseline or self._serving(endpoint, current)
            plan = rollouts.start(baseline, candidate, steps, self._clock())
            policy: Policy = Canary(baseline, candidate, plan.weight)
            self._check(endpoint, policy)
        except PolicyError as exc:
            self._table.log(endpoint, "refused", f"rollout of {candidate!r}: {exc}", actor)
            raise InvalidRequest(f"rollout refused, the policy in force stays: {exc}") from None
        route = Route(policy, actor, self._config_digest(endpoint), plan, guard)
        self._table.set(endpoint, route, ("rollout", f"{baseline} -> {candidate}: {steps_text(steps)}", actor))
        return route

    def operate(self, endpoint: str, operation: str, actor: str) -> Route:
        """pause, resume, promote or rollback: the endpoint's rollout, or a fixed canary's weight."""
        route = self._route(endpoint)
        plan = route.rollout
        if plan is None:
            return self._operate_fixed(endpoint, route, operation, actor)
        if operation == "pause":
            changed, event = rollouts.pause(plan, f"paused by {actor}")
        elif operation == "resume":
            changed, event = rollouts.resume(plan, self._clock())
        elif operation == "promote":
            changed, event = rollouts.promote(plan, f"promoted by {actor}")
        elif operation == "rollback":
            changed, event = rollouts.roll_back(plan, f"rolled back by {actor}")
        else:
            raise InvalidRequest(f"unknown rollout operation {operation!r}: pause, resume, promote or rollback")
        if event is None:
            raise InvalidRequest(f"cannot {operation} the rollout of '{endpoint}': it is {plan.state.value}")
        self._table.set(endpoint, route.with_rollout(changed, actor), (event.kind, event.detail, actor))
        self.decisions[(endpoint, event.kind, event.cause)] += 1  # once made: _set refuses what it cannot save
        return self.routes[endpoint]

    def _operate_fixed(self, endpoint: str, route: Route, operation: str, actor: str) -> Route:
        policy = route.policy
        if not isinstance(policy, Canary) or operation not in ("promote", "rollback"):
            raise InvalidRequest(f"'{endpoint}' has no rollout to {operation}; start one with `turnout rollout start`")
        weight = 100.0 if operation == "promote" else 0.0
        kind = "promoted" if operation == "promote" else "rolled_back"
        new = dataclasses.replace(route, policy=Canary(policy.baseline, policy.candidate, weight), source=actor)
        self._table.set(endpoint, new, (kind, f"{policy.candidate} at {weight:g}%", actor))
        self.decisions[(endpoint, kind, "operator")] += 1
        return new

    def adopt(self, endpoint: str, state: dict[str, Any] | None) -> None:
        """Another replica saved ``endpoint``'s routing (shared state): in force here too, not saved again."""
        current = self.routes.get(endpoint)
        if state is None or state.get("policy") is None:  # forgotten, or cleared through the API
            if current is not None:
                self._table.install(endpoint, None)
            if state is not None:
                self._cleared[endpoint] = state.get("config_digest")
            return
        if current is not None and _same(current.as_state(), state):
            return
        if not self._registry.known(endpoint) or endpoint in self._stored:
            self._stored[endpoint] = state  # taken up when its model loads here (configured)
            return
        route = route_from_state(state, self._clock())
        self._check(endpoint, route.policy)  # PolicyError: a variant this replica does not serve
        self._table.install(endpoint, route)

    def shared_windows(self) -> dict[str, dict[str, Any]]:
        """This replica's windows of each running rollout's step (for the leader, wherever it runs)."""
        return self._windows.shared()

    # the rollout guard
    def start(self) -> None:
        self._started = True
        self._ticker = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        self._store.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                self.tick()
            except Exception:  # the guard must keep guarding whatever one tick met
                log.exception("rollout tick failed")

    def tick(self) -> None:
        """Judge every running rollout on its step's window (and retry saves that failed)."""
        now = self._clock()
        if not self._leads():  # a replica that lost the lease must not overwrite the new leader's saves
            return
        self._table.retry_unsaved(now)
        for endpoint, route in list(self.routes.items()):
            judged = self._windows.judge(endpoint, route, now)
            if judged is None:
                continue
            new, event = judged
            # the guard's decision takes effect even if it cannot be saved (a full disk): retried;
            # not if another replica changed the rollout meanwhile: judged again on that
            if not self._table.set(endpoint, new, (event.kind, event.detail, GUARD), required=False, keep_windows=True):
                continue
            self.decisions[(endpoint, event.kind, event.cause)] += 1
            log.log(logging.WARNING if event.kind == "rolled_back" else logging.INFO, "rollout of %s: %s: %s",
                    endpoint, event.kind, event.detail)  # fmt: skip

    # reading
    def status(self, endpoint: str) -> dict[str, Any]:
        self._endpoint(endpoint)
        route = self.routes.get(endpoint)
        if route is None:
            return {"endpoint": endpoint, "policy": None, "rollout": None}
        answer = {"endpoint": endpoint, **route.as_state()}
        del answer["config_digest"]
        windows = self._windows.summaries(endpoint, route.guard.confidence)
        if windows is not None and route.rollout is not None:
            answer["window"] = windows
        return answer

    def events(self, endpoint: str | None, limit: int = 100) -> list[LoggedEvent]:
        if endpoint is not None:
            self._endpoint(endpoint)
        return self._table.events(endpoint, limit)

    # inside
    def _route_from_document(self, endpoint: str, document: RoutingDocument, actor: str, digest: str | None) -> Route:
        policy = document.to_policy()
        self._check(endpoint, policy)
        steps = document.rollout_steps()
        plan = None
        if steps:
            assert isinstance(policy, Canary)
            plan = rollouts.start(policy.baseline, policy.candidate, steps, self._clock())
        return Route(policy, actor, digest, plan, document.guard_limits())

    def _check(self, endpoint: str, policy: Policy) -> None:
        check_policy(self._registry, endpoint, policy)

    def _serving(self, endpoint: str, route: Route | None) -> str:
        """The variant that serves the endpoint now, as a rollout's default baseline."""
        if route is None:
            return str(self._registry.get(endpoint).version)
        policy = route.policy
        if isinstance(policy, Single):
            return policy.variant
        if isinstance(policy, Canary):
            return policy.candidate if policy.weight >= 100 else policy.baseline
        if isinstance(policy, BlueGreen):
            return policy.live
        if isinstance(policy, Shadow):
            return policy.primary
        raise PolicyError(f"'{endpoint}' runs an A/B test: name the rollout's baseline")

    def _route(self, endpoint: str) -> Route:
        self._changing(endpoint)
        route = self.routes.get(endpoint)
        if route is None:
            raise InvalidRequest(f"'{endpoint}' has no routing policy")
        return route

    def _changing(self, endpoint: str) -> None:
        self._endpoint(endpoint)
        if not self._started:
            raise Unavailable("the server is still loading its models and their routing; retry", retry_after=1.0)

    def _endpoint(self, endpoint: str) -> None:
        if not self._registry.known(endpoint):
            raise NotFound(f"unknown model '{endpoint[:200]}'")

    def _config_digest(self, endpoint: str) -> str | None:
        try:
            served = self._registry.get(endpoint)
        except TurnoutError:
            current = self.routes.get(endpoint)
            return current.config_digest if current else None
        return table_digest(served.routing)


def _same(state: dict[str, Any], stored: dict[str, Any]) -> bool:
    return json.dumps(state, sort_keys=True) == json.dumps(stored, sort_keys=True)
