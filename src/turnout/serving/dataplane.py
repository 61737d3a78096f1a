"""The V2 operations, independent of any transport: health, metadata,
inference and the repository extension. REST and gRPC both call this."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from turnout import __version__
from turnout.batcher.queue import BatchResult
from turnout.errors import ConfigError, InvalidRequest, NotFound, TurnoutError, Unavailable
from turnout.model.runtimes.base import Forwarded, Relayed
from turnout.model.tensors import Outputs, Tensors
from turnout.observability import logs, tracing
from turnout.observability.metrics import Metrics
from turnout.observability.payloads import PayloadLog
from turnout.protocol.types import InferenceRequest, InferenceResponse, InferOutput
from turnout.routing.choose import alternatives
from turnout.routing.feedback import Feedback
from turnout.routing.route import Route
from turnout.routing.shadow import ShadowMirror
from turnout.routing.traffic import TrafficControl
from turnout.routing.variants import target
from turnout.serving.caching import Caching
from turnout.serving.forwarding import Forwarding
from turnout.serving.observers import RequestObserver
from turnout.serving.outcomes import SERVER_SIDE, Outcomes
from turnout.serving.registry import ModelRegistry
from turnout.serving.served import ServedVersion, VersionsFailed
from turnout.serving.shadow_jobs import shadow_job
from turnout.serving.validation import key_text, queue_timeout, validate

log = logging.getLogger("turnout.dataplane")

SERVER_NAME = "turnout"
_target = functools.lru_cache(maxsize=4096)(target)
MAX_AB_ID = 128
EXTENSIONS = ("binary_tensor_data", "model_repository", "parameters")


@dataclass(slots=True)  # not frozen: one is made per request, and a frozen one costs four times as much
class Arrival:
    """What a request was resolved to before its body was read: the
    endpoint's ``route`` (its variant chosen once the request is read), or
    the live version that answers it (``served``). Never changed once made."""

    model: str
    served: ServedVersion | None
    route: Route | None

    @property
    def draining(self) -> bool:
        return self.served is not None and self.served.batcher.closing

    @property
    def remote(self) -> bool:
        """Its version is a remote set, which may take a body unread (``DataPlane.forward``)."""
        return self.served is not None and self.served.forwarder is not None


class DataPlane:
    def __init__(
        self,
        *,
        registry: ModelRegistry,
        metrics: Metrics,
        strict_readiness: bool = True,
        traffic: TrafficControl | None = None,
        mirror: ShadowMirror | None = None,
        feedback: Feedback | None = None,
        load_timeout: float = 60.0,
        access_log: bool = False,
        payloads: PayloadLog | None = None,
        observers: Sequence[RequestObserver] = (),
    ) -> None:
        self._outcomes = Outcomes(metrics, observers, payloads, access_log)
        self._forwarding = Forwarding(metrics, self._outcomes)
        self._caching = Caching(metrics, self._outcomes)
        self._load_timeout = load_timeout  # how long a request waits for a model to load on demand
        self._traffic = traffic
        self._mirror = mirror
        self._feedback = feedback
        self._registry = registry
        self._metrics = metrics
        self._strict_readiness = strict_readiness
        self._started = False
        self._stopping = False
        self._active = 0  # inference requests in flight, all models: how busy the process is, for shadows

    def mark_started(self) -> None:
        self._started = True

    def mark_stopping(self) -> None:
        self._stopping = True

    def live(self) -> bool:
        """The process answers; it stays live while it drains at shutdown (ready does not)."""
        return True

    def ready(self) -> bool:
        if not self._started or self._stopping:
            return False
        return self._registry.all_ready() if self._strict_readiness else True

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def model_ready(self, name: str, version: str | None) -> bool:
        """Whether it would serve now (a model out of memory would: it loads on
        demand); an unknown model or version raises NotFound."""
        if not version and self._registry.is_lazy(name):
            return True
        try:
            self._registry.get(name, version)
        except Unavailable:
            return False
        return True

    async def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        served = await self.served_version(name, version)
        return {
            "name": name,
            "versions": [str(v) for v in self._registry.versions(name)],
            "platform": served.platform,
            "inputs": [spec.as_metadata() for spec in served.signature.inputs],
            "outputs": [spec.as_metadata() for spec in served.signature.outputs],
        }

    async def served_version(self, name: str, version: str | None) -> ServedVersion:
        """The one way a model's name (and version) becomes the live version
        that answers: a model out of memory is loaded first (scale to zero),
        one still on its first load is waited for, each up to the load
        timeout; NotFound or Unavailable say why there is none."""
        registry = self._registry
        if registry.is_lazy(name):
            await self._cold_start(name)
        elif (loading := registry.load_in_progress(name)) is not None:  # at start, say: wait, not 503
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(loading.wait(), self._load_timeout)
        return registry.get(name, version)

    def unrouted_now(self, name: str, version: str | None) -> ServedVersion | None:
        """``unrouted_version`` when nothing is to be waited for (no load, no
        policy): the live version, or None (then ask ``unrouted_version``)."""
        registry = self._registry
        if self._chosen_by_policy(name, version) or registry.is_lazy(name) or registry.load_in_progress(name):
            return None
        try:
            return registry.get(name, version)
        except TurnoutError:
            return None  # refused the way ``unrouted_version`` counts it

    def _chosen_by_policy(self, name: str, version: str | None) -> bool:
        """A policy chooses the version (or may: before start, routing is still being taken up)."""
        traffic = self._traffic
        return not version and (not self._started or (traffic is not None and name in traffic.routes))

    async def unrouted_version(self, name: str, version: str | None, protocol: str) -> ServedVersion | None:
        """The live version a request for ``name`` (and ``version``) goes to
        when no routing policy is to choose it; None when one is. Refusals
        are counted as ``arrive`` counts them."""
        if self._chosen_by_policy(name, version):
            return None
        try:
            return await self.served_version(name, version)
        except TurnoutError as exc:
            self._refused(name, protocol, exc)
            raise

    async def arrive(self, name: str, version: str | None, protocol: str) -> Arrival:
        """What a request will be answered by, found before its body is read,
        so an unknown model is a 404 whatever the body holds: the endpoint's
        route, or its live version. ``infer`` takes it from there and looks
        again only if that version began to drain meanwhile (a reload)."""
        traffic = self._traffic
        route = None if version or traffic is None else traffic.routes.get(name)
        if route is not None:  # the variant is chosen once the request is read (its A/B key may be in the body)
            return Arrival(name, None, route)
        try:
            served = await self.served_version(name, version)
        except TurnoutError as exc:
            self._refused(name, protocol, exc)
            raise
        if not self._started and traffic is not None and not version:
            self._routing_pending(traffic, served)
        return Arrival(name, served, None)

    def _refused(self, name: str, protocol: str, exc: TurnoutError) -> None:
        # Unknown names are not used as labels: clients could grow the series without bound.
        known = self._registry.known(name)
        self._metrics.request_outcome(name if known else "", "", "", protocol, exc.code.value).inc()

    def record_rejected(self, arrival: Arrival, protocol: str, error: TurnoutError) -> None:
        """Count (and log) a request the transport could not decode."""
        served = arrival.served
        version = "" if served is None else str(served.version)
        self._metrics.request_outcome(arrival.model, version, "", protocol, error.code.value).inc()
        if self._outcomes.access_log:
            logs.access(None, arrival.model, version, "", protocol, error.code.value, None)

    async def _cold_start(self, name: str) -> None:
        """Wait for the model to load (again, should another load evict it
        meanwhile), up to the load timeout."""
        started = time.monotonic()
        deadline = started + self._load_timeout
        while self._registry.is_lazy(name):
            try:
                await asyncio.wait_for(self._registry.load_on_demand(name), max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                raise Unavailable(
                    f"model '{name}' is still loading after {self._load_timeout:g} s; retry", retry_after=1.0
                ) from None
            except (VersionsFailed, ConfigError) as exc:
                raise Unavailable(f"model '{name}' could not be loaded: {exc}") from None
        self._metrics.cold_start(name).observe(time.monotonic() - started)

    async def infer(
        self,
        request: InferenceRequest,
        protocol: str,
        deadline: float | None = None,
        key_of: Callable[[str], str | None] | None = None,
        arrival: Arrival | None = None,
    ) -> InferenceResponse:
        """Validate, queue and answer one request.

        ``deadline`` is the seconds the transport can still wait (a gRPC
        deadline); it shortens the model's queue timeout. ``key_of`` reads a
        header (or gRPC metadata) by name: an A/B test's assignment key.
        ``arrival``: what ``arrive`` found for it (else found now).
        A request naming a version is served by it, whatever the routing.
        """
        started = time.monotonic()
        in_flight = self._metrics.in_flight(request.model_name if self._registry.known(request.model_name) else "",
                                            protocol)  # fmt: skip
        in_flight.inc()
        self._active += 1
        try:
            response = await self._infer(request, protocol, deadline, key_of, started, arrival)
        except Exception as exc:  # a refusal, or a bug the transport answers with a 500: logged either way
            self._outcomes.request_failed(request, exc, protocol, started)
            raise
        finally:
            in_flight.inc(-1)
            self._active -= 1
        self._outcomes.responded(request, response, protocol, started)
        return response

    async def forward(
        self, arrival: Arrival, body: bytes, header_length: int | None, protocol: str, deadline: float | None = None
    ) -> Relayed | None:
        """``infer`` for a REST body that goes on unread to the remote set that answers it
        (serving/forwarding.py), within ``deadline`` seconds too; None: decode it, ``infer`` it."""
        served = arrival.served
        if served is None or not self._forwarding.may_forward(served, body, header_length):
            return None
        return await self._forwarding.forward(served, body, header_length, protocol, deadline)

    @property
    def relays(self) -> bool:
        """Whether ``relay`` may take a request: a remote set has been loaded here (a gateway)."""
        return self._registry.forwards

    def relay(self, model: str, version: str | None, body: bytes, header_length: int | None, protocol: str,
              deadline: float | None, done: Forwarded) -> bool:  # fmt: skip
        """``arrive`` and ``forward`` at once, by callbacks, for a request to a model's
        live version that is a remote set and takes it unread (``Forwarding.start``):
        ``done`` gets the replica's answer. False: it is none of those (unknown, routed
        by a policy, loading, a body that must be read): ``arrive``, ``infer`` it."""
        served = self.unrouted_now(model, version)
        if served is None or not self._forwarding.may_forward(served, body, header_length):
            return False
        return self._forwarding.start(served, body, header_length, protocol, deadline, done)

    async def _infer(
        self,
        request: InferenceRequest,
        protocol: str,
        deadline: float | None,
        key_of: Callable[[str], str | None] | None,
        started: float,
        arrival: Arrival | None,
    ) -> InferenceResponse:
        if arrival is None or arrival.draining:  # a reload finished while the body was read: what replaced it
            arrival = await self.arrive(request.model_name, request.model_version, protocol)
        if arrival.served is not None:
            return (await self._answer(arrival.served, request, protocol, deadline, "", started))[0]
        assert self._traffic is not None and arrival.route is not None  # a route comes from it
        return await self._routed(self._traffic, arrival.route, request, protocol, deadline, key_of, started)

    async def _routed(
        self,
        traffic: TrafficControl,
        route: Route,
        request: InferenceRequest,
        protocol: str,
        deadline: float | None,
        key_of: Callable[[str], str | None] | None,
        started: float,
    ) -> InferenceResponse:
        endpoint = request.model_name
        key_name = route.key_name
        key = None
        if key_name is not None:
            if request.id is not None and len(request.id) > MAX_AB_ID:  # the id is stored, for feedback
                raise InvalidRequest(f"an A/B-routed request's id must be at most {MAX_AB_ID} characters")
            key = (key_of(key_name) if key_of is not None else None) or key_text(request.parameters.get(key_name))
        decision = traffic.decide(route, key)
        variant, served = await self._pick(endpoint, decision.serve, route, protocol)
        try:
            response, cached = await self._answer(served, request, protocol, deadline, variant, started)
        except TurnoutError as exc:
            if exc.code in SERVER_SIDE:  # a client's bad request says nothing about the variant
                traffic.observe(endpoint, variant, False, time.monotonic() - started)
            raise
        seconds = time.monotonic() - started
        if not cached:  # a cached answer says nothing of how the variant runs (and a cold cache would tilt the guard)
            traffic.observe(endpoint, variant, True, seconds)
        response.parameters["variant"] = variant
        if key_name is not None and self._feedback is not None:
            if not response.id:  # feedback names the request by its id, so an A/B answer always has one
                response.id = uuid.uuid4().hex
            self._feedback.remember(endpoint, response.id, variant)
        mirror = self._mirror  # a busy server makes no copy at all: admits asks first
        if (
            decision.mirror is not None
            and mirror is not None
            and traffic.mirrors(endpoint, decision.mirror)  # the policy may have changed while this one ran
            and mirror.admits(endpoint, decision.mirror, self._active)
        ):
            mirror.offer(shadow_job(self._registry, endpoint, decision.mirror, request, response, seconds))
        return response

    def _routing_pending(self, traffic: TrafficControl, served: ServedVersion) -> None:
        """Before start, an endpoint whose routing is still to be taken up
        does not serve its default version by mistake (a rolled-back candidate, say)."""
        if served.routing is not None or traffic.has_saved(served.model):
            raise Unavailable(f"model '{served.model}' is restoring its routing; retry", retry_after=1.0)

    async def _pick(self, endpoint: str, variant: str, route: Route, protocol: str) -> tuple[str, ServedVersion]:
        """The chosen variant's live version (loaded first if out of memory)
        or, if it has none now (unloaded, failed to reload), the first of the
        policy's other variants that has one."""
        where = _target(endpoint, variant)
        try:
            return variant, await self.served_version(where.model, where.version)
        except (Unavailable, NotFound) as exc:
            for other in alternatives(route.policy, variant):
                instead = _target(endpoint, other)
                with contextlib.suppress(Unavailable, NotFound):
                    return other, self._registry.get(instead.model, instead.version)
            self._refused(where.model, protocol, exc)
            raise

    async def infer_checked(
        self,
        served: ServedVersion,
        inputs: Tensors,
        outputs: tuple[str, ...],
        parameters: Mapping[str, Any],
        protocol: str,
    ) -> Outputs:
        """A request its caller has already checked against ``served.signature``
        (a pipeline's step, whose graph was checked against that very signature
        at load): queued, counted and watched like any, without V2 request
        objects or a second validation. Measured: a model step went from ~45 µs
        over its model's run to ~15 µs (cancer_screening, c=1, in-process)."""
        started = time.monotonic()
        in_flight = self._metrics.in_flight(served.model, protocol)
        in_flight.inc()
        self._active += 1
        try:
            try:
                prepared = served.prepare(inputs)
            except TurnoutError as exc:
                self._outcomes.failed(served, exc, protocol, "")
                raise
            result = await self._run(served, prepared, outputs, served.timeout, parameters, protocol, "", started)
        finally:
            in_flight.inc(-1)
            self._active -= 1
        self._outcomes.logged(served, inputs, outputs, result, protocol, started)
        return result.outputs

    def infer_checked_now(
        self,
        served: ServedVersion,
        inputs: Tensors,
        outputs: tuple[str, ...],
        parameters: Mapping[str, Any],
        protocol: str,
    ) -> Outputs | None:
        """``infer_checked`` answered at once when the batcher runs it inline
        (``Batcher.submit_now``); None, nothing counted, when it would queue
        it: then ``infer_checked`` it (an ensemble's member that waits)."""
        if not served.batcher.may_answer_now():  # it would queue: prepare it once, in infer_checked
            return None
        started = time.monotonic()
        try:
            prepared = served.prepare(inputs)
            result = served.batcher.submit_now(prepared, outputs, parameters)
        except TurnoutError as exc:
            self._outcomes.failed(served, exc, protocol, "")
            raise
        if result is None:
            return None
        self._outcomes.answered(served, prepared, result, protocol, "", started)
        self._outcomes.logged(served, inputs, outputs, result, protocol, started)
        return result.outputs

    async def _answer(
        self,
        served: ServedVersion,
        request: InferenceRequest,
        protocol: str,
        deadline: float | None,
        variant: str,
        started: float,
    ) -> tuple[InferenceResponse, bool]:
        """The answer, and whether it came from the version's response cache."""
        model, version = request.model_name, str(served.version)
        trace = tracing.CURRENT.get()
        cache, key = served.cache, None
        try:
            checked = validate(request, served.signature, served.max_batch_size)
            inputs = served.prepare(checked.inputs)
            timeout = queue_timeout(served.timeout, request.parameters, deadline)
            if cache is not None:
                key = self._caching.key(served, checked.inputs, checked.outputs, request.parameters)
        except TurnoutError as exc:
            self._outcomes.failed(served, exc, protocol, variant)
            raise
        if trace is not None:
            trace.validated = tracing.RequestTrace.now()
        answer = None if key is None else self._caching.lookup(served, key, inputs, protocol, variant, started)
        if answer is None and key is not None and served.shared_cache is not None:
            answer = await self._caching.lookup_shared(served, key, inputs, checked.outputs, protocol, variant,
                                                       started)  # fmt: skip
        cached = answer is not None
        if answer is None:
            result = await self._run(served, inputs, checked.outputs, timeout, request.parameters, protocol, variant,
                                     started)  # fmt: skip
            answer = result.outputs
            if key is not None:
                self._caching.store(served, key, {name: answer[name] for name in checked.outputs})
            if trace is not None:
                trace.queue_seconds, trace.compute_seconds = result.queue_seconds, result.compute_seconds
        if trace is not None:
            trace.answered = tracing.RequestTrace.now()
            trace.model, trace.version, trace.variant = model, version, variant
        signature = served.signature
        outputs = []
        for name in checked.outputs:
            array = answer[name]
            spec = signature.output(name)
            assert spec is not None  # validate() checked the name
            outputs.append(InferOutput(name, spec.datatype, array.shape, array))
        return InferenceResponse(model, version, outputs, id=request.id), cached

    async def _run(
        self,
        served: ServedVersion,
        inputs: Tensors,
        outputs: tuple[str, ...],
        timeout: float | None,
        parameters: Mapping[str, Any],
        protocol: str,
        variant: str,
        started: float,
    ) -> BatchResult:
        """Queue checked inputs in the version's batcher; count and watch the outcome."""
        try:
            result = await served.batcher.submit(inputs, outputs, timeout, parameters)
        except TurnoutError as exc:
            self._outcomes.failed(served, exc, protocol, variant)
            raise
        self._outcomes.answered(served, inputs, result, protocol, variant, started)
        return result
