"""The web dashboard at ``/ui``: static files that ship with the package (no
CDN), and ``/ui/api/state``, one JSON document the page polls: models, versions
and their state, each endpoint's traffic policy, request totals, drift
(reference against live shares per feature), and each pipeline's steps."""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from turnout import __version__
from turnout.errors import NotFound
from turnout.observability.metrics import Metrics
from turnout.protocol.rest_codec import dumps
from turnout.routing.document import describe
from turnout.routing.metrics import overview
from turnout.routing.traffic import TrafficControl
from turnout.security.principal import Action
from turnout.serving.admin import ModelAdmin
from turnout.transports.rest.asgi import Request, Response
from turnout.transports.rest.routing import RouteSpec

_TYPES = {"html": b"text/html; charset=utf-8", "js": b"text/javascript; charset=utf-8", "css": b"text/css"}


def _asset(name: str) -> bytes:
    return resources.files("turnout.ui").joinpath(name).read_bytes()


@dataclass(frozen=True, slots=True)
class UiRoutes:
    admin: ModelAdmin
    traffic: TrafficControl
    metrics: Metrics

    def routes(self) -> list[RouteSpec]:
        # the page and its script are public files; the state behind them needs the read role
        return [
            ("GET", "/ui", self.page, None),
            ("GET", "/ui/{asset}", self.asset, None),
            ("GET", "/ui/api/state", self.state, Action.READ),
        ]

    async def page(self, request: Request) -> Response:
        return Response(_asset("index.html"), content_type=_TYPES["html"])

    async def asset(self, request: Request) -> Response:
        name = request.params["asset"]
        kind = name.rsplit(".", 1)[-1]
        if name not in ("app.js", "app.css"):
            raise NotFound(f"no such file: /ui/{name[:80]}")
        return Response(_asset(name), content_type=_TYPES[kind])

    async def state(self, request: Request) -> Response:
        return Response(dumps(self.snapshot()))

    def snapshot(self) -> dict[str, Any]:
        totals = self.metrics.per_model()
        models = []
        for name in sorted({entry.name for entry in self.admin.repository_index()}):
            status = self.admin.version_status(name)
            route = self.traffic.routes.get(name)
            version, steps = self.admin.steps(name)
            figures = self.metrics.per_step(name, version) if steps else {}
            models.append(
                {
                    **status,
                    "policy": None if route is None else describe(route.policy),
                    "routing": overview(self.traffic, name),
                    "requests": totals.get(name, {}),
                    "drift": self.admin.drift_view(name),
                    "steps": [{**step, **figures.get(step["name"], {}), "version": version} for step in steps],
                }
            )
        return {"server": __version__, "time": time.time(), "models": models}
