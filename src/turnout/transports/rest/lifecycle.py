"""REST routes for a model's versions on the admin plane: pin a version as
the default, unpin, roll back to the previous default, read where each
version stands and each version's last drift window. Changes are admin
actions, recorded in the audit log."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

from turnout.errors import InvalidRequest
from turnout.protocol.rest_codec import dumps, parse_object
from turnout.security.guard import Caller, Guard
from turnout.security.principal import Action
from turnout.serving.admin import ModelAdmin
from turnout.transports.rest.asgi import Request, Response
from turnout.transports.rest.routing import RouteSpec


@dataclass(frozen=True, slots=True)
class LifecycleRoutes:
    models: ModelAdmin
    guard: Guard
    max_body_bytes: int

    def admin(self) -> list[RouteSpec]:
        base = "/v2/repository/models/{model}"
        return [
            ("GET", base + "/versions", self.versions, Action.READ),
            ("GET", base + "/drift", self.drift, Action.READ),
            ("POST", base + "/pin", self.pin, Action.ADMIN),
            ("POST", base + "/unpin", self.unpin, Action.ADMIN),
            ("POST", base + "/rollback", self.rollback, Action.ADMIN),
        ]

    async def versions(self, request: Request) -> Response:
        return Response(dumps(self.models.version_status(request.params["model"])))

    async def drift(self, request: Request) -> Response:
        return Response(dumps(self.models.drift_status(request.params["model"])))

    async def pin(self, request: Request) -> Response:
        model = request.params["model"]
        with self._audited(request, "pin"):
            body = await request.body(self.max_body_bytes)
            version = parse_object(body).get("version") if body.strip() else None
            if isinstance(version, int) and not isinstance(version, bool):
                version = str(version)
            if not isinstance(version, str):
                raise InvalidRequest('pin needs a version: {"version": "3"}')
            await self.models.pin_model(model, version)
        return Response(dumps(self.models.version_status(model)))

    async def unpin(self, request: Request) -> Response:
        model = request.params["model"]
        with self._audited(request, "unpin"):
            await request.body(self.max_body_bytes)
            await self.models.unpin_model(model)
        return Response(dumps(self.models.version_status(model)))

    async def rollback(self, request: Request) -> Response:
        model = request.params["model"]
        with self._audited(request, "rollback"):
            await request.body(self.max_body_bytes)
            await self.models.rollback_model(model)
        return Response(dumps(self.models.version_status(model)))

    def _audited(self, request: Request, action: str) -> AbstractContextManager[None]:
        caller = Caller.from_http(request.headers, request.source)
        return self.guard.audited(request.principal, action, request.params["model"], caller)
