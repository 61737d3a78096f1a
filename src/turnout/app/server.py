"""The server: builds the objects from the settings, binds the ports, starts
the listeners and everything behind them, and handles SIGTERM/SIGINT.

Shutdown order: stop accepting (HTTP listener closed, gRPC refuses new calls),
let in-flight requests finish within the grace period, drain the batchers,
exit 0 (``Server.serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from turnout.app.listeners import Listener, Listeners, Parts, Shared
from turnout.app.startup import StartupError, bind_tcp, build_guard, raise_open_file_limit
from turnout.errors import ConfigError
from turnout.model.config import ModelConfig
from turnout.model.fingerprint import scan
from turnout.model.mlflow_source import AliasReference, AliasWatcher, MlflowPuller, MlflowUnavailable
from turnout.model.repository import ModelRepository
from turnout.model.runtimes.catalog import BUILT_IN, RuntimeCatalog
from turnout.model.watcher import RepositoryWatcher
from turnout.observability.metrics import Metrics, RemoteSetObserver
from turnout.observability.notifier import AlertNotifier
from turnout.observability.payloads import PayloadLog
from turnout.observability.tracing import make_tracer
from turnout.overload.admission import Admission
from turnout.overload.budget import BodyBudget
from turnout.overload.connections import Connections
from turnout.overload.pressure import Pressure
from turnout.pipeline.runtime import PipelineRuntime
from turnout.protocol.types import InferenceRequest, InferenceResponse
from turnout.routing.feedback import Feedback, FeedbackStore
from turnout.routing.metrics import register_routing_metrics
from turnout.routing.redis_feedback import RedisFeedbackStore
from turnout.routing.redis_state import Keys, RedisRoutingStore
from turnout.routing.remote.runtime import RemoteRuntime
from turnout.routing.shadow import ShadowMirror
from turnout.routing.shadow_metrics import register_shadow_metrics
from turnout.routing.shared_routing import SharedRouting
from turnout.routing.state_store import RoutingStore, StateStore, StoreFailed
from turnout.routing.traffic import TrafficControl
from turnout.serving.admin import ModelAdmin
from turnout.serving.dataplane import DataPlane
from turnout.serving.defaults import DefaultVersions
from turnout.serving.observers import DriftWatch, SloJudge
from turnout.serving.pins import PinStore
from turnout.serving.registry import ModelRegistry
from turnout.serving.residency import Budget
from turnout.serving.served import VersionsFailed
from turnout.serving.shared_cache import SharedCache
from turnout.serving.shared_pins import PinFollower, RedisPins
from turnout.serving.step_calls import DataPlaneCalls
from turnout.settings import Settings
from turnout.transports.rest.lifecycle import LifecycleRoutes
from turnout.transports.rest.routing import RoutingRoutes

if TYPE_CHECKING:  # redis is imported only by servers that consume streams
    from turnout.streams.service import StreamService

log = logging.getLogger("turnout.server")


class Server:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        lifecycle = settings.lifecycle
        # pipelines call the other models through the data plane, bound to it in _start
        self._step_calls = DataPlaneCalls(self.metrics, lifecycle.load_timeout_seconds)
        step_calls = self._step_calls
        metrics = self.metrics
        runtimes = RuntimeCatalog(
            {
                **BUILT_IN,
                "pipeline": lambda: PipelineRuntime(step_calls),
                "remote": lambda: RemoteRuntime(lambda model, version: RemoteSetObserver(metrics, model, version)),
            },
            allow_trusted_models=settings.security.allow_trusted_models,
        )
        repository = ModelRepository(settings.repository, runtimes)
        state_url = settings.routing.state_url
        self.pin_follower: PinFollower | None = None
        keys = Keys("turnout")  # the names RedisRoutingStore uses too
        try:
            self._shared_pins = shared_pins = None if state_url is None else RedisPins(state_url, keys)
            pins = PinStore(settings.state_dir / "pins.json", None if shared_pins is None else shared_pins.announce)
        except StoreFailed as exc:
            raise StartupError(f"cannot share pinned versions through Redis (--state): {exc}") from None
        except (OSError, ValueError) as exc:
            raise StartupError(f"cannot read the pinned versions in {settings.state_dir}: {exc}") from None
        if state_url is not None:  # pins made on other replicas are taken up here (shared_pins.py)
            self.pin_follower = PinFollower(state_url, keys, lambda *pin: self.defaults.follow(*pin), pins.all_pins)
        budget = Budget(lifecycle.max_models, lifecycle.memory_budget_bytes, lifecycle.idle_unload_seconds)
        try:
            self._shared_cache = None if settings.cache_url is None else SharedCache(settings.cache_url)
        except ValueError as exc:  # not a Redis URL
            raise StartupError(f"--cache-redis: {exc}") from None
        self.registry = ModelRegistry(
            repository,
            self.metrics,
            settings.shutdown_grace_seconds,
            settings.security.allow_trusted_models,
            pins,
            budget,
            shared_cache=self._shared_cache,
        )
        self._repository = repository
        poll = settings.lifecycle.poll_seconds
        self.watcher = (
            None
            if poll is None
            else RepositoryWatcher(
                functools.partial(scan, settings.repository), self.dataplane_load, self.dataplane_unload, poll
            )
        )
        self.guard = build_guard(settings.security)
        self.notifier = None if settings.alert_webhook is None else AlertNotifier(settings.alert_webhook)
        try:
            self.payloads = (
                None if settings.payload_log is None else PayloadLog(settings.payload_log, settings.payload_sample)
            )
        except OSError as exc:
            raise StartupError(f"cannot write payloads to {settings.payload_log}: {exc}") from None
        try:
            self.tracer = make_tracer(settings.tracing)
        except RuntimeError as exc:
            raise StartupError(str(exc)) from None
        routing = settings.routing
        state = settings.state_dir
        self.mirror = ShadowMirror(
            routing.shadow_queue,
            routing.shadow_workers,
            sample_every=routing.shadow_log_every,
            log_path=state / "shadow-disagreements.jsonl",
            busy=Pressure().busy,  # shadow copies use what the service leaves spare
        )
        self.shared: SharedRouting | None = None
        try:
            store: StateStore
            if routing.state_url is None:
                store = RoutingStore(state / "routing.db")
            else:  # shared by replicas: followed, and rollouts moved on by one of them (shared_routing.py)
                store = RedisRoutingStore(routing.state_url)
                self.shared = SharedRouting(
                    routing.state_url,
                    store.keys,
                    adopt=lambda *change: self.traffic.adopt(*change),
                    saw=store.saw,
                    saves=lambda: store.saves,
                    windows=lambda: self.traffic.shared_windows(),
                    routed=lambda: list(self.traffic.routes),
                )
            self.traffic = TrafficControl(
                self.registry,
                store,
                tick_seconds=routing.rollout_tick_seconds,
                mirrored=self.mirror.agreement,
                stop_mirroring=self.mirror.stop,
                leads=self.shared.leads if self.shared is not None else lambda: True,
                elsewhere=self.shared.elsewhere if self.shared is not None else lambda endpoint, step: [],
            )
            self.feedback: Feedback = (
                FeedbackStore(state / "feedback.db")
                if routing.state_url is None
                else RedisFeedbackStore(routing.state_url)  # feedback reaches any replica: every one finds it
            )
        except StoreFailed as exc:
            raise StartupError(f"cannot keep routing state in Redis (--state): {exc}") from None
        except (OSError, sqlite3.Error) as exc:
            raise StartupError(
                f"cannot keep routing state in {state}: {exc} (choose another place with --state-dir)"
            ) from None
        register_shadow_metrics(self.metrics.registry, self.mirror)
        register_routing_metrics(self.metrics.registry, self.traffic)
        drift = DriftWatch(self.metrics, self.notifier)
        self.dataplane = DataPlane(
            registry=self.registry,
            metrics=self.metrics,
            strict_readiness=settings.strict_readiness,
            traffic=self.traffic,
            mirror=self.mirror,
            feedback=self.feedback,
            load_timeout=lifecycle.load_timeout_seconds,
            access_log=settings.access_log,
            payloads=self.payloads,
            observers=(SloJudge(self.notifier), drift),
        )
        self.defaults = DefaultVersions(self.registry)
        self.admin = ModelAdmin(registry=self.registry, defaults=self.defaults, drift=drift, traffic=self.traffic)
        self._routing_routes = RoutingRoutes(
            self.traffic, self.mirror, self.feedback, self.guard, settings.http.max_body_bytes
        )
        self._lifecycle_routes = LifecycleRoutes(self.admin, self.guard, settings.http.max_body_bytes)
        self._stop = asyncio.Event()
        self.streams = None if settings.stream.url is None else self._stream_service()

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        """Start everything, serve until SIGTERM or SIGINT, then stop it all.

        Each part's stop is pushed onto an exit stack as soon as it has
        started, so whatever started is stopped, in reverse order, whether
        serving ends normally or a later start fails. On the way out the
        listeners and streams drain first (together, within the grace), then
        what started after them, then the admission gate, the sockets, and
        what ``__init__`` built (feedback, models, logs, the tracer).
        """
        async with contextlib.AsyncExitStack() as stack:
            await self._start(stack)
            await self._stop.wait()
            grace = self.settings.shutdown_grace_seconds
            log.info("shutting down: finishing requests in flight (up to %ss)", grace)
            self.dataplane.mark_stopping()
            self.registry.flush()  # accepted requests need not wait out batching delays now
        log.info("stopped")

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        settings, loop = self.settings, asyncio.get_running_loop()
        grace = settings.shutdown_grace_seconds
        stack.push_async_callback(self._close_parts)  # built in __init__: closed last
        descriptors = raise_open_file_limit()
        # Below the open-file limit, with room for models, logs and the admin port:
        # the connection limit, not EMFILE, is what a flood of connections meets.
        edge = settings.edge
        shared = Shared(
            Connections(max(1, min(edge.max_connections, descriptors - 256))),
            BodyBudget(edge.max_buffered_body_bytes),
            Admission(edge.admission, loop),
        )
        listeners = Listeners(settings, self._parts(), shared)
        sockets: list[tuple[socket.socket, Listener]] = [
            (bind_tcp(settings.grpc.host, settings.grpc.port, "gRPC"), listeners.public_grpc()),
            (bind_tcp(settings.http.host, settings.http.port, "HTTP"), listeners.public_http()),
        ]
        for sock, _ in sockets:
            stack.callback(sock.close)  # a listener that started owns its socket; closing twice is harmless
        admin = settings.admin
        if admin.port is not None:
            sock = bind_tcp(admin.host, admin.port, "the admin plane")
            stack.callback(sock.close)
            sockets.append((sock, listeners.admin_plane()))
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
            stack.callback(loop.remove_signal_handler, signum)
        shared.admission.start()
        stack.callback(shared.admission.close)
        # What starts after the listeners stops after their drain: entered before it, so unwound after it.
        later = await stack.enter_async_context(contextlib.AsyncExitStack())
        draining: list[Callable[[float], Awaitable[None]]] = []  # stopped together, within the grace
        stack.push_async_callback(_drain_all, draining, grace)
        for sock, server in sockets:
            await server.start(sock)
            draining.append(server.shutdown)
        scheme = "https" if settings.security.tls else "http"
        log.info("serving %s: REST on %s://%s:%d (metrics at /metrics), gRPC on %s:%d%s", settings.repository,
                 scheme, settings.http.host, settings.http.port, settings.grpc.host, settings.grpc.port,
                 " (TLS)" if settings.security.tls else "")  # fmt: skip
        listeners.log_security()
        self._step_calls.bind(self.dataplane, loop)
        await self.registry.load_all(lazy=settings.lifecycle.lazy)
        aliases = await self._follow_mlflow()
        if aliases is not None:
            later.push_async_callback(aliases.close)
        self.admin.take_up_all_routing()
        self.traffic.start()
        later.push_async_callback(self.traffic.close)
        if self.shared is not None:
            self.shared.start()
            later.push_async_callback(self.shared.close)
        if self.pin_follower is not None:
            self.pin_follower.start()
            later.push_async_callback(self.pin_follower.close)
        self.mirror.start()
        later.push_async_callback(self.mirror.close, min(grace, 5.0))  # shadow copies are best effort
        if self.watcher is not None:
            await self.watcher.start()
            later.push_async_callback(self.watcher.close)
        later.callback(loop.create_task(self._flush_feedback()).cancel)
        idle = settings.lifecycle.idle_unload_seconds
        if idle is not None:
            later.callback(loop.create_task(self._unload_idle(idle)).cancel)
        if self.streams is not None:
            await self.streams.start(self.tracer)
            draining.append(self.streams.stop)  # reading stops at once; entries in hand are answered
        self.dataplane.mark_started()
        log.info("models loaded; ready=%s", self.dataplane.ready())

    def _parts(self) -> Parts:
        return Parts(self.dataplane, self.admin, self.metrics, self.guard, self.traffic, self._routing_routes,
                     self._lifecycle_routes, self.tracer)  # fmt: skip

    async def _close_parts(self) -> None:
        """What __init__ built, once nothing uses it: state flushed, models unloaded, logs closed."""
        await asyncio.to_thread(self.feedback.close)
        await self.registry.close()
        if self._shared_cache is not None:
            await self._shared_cache.close()
        if self._shared_pins is not None:
            self._shared_pins.close()
        if self.notifier is not None:
            await self.notifier.close()
        if self.payloads is not None:
            self.payloads.close()
        self.guard.close()
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.shutdown)  # the last spans are exported

    async def _follow_mlflow(self) -> AliasWatcher | None:
        """With --registry mlflow: pull and deploy each alias's version now, then follow the aliases."""
        lifecycle = self.settings.lifecycle
        if not lifecycle.mlflow_models:
            return None
        try:
            references = [AliasReference.parse(text) for text in lifecycle.mlflow_models]
            puller = await asyncio.to_thread(MlflowPuller, lifecycle.mlflow_uri, self.settings.repository)
        except MlflowUnavailable as exc:
            raise StartupError(str(exc)) from None
        aliases = AliasWatcher(
            puller,
            references,
            self._deploy_pulled,
            lifecycle.poll_seconds or 2.0,
            self.settings.state_dir / "mlflow-aliases.json",
            self._versions_to_keep,
        )
        await aliases.sync()
        aliases.start()
        return aliases

    def _versions_to_keep(self, name: str) -> set[int]:
        """Pulled versions that must stay on disk: the default, a pin, and earlier defaults (for rollback)."""
        keep = set(self.defaults.history(name))
        for version in (self.defaults.pinned(name), self.registry.default_version(name)):
            if version is not None:
                keep.add(version)
        return keep

    async def _deploy_pulled(self, name: str, version: int) -> None:
        """A version pulled from MLflow: loaded, verified, warmed up, then the default."""
        if not self.registry.known(name):
            with contextlib.suppress(VersionsFailed):  # an older pulled version may be broken; this one counts
                await self.registry.load(name)
        await self.defaults.pin(name, version)
        self.admin.take_up_routing(name)

    async def dataplane_load(self, name: str) -> None:
        await self.admin.load_model(name)

    async def dataplane_unload(self, name: str) -> None:
        await self.admin.unload_model(name)

    async def _unload_idle(self, idle_seconds: float) -> None:
        """Scale to zero: models unused for ``idle_seconds`` leave memory."""
        while True:
            await asyncio.sleep(min(max(idle_seconds / 4, 0.05), 5.0))
            try:
                await self.registry.evict_idle()
            except Exception:  # the next round tries again; serving goes on
                log.exception("unloading idle models failed")

    async def _flush_feedback(self) -> None:
        """A/B assignments reach SQLite in batches, off the event loop."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await asyncio.to_thread(self.feedback.flush)
            except (sqlite3.Error, StoreFailed) as exc:  # kept in memory (up to a bound); the next flush tries again
                log.error("cannot record A/B assignments (%d lost so far): %s", self.feedback.lost, exc)

    def _stream_service(self) -> StreamService:
        from turnout.streams.service import StreamService

        def answer(request: InferenceRequest) -> Awaitable[InferenceResponse]:
            return self.dataplane.infer(request, "stream")

        try:
            settings = self.settings
            return StreamService(
                settings.stream,
                answer,
                self._stream_models,
                self.metrics,
                settings.limits,
                settings.http.max_body_bytes,
            )
        except ValueError as exc:  # not a redis:// URL
            raise StartupError(f"--stream {self.settings.stream.url}: {exc}") from None

    def _stream_models(self) -> dict[str, ModelConfig]:
        """The models the server knows, with their configuration (for ``[stream]``)."""
        found = {}
        for name in dict.fromkeys(entry.name for entry in self.registry.index()):
            with contextlib.suppress(ConfigError):
                found[name] = self._repository.read(name).config
        return found


async def _drain_all(stops: list[Callable[[float], Awaitable[None]]], grace: float) -> None:
    """Stop the listeners and the streams together: each finishes what it accepted, within ``grace``."""
    await asyncio.gather(*(stop(grace) for stop in stops))
