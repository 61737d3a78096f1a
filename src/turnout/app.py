"""The composition root: builds the objects, binds the ports, starts and stops
the transports, and handles SIGTERM/SIGINT.

Shutdown order: stop accepting (HTTP listener closed, gRPC refuses new calls),
let in-flight requests finish within the grace period, drain the batchers,
exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import resource
import signal
import socket
import sqlite3
import ssl
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from turnout.errors import ConfigError
from turnout.model.config import ModelConfig
from turnout.model.fingerprint import scan
from turnout.model.mlflow_source import AliasReference, AliasWatcher, MlflowPuller, MlflowUnavailable
from turnout.model.repository import ModelRepository
from turnout.model.runtimes.catalog import RuntimeCatalog
from turnout.model.watcher import RepositoryWatcher
from turnout.observability.metrics import Metrics
from turnout.observability.notifier import AlertNotifier
from turnout.observability.payloads import PayloadLog
from turnout.observability.tracing import make_tracer
from turnout.overload.admission import Admission
from turnout.overload.budget import BodyBudget
from turnout.overload.connections import Connections
from turnout.overload.gate import Gate
from turnout.overload.pressure import Pressure
from turnout.protocol.types import InferenceRequest, InferenceResponse
from turnout.routing.feedback import FeedbackStore
from turnout.routing.metrics import register_routing_metrics
from turnout.routing.shadow import ShadowMirror
from turnout.routing.shadow_metrics import register_shadow_metrics
from turnout.routing.state_store import RoutingStore
from turnout.routing.traffic import TrafficControl
from turnout.security.audit import AuditLog, NoAudit
from turnout.security.guard import Guard
from turnout.security.jwt_auth import JwtVerifier
from turnout.security.keys import KeyStore, open_backend
from turnout.security.ratelimit import RateLimiter
from turnout.security.tls import server_context
from turnout.serving.admin import ModelAdmin
from turnout.serving.dataplane import DataPlane
from turnout.serving.defaults import DefaultVersions
from turnout.serving.observers import DriftWatch, SloJudge
from turnout.serving.pins import PinStore
from turnout.serving.registry import ModelRegistry
from turnout.serving.residency import Budget
from turnout.serving.served import VersionsFailed
from turnout.settings import SecuritySettings, Settings
from turnout.transports.addresses import LISTEN_BACKLOG
from turnout.transports.dual import DualServer
from turnout.transports.grpc import wire
from turnout.transports.grpc.service import InferenceService
from turnout.transports.grpc.wire import Status
from turnout.transports.http import HttpServer
from turnout.transports.http2.server import Http2Server, Reply
from turnout.transports.planes import Plane
from turnout.transports.rest.app import RestApi
from turnout.transports.rest.lifecycle import LifecycleRoutes
from turnout.transports.rest.routing import RoutingRoutes
from turnout.transports.rest.ui import UiRoutes

if TYPE_CHECKING:  # redis is imported only by servers that consume streams
    from turnout.streams.service import StreamService

log = logging.getLogger("turnout.server")


class StartupError(Exception):
    """The server cannot start (port in use, no repository); the message says why."""


class Server:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        runtimes = RuntimeCatalog(allow_trusted_models=settings.security.allow_trusted_models)
        repository = ModelRepository(settings.repository, runtimes)
        try:
            pins = PinStore(settings.state_dir / "pins.json")
        except (OSError, ValueError) as exc:
            raise StartupError(f"cannot read the pinned versions in {settings.state_dir}: {exc}") from None
        lifecycle = settings.lifecycle
        budget = Budget(lifecycle.max_models, lifecycle.memory_budget_bytes, lifecycle.idle_unload_seconds)
        self.registry = ModelRegistry(
            repository,
            self.metrics,
            settings.shutdown_grace_seconds,
            settings.security.allow_trusted_models,
            pins,
            budget,
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
        try:
            self.traffic = TrafficControl(
                self.registry,
                RoutingStore(state / "routing.db"),
                tick_seconds=routing.rollout_tick_seconds,
                mirrored=self.mirror.agreement,
                stop_mirroring=self.mirror.stop,
            )
            self.feedback = FeedbackStore(state / "feedback.db")
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
        self._tls = settings.security.tls
        self._stop = asyncio.Event()
        self.streams = None if settings.stream.url is None else self._stream_service()

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        settings = self.settings
        edge = settings.edge
        descriptors = raise_open_file_limit()
        # Below the open-file limit, with room for models, logs and the admin port:
        # the connection limit, not EMFILE, is what a flood of connections meets.
        max_connections = max(1, min(edge.max_connections, descriptors - 256))
        self._public_connections = Connections(max_connections)
        self._budget = BodyBudget(edge.max_buffered_body_bytes)
        loop = asyncio.get_running_loop()
        self._admission = Admission(edge.admission, loop)
        http_socket = bind_tcp(settings.http.host, settings.http.port, "HTTP")
        grpc_socket = bind_tcp(settings.grpc.host, settings.grpc.port, "gRPC")
        admin = settings.admin
        admin_socket = None if admin.port is None else bind_tcp(admin.host, admin.port, "the admin plane")
        grpc_server = self._grpc_server()
        http_server = self._http_server()
        admin_server = None if admin_socket is None else self._admin_server()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        try:
            self._admission.start()
            await grpc_server.start(grpc_socket)
            await http_server.start(http_socket)
            if admin_server is not None:
                await admin_server.start(admin_socket)
            scheme = "https" if self._tls else "http"
            log.info(
                "serving %s: REST on %s://%s:%d (metrics at /metrics), gRPC on %s:%d%s",
                settings.repository,
                scheme,
                settings.http.host,
                settings.http.port,
                settings.grpc.host,
                settings.grpc.port,
                " (TLS)" if self._tls else "",
            )
            self._log_security()
            await self.registry.load_all(lazy=self.settings.lifecycle.lazy)
            aliases = await self._follow_mlflow()
            self.admin.take_up_all_routing()
            self.traffic.start()
            self.mirror.start()
            if self.watcher is not None:
                await self.watcher.start()
            flusher = loop.create_task(self._flush_feedback())
            idle = self.settings.lifecycle.idle_unload_seconds
            reaper = None if idle is None else loop.create_task(self._unload_idle(idle))
            if self.streams is not None:
                await self.streams.start(self.tracer)
            self.dataplane.mark_started()
            log.info("models loaded; ready=%s", self.dataplane.ready())
            await self._stop.wait()
            log.info("shutting down: finishing requests in flight (up to %ss)", self.settings.shutdown_grace_seconds)
            self.dataplane.mark_stopping()
            self.registry.flush()  # accepted requests need not wait out batching delays now
            grace = self.settings.shutdown_grace_seconds
            await asyncio.gather(
                # stream reading stops at once; entries in hand are answered and acknowledged
                *([] if self.streams is None else [self.streams.stop(grace)]),
                http_server.shutdown(grace),
                grpc_server.shutdown(grace),
                *([] if admin_server is None else [admin_server.shutdown(grace)]),
            )
            self._admission.close()
            if self.watcher is not None:
                await self.watcher.close()
            if aliases is not None:
                await aliases.close()
            await self.mirror.close(min(grace, 5.0))  # shadow copies are best effort
            flusher.cancel()
            if reaper is not None:
                reaper.cancel()
            await self.traffic.close()
            await asyncio.to_thread(self.feedback.close)
            await self.registry.close()
            if self.notifier is not None:
                await self.notifier.close()
            if self.payloads is not None:
                self.payloads.close()
            self.guard.close()
            if self.tracer is not None:
                await asyncio.to_thread(self.tracer.shutdown)  # the last spans are exported
            log.info("stopped")
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

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
            except sqlite3.Error as exc:  # kept in memory (up to a bound); the next flush tries again
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

    def _log_security(self) -> None:
        settings, guard = self.settings, self.guard
        admin = settings.admin
        if admin.port is not None:
            log.info("admin plane (repository load/unload) on %s, admin role required", self._admin_address())
        if admin.on_public_port:
            log.warning("the admin routes are also served on the public ports (admin role required)")
        if not guard.inference_auth:
            log.warning(
                "inference authentication is OFF: anyone who reaches the public ports may run models and "
                "read metadata and metrics. For a local demo only; see the README's Security section"
            )
        if not guard.can_authenticate:
            log.warning("no API key store or JWT key is configured: every admin request will be refused (401)")
        if self._tls is None and settings.http.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "serving without TLS on %s: credentials and data cross the network in clear", settings.http.host
            )

    def _admin_address(self) -> str:
        admin = self.settings.admin
        return f"{'https' if self._tls else 'http'}://{admin.host}:{admin.port}"

    def _admin_elsewhere(self) -> str:
        return self._admin_address() if self.settings.admin.port is not None else "not enabled on this server"

    def _http_server(self) -> HttpServer:
        limit = self.settings.http.max_body_bytes
        plane = Plane.BOTH if self.settings.admin.on_public_port else Plane.INFERENCE
        routes = self._routing_routes.inference() + UiRoutes(self.admin, self.traffic, self.metrics).routes()
        if plane.serves_admin:
            routes += self._routing_routes.admin() + self._lifecycle_routes.admin()
        api = RestApi(
            self.dataplane,
            self.admin,
            self.metrics,
            limit,
            self.guard,
            plane,
            self._admin_elsewhere(),
            self.settings.limits,
            routes,
            self.tracer,
        )
        return HttpServer(
            api.handle,
            limit,
            self._tls_context("http/1.1"),
            limits=self.settings.edge.http,
            screen=api.screen,
            gate=self._gate(),
            budget=self._budget,
            connections=self._public_connections,
        )

    def _grpc_server(self) -> Http2Server:
        size = self.settings.grpc.max_message_bytes
        plane = Plane.BOTH if self.settings.admin.on_public_port else Plane.INFERENCE
        service = InferenceService(
            self.dataplane,
            self.admin,
            size,
            self.guard,
            plane,
            self._admin_elsewhere(),
            self.settings.limits,
            self.tracer,
        )
        # the body: the message and its 5-byte prefix
        return Http2Server(
            service.handle,
            size + 5,
            service.screen,
            self._tls_context("h2"),
            limits=self.settings.edge.http2,
            gate=self._gate(),
            shed=self._shed_reply(),
            budget=self._budget,
            connections=self._public_connections,
        )

    def _gate(self) -> Gate:
        return self._admission.gate

    def _shed_reply(self) -> Reply:
        """What a gRPC call refused at the door gets (the gate or the body budget)."""
        retry = str(self.settings.edge.admission.retry_after)
        head = wire.error_head(
            Status.RESOURCE_EXHAUSTED, "the server is overloaded; retry later", (("retry-after", retry),)
        )
        return Reply(head)

    def _admin_server(self) -> DualServer:
        """REST and gRPC on one port: the repository's load and unload, its index, health.
        Never shed by admission control, with connections of its own: operators reach an
        overloaded or flooded server."""
        http_limit, grpc_limit = self.settings.http.max_body_bytes, self.settings.grpc.max_message_bytes
        guard = self.guard.requiring_credentials()  # reads here too, demo or not: only health is open
        api = RestApi(
            self.dataplane,
            self.admin,
            self.metrics,
            http_limit,
            guard,
            Plane.ADMIN,
            extra_routes=self._routing_routes.admin() + self._lifecycle_routes.admin(),
        )
        service = InferenceService(self.dataplane, self.admin, grpc_limit, guard, Plane.ADMIN)
        edge = self.settings.edge
        connections = Connections(min(edge.max_connections, 256))
        return DualServer(
            HttpServer(
                api.handle,
                http_limit,
                limits=edge.http,
                screen=api.screen,
                budget=self._budget,
                connections=connections,
            ),
            Http2Server(
                service.handle,
                grpc_limit + 5,
                service.screen,
                limits=edge.http2,
                shed=self._shed_reply(),
                budget=self._budget,
                connections=connections,
            ),
            self._tls_context("h2", "http/1.1"),
        )

    def _tls_context(self, *alpn: str) -> ssl.SSLContext | None:
        if self._tls is None:
            return None
        try:
            return server_context(self._tls, *alpn)
        except ValueError as exc:
            raise StartupError(str(exc)) from None


def build_guard(security: SecuritySettings) -> Guard:
    """The guard from the settings; ``StartupError`` saying what to fix when
    they cannot work (inference authentication on and no way to authenticate)."""
    try:
        keys = None if security.key_store is None else KeyStore(open_backend(security.key_store))
        verifier = None if security.jwt is None else JwtVerifier(security.jwt)
    except (ValueError, sqlite3.Error) as exc:
        raise StartupError(str(exc)) from None
    if security.inference_auth and keys is None and verifier is None:
        raise StartupError(
            "inference authentication is on, but no credentials are configured: give an API key store "
            "(--api-keys FILE; make keys with `turnout keys create`) or a JWT key (--jwt-secret-file, "
            "--jwt-public-key or --jwt-jwks), or serve a local demo with --no-inference-auth"
        )
    try:
        audit: AuditLog | NoAudit = (
            NoAudit()
            if security.audit_log is None
            else AuditLog(security.audit_log, max_bytes=security.audit_max_bytes, keep=security.audit_keep)
        )
    except OSError as exc:
        raise StartupError(f"cannot open the audit log {security.audit_log}: {exc.strerror}") from None
    return Guard(keys, verifier, RateLimiter(security.rate_limit), audit, security.inference_auth)


def raise_open_file_limit() -> int:
    """Every connection holds a file descriptor: take the hard limit for the
    soft one (often 1,024 by default, which 1,100 silent connections
    exhausted), and return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def bind_tcp(host: str, port: int, what: str) -> socket.socket:
    """Bind before anything else starts, to report a port in use plainly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"cannot listen for {what} on {host}:{port}: the port is already in use") from None
        raise StartupError(f"cannot listen for {what} on {host}:{port}: {exc.strerror}") from None
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock
