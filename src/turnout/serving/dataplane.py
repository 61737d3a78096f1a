"""The V2 operations, independent of any transport: health, metadata,
inference and the repository extension. REST and gRPC both call this."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from turnout import __version__
from turnout.errors import Code, ConfigError, InvalidRequest, NotFound, TurnoutError, Unavailable
from turnout.model.repository import parse_version
from turnout.observability import logs, tracing
from turnout.observability.drift import DriftReport
from turnout.observability.metrics import Metrics
from turnout.observability.notifier import AlertNotifier
from turnout.observability.payloads import PayloadLog
from turnout.observability.slo import SloWindow
from turnout.protocol.types import InferenceRequest, InferenceResponse, InferOutput
from turnout.routing.choose import alternatives
from turnout.routing.feedback import FeedbackStore
from turnout.routing.policy import PolicyError
from turnout.routing.shadow import ShadowJob, ShadowMirror
from turnout.routing.traffic import Route, TrafficControl
from turnout.routing.variants import target
from turnout.serving.registry import IndexEntry, ModelRegistry, ServedVersion, State, VersionsFailed
from turnout.serving.validation import validate

log = logging.getLogger("turnout.dataplane")

SERVER_NAME = "turnout"
# failures that count against a variant in a rollout's guard
_SERVER_SIDE = frozenset({Code.INTERNAL, Code.TIMEOUT, Code.UNAVAILABLE, Code.OVERLOADED})
_target = functools.lru_cache(maxsize=4096)(target)
MAX_AB_ID = 128
EXTENSIONS = ("binary_tensor_data", "model_repository", "parameters")


class DataPlane:
    def __init__(
        self,
        registry: ModelRegistry,
        metrics: Metrics,
        strict_readiness: bool = True,
        traffic: TrafficControl | None = None,
        mirror: ShadowMirror | None = None,
        feedback: FeedbackStore | None = None,
        load_timeout: float = 60.0,
        access_log: bool = False,
        notifier: AlertNotifier | None = None,
        payloads: PayloadLog | None = None,
    ) -> None:
        self._payloads = payloads  # sampled inputs and outputs to rotated JSON Lines
        self._notifier = notifier  # drift and SLO alerts to a webhook
        self._slo_windows: dict[str, SloWindow] = {}
        self._drift_reports: dict[tuple[str, str], tuple[float, DriftReport]] = {}  # the last window's, by version
        # one thread: windows are reported in the order they filled (alerts fire, then resolve)
        self._drift_worker = ThreadPoolExecutor(1, thread_name_prefix="turnout-drift")
        self._access_log = access_log  # one structured record per inference request (observability/logs.py)
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

    def resolve(self, name: str, version: str | None, protocol: str, follow_route: bool = True) -> ServedVersion:
        """The live version that will answer; transports call this before
        decoding a body, so an unknown model is a 404 whatever the body holds.
        An endpoint whose own model is not live may still route elsewhere."""
        try:
            return self._registry.get(name, version)
        except TurnoutError as exc:
            route = None if self._traffic is None else self._traffic.routes.get(name)
            if follow_route and route is not None and not version and isinstance(exc, Unavailable):
                return self._pick(name, route.policy.variants[0], route, protocol)[1]
            known = self._registry.known(name)
            # Unknown names are not used as labels: clients could grow the series without bound.
            self._metrics.request_outcome(name if known else "", "", "", protocol, exc.code.value).inc()
            raise

    def record_rejected(self, served: ServedVersion, protocol: str, error: TurnoutError) -> None:
        """Count (and log) a request the transport could not decode."""
        self._metrics.request_outcome(served.model, str(served.version), "", protocol, error.code.value).inc()
        if self._access_log:
            logs.access(None, served.model, str(served.version), "", protocol, error.code.value, None)

    async def served_version(self, name: str, version: str | None) -> ServedVersion:
        """What answers for ``name`` (and ``version``): its configuration and signature."""
        if self._registry.is_lazy(name):
            await self._cold_start(name)
        return self._registry.get(name, version)

    async def arrive(self, name: str, version: str | None, protocol: str) -> ServedVersion:
        """``resolve``, after loading a model that is out of memory (scale to
        zero): the request waits for the load, up to the load timeout."""
        if self._registry.is_lazy(name):
            await self._cold_start(name)
        elif (loading := self._registry.load_in_progress(name)) is not None:  # at start, say: wait, not 503
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(loading.wait(), self._load_timeout)
        return self.resolve(name, version, protocol)

    async def _warm(self, name: str) -> None:
        """A routed request's variant model out of memory: load it (a cold start)."""
        if self._registry.is_lazy(name):
            await self._cold_start(name)

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
    ) -> InferenceResponse:
        """Validate, queue and answer one request.

        ``deadline`` is the seconds the transport can still wait (a gRPC
        deadline); it shortens the model's queue timeout. ``key_of`` reads a
        header (or gRPC metadata) by name: an A/B test's assignment key.
        A request naming a version is served by it, whatever the routing.
        """
        started = time.monotonic()
        in_flight = self._metrics.in_flight(request.model_name if self._registry.known(request.model_name) else "",
                                            protocol)  # fmt: skip
        in_flight.inc()
        self._active += 1
        try:
            response = await self._infer(request, protocol, deadline, key_of, started)
        except Exception as exc:  # a refusal, or a bug the transport answers with a 500: logged either way
            if self._access_log:
                code = exc.code.value if isinstance(exc, TurnoutError) else "internal"
                logs.access(request.id, request.model_name, request.model_version or "", "", protocol,
                            code, time.monotonic() - started, tracing.current_trace_id())  # fmt: skip
            raise
        finally:
            in_flight.inc(-1)
            self._active -= 1
        if self._payloads is not None:
            self._payloads.offer(request, response)
        if self._access_log:
            variant = response.parameters.get("variant", "")
            logs.access(response.id, response.model_name, response.model_version, str(variant), protocol, "success",
                        time.monotonic() - started, tracing.current_trace_id())  # fmt: skip
        return response

    async def _infer(
        self,
        request: InferenceRequest,
        protocol: str,
        deadline: float | None,
        key_of: Callable[[str], str | None] | None,
        started: float,
    ) -> InferenceResponse:
        traffic = self._traffic
        route = None if request.model_version or traffic is None else traffic.routes.get(request.model_name)
        if route is None:
            served = await self.arrive(request.model_name, request.model_version, protocol)
            if not self._started and traffic is not None and not request.model_version:
                self._routing_pending(traffic, served)
            return await self._answer(served, request, protocol, deadline, "", started)
        return await self._routed(traffic, route, request, protocol, deadline, key_of, started)

    async def _routed(
        self,
        traffic: TrafficControl | None,
        route: Route,
        request: InferenceRequest,
        protocol: str,
        deadline: float | None,
        key_of: Callable[[str], str | None] | None,
        started: float,
    ) -> InferenceResponse:
        assert traffic is not None  # a route comes from it
        endpoint = request.model_name
        key_name = route.key_name
        key = None
        if key_name is not None:
            if request.id is not None and len(request.id) > MAX_AB_ID:  # the id is stored, for feedback
                raise InvalidRequest(f"an A/B-routed request's id must be at most {MAX_AB_ID} characters")
            key = (key_of(key_name) if key_of is not None else None) or _text(request.parameters.get(key_name))
        decision = traffic.decide(route, key)
        await self._warm(_target(endpoint, decision.serve).model)
        variant, served = self._pick(endpoint, decision.serve, route, protocol)
        try:
            response = await self._answer(served, request, protocol, deadline, variant, started)
        except TurnoutError as exc:
            if exc.code in _SERVER_SIDE:  # a client's bad request says nothing about the variant
                traffic.observe(endpoint, variant, False, time.monotonic() - started)
            raise
        seconds = time.monotonic() - started
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
            mirror.offer(self._shadow_job(endpoint, decision.mirror, request, response, seconds))
        return response

    def _routing_pending(self, traffic: TrafficControl, served: ServedVersion) -> None:
        """Before start, an endpoint whose routing is still to be taken up
        does not serve its default version by mistake (a rolled-back candidate, say)."""
        if served.routing is not None or traffic.has_saved(served.model):
            raise Unavailable(f"model '{served.model}' is restoring its routing; retry", retry_after=1.0)

    def _pick(self, endpoint: str, variant: str, route: Route, protocol: str) -> tuple[str, ServedVersion]:
        """The chosen variant's live version or, if it has none now (unloaded,
        failed to reload), the first of the policy's other variants that has one."""
        where = _target(endpoint, variant)
        try:
            return variant, self._registry.get(where.model, where.version)
        except (Unavailable, NotFound):
            for other in alternatives(route.policy, variant):
                instead = _target(endpoint, other)
                try:
                    return other, self._registry.get(instead.model, instead.version)
                except (Unavailable, NotFound):
                    continue
        return variant, self.resolve(where.model, where.version, protocol, follow_route=False)  # raises, counted

    def _shadow_job(
        self, endpoint: str, shadow: str, request: InferenceRequest, response: InferenceResponse, seconds: float
    ) -> ShadowJob:
        where = _target(endpoint, shadow)

        async def run() -> Mapping[str, np.ndarray[Any, Any]]:
            served = self._registry.get(where.model, where.version)
            checked = validate(request, served.signature, served.max_batch_size)
            inputs = served.prepare(checked.inputs)
            result = await served.batcher.submit(inputs, checked.outputs, served.timeout, request.parameters)
            return result.outputs

        primary = {output.name: output.data for output in response.outputs}
        return ShadowJob(endpoint, shadow, response.id or "", run, primary, seconds)

    @staticmethod
    def _slo_judged(served: ServedVersion) -> bool:
        slo = served.config.slo
        return slo.p99_ms is not None or slo.max_error_rate is not None

    def _judge_slo(self, served: ServedVersion, seconds: float | None) -> None:
        """Count a request into the model's SLO window; at its end, alert on a miss (or clear one)."""
        slo, model = served.config.slo, served.model
        window = self._slo_windows.get(model)
        if window is None or window.size != slo.window_requests:
            window = self._slo_windows[model] = SloWindow(slo.window_requests)
        verdict = window.add(seconds)
        if verdict is None:
            return
        if slo.p99_ms is not None and verdict.p99_seconds is not None:
            p99_ms = verdict.p99_seconds * 1000
            summary = f"{model}: p99 latency {p99_ms:.1f} ms over the {slo.p99_ms:g} ms SLO"
            self._slo_alert("TurnoutLatencyOverSLO", model, p99_ms > slo.p99_ms, summary)
        if slo.max_error_rate is not None:
            summary = f"{model}: {verdict.error_rate:.1%} of requests fail (SLO {slo.max_error_rate:.1%})"
            self._slo_alert("TurnoutHighErrorRate", model, verdict.error_rate > slo.max_error_rate, summary)

    def _slo_alert(self, alertname: str, model: str, missed: bool, summary: str) -> None:
        if missed:
            log.warning("%s", summary)
        if self._notifier is not None:
            self._notifier.observe(missed, {"alertname": alertname, "model": model}, {"summary": summary})

    def _watch_drift(
        self,
        served: ServedVersion,
        model: str,
        version: str,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        outputs: Mapping[str, np.ndarray[Any, Any]],
    ) -> None:
        """Count the request into the version's drift window; at a window's end, the gauges."""
        window = served.drift
        assert window is not None
        profile = window.profile
        features, predictions = inputs.get(profile.input_name), outputs.get(profile.output_name)
        if features is None or predictions is None:  # the request did not ask for the profiled output
            return
        rows = window.add(features, predictions)
        if rows is None:
            return
        # binning a window's thousand rows takes milliseconds: off the event loop, the gauges after
        done = asyncio.get_running_loop().run_in_executor(self._drift_worker, window.profile.report, rows)
        done.add_done_callback(lambda future: self._drift_reported(served, model, version, future))

    def _drift_reported(
        self, served: ServedVersion, model: str, version: str, future: asyncio.Future[DriftReport]
    ) -> None:
        if future.cancelled() or future.exception() is not None:
            log.error("model %s version %s: drift not computed: %r", model, version, future.exception())
            return
        report = future.result()
        self._drift_reports[(model, version)] = (time.time(), report)
        _drift_gauges(self._metrics, model, version, report)
        limit, warn = served.config.drift.alert_psi, served.config.drift.warn_psi
        drifting = sorted(name for name, stats in report.features.items() if stats["psi"] > limit)
        moving = sorted(name for name, stats in report.features.items() if warn < stats["psi"] <= limit)
        if moving:
            log.info("model %s version %s: %s moving (PSI over %g)", model, version, ", ".join(moving), warn)
        if drifting:
            log.warning("model %s version %s: drift in %s (PSI over %g over %d rows)", model, version,
                        ", ".join(drifting), limit, report.rows)  # fmt: skip
        if self._notifier is not None:
            for feature, stats in report.features.items():
                labels = {"alertname": "TurnoutFeatureDrift", "model": model, "version": version, "feature": feature}
                summary = f"{model} v{version}: feature {feature} drifted (PSI {stats['psi']:.3g} over {limit:g})"
                self._notifier.observe(stats["psi"] > limit, labels, {"summary": summary})

    async def _answer(
        self,
        served: ServedVersion,
        request: InferenceRequest,
        protocol: str,
        deadline: float | None,
        variant: str,
        started: float,
    ) -> InferenceResponse:
        model, version = request.model_name, str(served.version)
        trace = tracing.CURRENT.get()
        try:
            checked = validate(request, served.signature, served.max_batch_size)
            inputs = served.prepare(checked.inputs)
            if trace is not None:
                trace.validated = tracing.RequestTrace.now()
            result = await served.batcher.submit(
                inputs, checked.outputs, _timeout(served.timeout, request.parameters, deadline), request.parameters
            )
        except TurnoutError as exc:
            self._metrics.request_outcome(model, version, variant, protocol, exc.code.value).inc()
            if exc.code in _SERVER_SIDE and self._slo_judged(served):
                self._judge_slo(served, None)
            raise
        # drift and SLOs belong to the model that answered (for a routed request, the variant's)
        if self._slo_judged(served):
            self._judge_slo(served, time.monotonic() - started)
        if served.drift is not None:
            self._watch_drift(served, served.model, version, inputs, result.outputs)
        if trace is not None:
            trace.answered = tracing.RequestTrace.now()
            trace.queue_seconds, trace.compute_seconds = result.queue_seconds, result.compute_seconds
            trace.model, trace.version, trace.variant = model, version, variant
        signature = served.signature
        outputs = []
        for name in checked.outputs:
            array = result.outputs[name]
            spec = signature.output(name)
            assert spec is not None  # validate() checked the name
            outputs.append(InferOutput(name, spec.datatype, array.shape, array))
        self._metrics.request_outcome(model, version, variant, protocol, "success").inc()
        self._metrics.latency(model, version, variant, protocol).observe(time.monotonic() - started)
        self._metrics.queue_time(model, version, variant).observe(result.queue_seconds)
        self._metrics.compute_time(model, version, variant).observe(result.compute_seconds)
        return InferenceResponse(model, version, outputs, id=request.id)

    def repository_index(self, ready_only: bool = False) -> list[IndexEntry]:
        entries = self._registry.index()
        return [e for e in entries if e.state == State.READY] if ready_only else entries

    async def load_model(self, name: str, parameters: object = None) -> None:
        """(Re)load from disk. Triton's load may carry a config override or model
        files; those are refused rather than reported done without being done."""
        if parameters:
            keys = sorted(parameters) if isinstance(parameters, dict) else parameters
            raise InvalidRequest(
                f"load parameters {keys!r} are not supported; change model.toml and the "
                "version directories on disk, then load"
            )
        failed = None
        try:
            await self._registry.load(name)
        except ConfigError as exc:
            raise InvalidRequest(f"model '{name}' cannot be loaded: {exc}") from None
        except VersionsFailed as exc:  # as Triton answers a failed load; the versions that loaded serve
            failed = InvalidRequest(str(exc))
        self.take_up_routing(name)
        if failed is not None:
            raise failed

    def take_up_all_routing(self) -> None:
        """At start, once every model has loaded (a policy may name another model)."""
        for name in sorted({entry.name for entry in self._registry.index()}):
            try:
                self.take_up_routing(name)
            except TurnoutError as exc:  # refused or not saved: logged, and the server starts regardless
                log.error("%s", exc.message)

    def take_up_routing(self, name: str) -> None:
        """Apply the [routing] of ``name``'s model.toml once its versions are
        live; a policy that cannot apply leaves the one in force, and says why."""
        if self._traffic is None:
            return
        self._traffic.model_changed(name)  # other endpoints may route to this model
        try:
            served = self._registry.get(name)
        except TurnoutError:
            return  # nothing live: nothing to route to yet
        try:
            self._traffic.configured(name, served.routing)
        except PolicyError as exc:
            raise InvalidRequest(
                f"model '{name}' loaded, but its [routing] was refused (the policy in force stays): {exc}"
            ) from None

    async def pin_model(self, name: str, version: str) -> None:
        number = parse_version(version)
        if number is None:
            raise InvalidRequest(f"'{version[:40]}' is not a version number")
        with _lifecycle_errors(f"version {number} cannot be pinned, the default stays"):
            await self._registry.pin(name, number)

    async def unpin_model(self, name: str) -> None:
        with _lifecycle_errors("unpinned, but the reload that followed failed"):
            await self._registry.unpin(name)

    async def rollback_model(self, name: str) -> int:
        with _lifecycle_errors("cannot roll back, the default stays"):
            version = await self._registry.rollback(name)
        return version

    def version_status(self, name: str) -> dict[str, Any]:
        """The model's default version, its pin, its earlier defaults and each version's state."""
        if not self._registry.known(name):
            raise NotFound(f"unknown model '{name[:200]}'")
        default, pinned = self._registry.default_version(name), self._registry.pinned(name)
        return {
            "name": name,
            "default": None if default is None else str(default),
            "pinned": None if pinned is None else str(pinned),
            "history": [str(v) for v in self._registry.history(name)],
            "versions": [
                {"version": e.version, "state": e.state.value, "reason": e.reason}
                for e in self._registry.index()
                if e.name == name
            ],
        }

    def drift_status(self, name: str) -> dict[str, Any]:
        """Each version's last drift window (for the admin API)."""
        if not self._registry.known(name):
            raise NotFound(f"unknown model '{name[:200]}'")
        versions = []
        for (model, version), (at, report) in sorted(self._drift_reports.items()):
            if model != name:
                continue
            versions.append(
                {
                    "version": version,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
                    "rows": report.rows,
                    "features": report.features,
                    "prediction": report.prediction,
                }
            )
        return {"name": name, "versions": versions}

    def drift_view(self, name: str) -> list[dict[str, Any]]:
        """Each version's last window against its profile, share by share (for the dashboard)."""
        views = []
        for (model, version), (_, report) in sorted(self._drift_reports.items()):
            if model != name:
                continue
            try:
                served = self._registry.get(model, version)
            except TurnoutError:
                continue  # no longer served
            if served.drift is None:
                continue
            profile = served.drift.profile
            features = {
                feature: {**report.features[feature], "reference": list(d.shares), "live": report.live_shares[feature]}
                for feature, d in zip(profile.features, profile.inputs, strict=True)
                if feature in report.live_shares
            }
            views.append(
                {
                    "version": version,
                    "rows": report.rows,
                    "features": features,
                    "alert_psi": served.config.drift.alert_psi,
                }
            )
        return views

    async def unload_model(self, name: str) -> None:
        await self._registry.unload(name)
        if self._traffic is not None:
            self._traffic.model_changed(name)


def _timeout(configured: float | None, parameters: dict[str, Any], deadline: float | None) -> float | None:
    """The queue timeout: the model's, shortened by the transport's deadline and
    by a request's ``timeout`` parameter (microseconds, as Triton's clients send it)."""
    limits = [t for t in (configured, deadline) if t is not None]
    requested = parameters.get("timeout")
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested <= 0:
            raise InvalidRequest("parameter 'timeout' must be a positive integer (microseconds)")
        limits.append(requested / 1_000_000)
    return min(limits, default=None)


def _drift_gauges(metrics: Metrics, model: str, version: str, report: DriftReport) -> None:
    for feature, statistics in report.features.items():
        for statistic, value in statistics.items():
            metrics.feature_drift(model, version, feature, statistic).set(value)
    for statistic, value in report.prediction.items():
        metrics.prediction_drift(model, version, statistic).set(value)


def _text(value: Any) -> str | None:
    """A request parameter used as an A/B key: a string or a whole number."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


@contextlib.contextmanager
def _lifecycle_errors(what: str) -> Iterator[None]:
    """A pin, unpin or rollback's failures as client-facing errors (never a 500)."""
    try:
        yield
    except VersionsFailed as exc:
        raise InvalidRequest(f"{what}: {exc}") from None
    except ConfigError as exc:
        raise InvalidRequest(f"{what}: the model cannot be read: {exc}") from None
    except OSError as exc:
        raise Unavailable(f"{what}: the pin could not be saved: {exc}") from None
