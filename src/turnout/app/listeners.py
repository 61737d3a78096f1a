"""The listeners the composition root starts: the public REST port (and the
dashboard), the public gRPC port, and the admin plane (REST and gRPC on one
port), each with the routes, guard, limits and TLS the settings ask for.

The public listeners share one connection limit, one body budget and one
admission gate (``Shared``); the admin plane has connections of its own and
is never shed, so operators reach an overloaded or flooded server.
"""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Protocol

from turnout.app.startup import StartupError
from turnout.observability.metrics import Metrics
from turnout.observability.tracing import Tracer
from turnout.overload.admission import Admission
from turnout.overload.budget import BodyBudget
from turnout.overload.connections import Connections
from turnout.overload.gate import Gate
from turnout.routing.traffic import TrafficControl
from turnout.security.guard import Guard
from turnout.security.tls import server_context
from turnout.serving.admin import ModelAdmin
from turnout.serving.dataplane import DataPlane
from turnout.settings import Settings
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

log = logging.getLogger("turnout.server")


class Listener(Protocol):
    async def start(self, sock: socket.socket) -> None: ...
    async def shutdown(self, grace: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Parts:
    """What the listeners serve: built once by the composition root."""

    dataplane: DataPlane
    admin: ModelAdmin
    metrics: Metrics
    guard: Guard
    traffic: TrafficControl
    routing_routes: RoutingRoutes
    lifecycle_routes: LifecycleRoutes
    tracer: Tracer | None


@dataclass(frozen=True, slots=True)
class Shared:
    """What the public listeners share: connections, buffered bodies, the admission gate."""

    connections: Connections
    budget: BodyBudget
    admission: Admission


class Listeners:
    def __init__(self, settings: Settings, parts: Parts, shared: Shared) -> None:
        self._settings = settings
        self._parts = parts
        self._shared = shared
        self._tls = settings.security.tls

    def log_security(self) -> None:
        settings, guard = self._settings, self._parts.guard
        admin = settings.admin
        if admin.port is not None:
            log.info("admin plane (repository load/unload) on %s, admin role required", self.admin_address())
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

    def admin_address(self) -> str:
        admin = self._settings.admin
        return f"{'https' if self._tls else 'http'}://{admin.host}:{admin.port}"

    def _admin_elsewhere(self) -> str:
        return self.admin_address() if self._settings.admin.port is not None else "not enabled on this server"

    def public_http(self) -> HttpServer:
        limit = self._settings.http.max_body_bytes
        plane = Plane.BOTH if self._settings.admin.on_public_port else Plane.INFERENCE
        parts = self._parts
        routes = parts.routing_routes.inference() + UiRoutes(parts.admin, parts.traffic, parts.metrics).routes()
        if plane.serves_admin:
            routes += self._parts.routing_routes.admin() + self._parts.lifecycle_routes.admin()
        api = RestApi(
            self._parts.dataplane,
            self._parts.admin,
            self._parts.metrics,
            limit,
            self._parts.guard,
            plane,
            self._admin_elsewhere(),
            self._settings.limits,
            routes,
            self._parts.tracer,
        )
        return HttpServer(
            api.handle,
            limit,
            self._tls_context("http/1.1"),
            limits=self._settings.edge.http,
            screen=api.screen,
            gate=self._gate(),
            budget=self._shared.budget,
            connections=self._shared.connections,
            relay=api.relay,
        )

    def public_grpc(self) -> Http2Server:
        size = self._settings.grpc.max_message_bytes
        plane = Plane.BOTH if self._settings.admin.on_public_port else Plane.INFERENCE
        service = InferenceService(
            self._parts.dataplane,
            self._parts.admin,
            size,
            self._parts.guard,
            plane,
            self._admin_elsewhere(),
            self._settings.limits,
            self._parts.tracer,
        )
        # the body: the message and its 5-byte prefix
        return Http2Server(
            service.handle,
            size + 5,
            service.screen,
            self._tls_context("h2"),
            limits=self._settings.edge.http2,
            gate=self._gate(),
            shed=self._shed_reply(),
            budget=self._shared.budget,
            connections=self._shared.connections,
        )

    def _gate(self) -> Gate:
        return self._shared.admission.gate

    def _shed_reply(self) -> Reply:
        """What a gRPC call refused at the door gets (the gate or the body budget)."""
        retry = str(self._settings.edge.admission.retry_after)
        head = wire.error_head(
            Status.RESOURCE_EXHAUSTED, "the server is overloaded; retry later", (("retry-after", retry),)
        )
        return Reply(head)

    def admin_plane(self) -> DualServer:
        """REST and gRPC on one port: the repository's load and unload, its index, health.
        Never shed by admission control, with connections of its own: operators reach an
        overloaded or flooded server."""
        http_limit, grpc_limit = self._settings.http.max_body_bytes, self._settings.grpc.max_message_bytes
        guard = self._parts.guard.requiring_credentials()  # reads here too, demo or not: only health is open
        api = RestApi(
            self._parts.dataplane,
            self._parts.admin,
            self._parts.metrics,
            http_limit,
            guard,
            Plane.ADMIN,
            extra_routes=self._parts.routing_routes.admin() + self._parts.lifecycle_routes.admin(),
        )
        service = InferenceService(self._parts.dataplane, self._parts.admin, grpc_limit, guard, Plane.ADMIN)
        edge = self._settings.edge
        connections = Connections(min(edge.max_connections, 256))
        return DualServer(
            HttpServer(
                api.handle,
                http_limit,
                limits=edge.http,
                screen=api.screen,
                budget=self._shared.budget,
                connections=connections,
            ),
            Http2Server(
                service.handle,
                grpc_limit + 5,
                service.screen,
                limits=edge.http2,
                shed=self._shed_reply(),
                budget=self._shared.budget,
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
