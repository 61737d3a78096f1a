"""REST routes for traffic control: the admin plane's policy, rollout and
report routes, and the inference plane's A/B feedback route. Each translates
HTTP to a ``TrafficControl`` / ``ShadowMirror`` / ``FeedbackStore`` call;
changes are admin actions, recorded in the audit log."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from turnout.errors import Conflict, InvalidRequest, NotFound, Unavailable
from turnout.protocol.rest_codec import dumps, parse_object
from turnout.routing.document import parse_guard
from turnout.routing.feedback import DuplicateFeedback, Feedback, FeedbackError, format_report
from turnout.routing.policy import PolicyError
from turnout.routing.route import parse_steps
from turnout.routing.shadow import ShadowMirror
from turnout.routing.state_store import StoreFailed
from turnout.routing.traffic import TrafficControl
from turnout.security.guard import Caller, Guard
from turnout.security.principal import Action
from turnout.transports.rest.asgi import Handler, Request, Response

# (method, path, handler, what the guard checks)
RouteSpec = tuple[str, str, Handler, Action | None]


MAX_NOTE = 4000


def _json(document: Any, status: int = 200) -> Response:
    return Response(dumps(document), status)


@dataclass(frozen=True, slots=True)
class RoutingRoutes:
    traffic: TrafficControl
    mirror: ShadowMirror
    feedback: Feedback
    guard: Guard
    max_body_bytes: int

    def admin(self) -> list[RouteSpec]:
        base = "/v2/routing/{model}"
        return [
            ("GET", "/v2/routing", self.list_all, Action.READ),
            ("GET", base, self.show, Action.READ),
            ("PUT", base, self.set_policy, Action.ADMIN),
            ("DELETE", base, self.clear, Action.ADMIN),
            ("POST", base + "/switch", self.switch, Action.ADMIN),
            ("POST", base + "/rollout/{operation}", self.rollout, Action.ADMIN),
            ("GET", base + "/events", self.events, Action.READ),
            ("GET", base + "/shadow", self.shadow, Action.READ),
            ("POST", base + "/ab", self.ab_report, Action.READ),
        ]

    def inference(self) -> list[RouteSpec]:
        return [("POST", "/v2/models/{model}/feedback", self.record_feedback, Action.INFER)]

    # reading
    async def list_all(self, request: Request) -> Response:
        return _json([self.traffic.status(name) for name in sorted(self.traffic.routes)])

    async def show(self, request: Request) -> Response:
        model = request.params["model"]
        status = self.traffic.status(model)
        status["shadow"] = [r.as_dict() for r in self.mirror.snapshot(model)]
        return _json(status)

    async def events(self, request: Request) -> Response:
        model = request.params["model"]
        return _json([e.as_dict() for e in self.traffic.events(model, 200)])

    async def shadow(self, request: Request) -> Response:
        model = request.params["model"]
        self.traffic.status(model)  # 404 for an unknown model
        return _json([r.as_dict() for r in self.mirror.snapshot(model)])

    async def ab_report(self, request: Request) -> Response:
        model = request.params["model"]
        self.traffic.status(model)
        options = await self._object(request, required=False)
        min_count = options.get("min_count", 30)
        baseline = options.get("baseline")
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 2:
            raise InvalidRequest("'min_count' must be an integer of at least 2")
        if baseline is not None and not isinstance(baseline, str):
            raise InvalidRequest("'baseline' must be a variant name")
        try:
            report = await asyncio.to_thread(self._report, model, min_count, baseline)
        except FeedbackError as exc:  # a baseline that is not one of the variants
            raise InvalidRequest(str(exc)) from None
        except StoreFailed as exc:  # the shared store (Redis) does not answer
            raise Unavailable(f"the A/B feedback store failed: {exc}", retry_after=1.0) from None
        return _json(report)

    def _report(self, model: str, min_count: int, baseline: str | None) -> dict[str, Any]:
        self.feedback.flush()  # the latest assignments count too
        report = self.feedback.report(model, min_count, baseline)
        return {**report.as_dict(), "text": format_report(report)}

    # changing
    async def set_policy(self, request: Request) -> Response:
        model = request.params["model"]
        with self._audited(request, "routing.set"):
            body = await self._object(request)
            note = _note(body)
            self.traffic.apply(model, body, _actor(request))
            if note:
                self.traffic.note(model, note, _actor(request))
        return _json(self.traffic.status(model))

    async def clear(self, request: Request) -> Response:
        model = request.params["model"]
        with self._audited(request, "routing.clear"):
            await request.body(self.max_body_bytes)
            self.traffic.clear(model, _actor(request))
        return _json(self.traffic.status(model))

    async def switch(self, request: Request) -> Response:
        model = request.params["model"]
        with self._audited(request, "routing.switch"):
            options = await self._object(request, required=False)
            to = options.get("to")
            if to is not None and not isinstance(to, str):
                raise InvalidRequest("'to' must be a variant name")
            self.traffic.switch(model, _actor(request), to)
        return _json(self.traffic.status(model))

    async def rollout(self, request: Request) -> Response:
        model, operation = request.params["model"], request.params["operation"]
        with self._audited(request, f"rollout.{operation}"):
            options = await self._object(request, required=operation == "start")
            note = _note(options)
            if operation == "start":
                self._start(model, options, _actor(request))
            else:
                self.traffic.operate(model, operation, _actor(request))
            if note:
                self.traffic.note(model, note, _actor(request))
        return _json(self.traffic.status(model))

    def _start(self, model: str, options: dict[str, Any], actor: str) -> None:
        candidate, baseline, steps = options.get("candidate"), options.get("baseline"), options.get("steps")
        if not isinstance(candidate, str) or not candidate:
            raise InvalidRequest("a rollout needs a 'candidate' variant")
        if baseline is not None and not isinstance(baseline, str):
            raise InvalidRequest("'baseline' must be a variant name")
        if not isinstance(steps, str):
            raise InvalidRequest("'steps' is a string such as \"5:60s,25:60s,50:60s,100:60s\"")
        try:
            guard = parse_guard(options.get("guard") or {})
            parsed = parse_steps(steps)
        except PolicyError as exc:
            raise InvalidRequest(f"rollout refused: {exc}") from None
        self.traffic.start_rollout(model, candidate, parsed, actor, baseline, guard)

    # the inference plane
    async def record_feedback(self, request: Request) -> Response:
        model = request.params["model"]
        body = await self._object(request)
        request_id, outcome = body.get("id"), body.get("outcome")
        if not isinstance(request_id, str) or not request_id:
            raise InvalidRequest("feedback needs the 'id' of the A/B-routed response it is about")
        if outcome is None:
            raise InvalidRequest("feedback needs an 'outcome': 0 or 1 (a conversion), or a number (a reward)")
        try:
            variant = await asyncio.to_thread(self.feedback.record, model, request_id, outcome)
        except DuplicateFeedback as exc:
            raise Conflict(str(exc)) from None
        except StoreFailed as exc:
            raise Unavailable(f"the A/B feedback store failed: {exc}", retry_after=1.0) from None
        except FeedbackError as exc:
            text = str(exc)
            raise (NotFound(text) if "no A/B assignment" in text else InvalidRequest(text)) from None
        return _json({"id": request_id, "variant": variant, "recorded": True})

    # helpers
    async def _object(self, request: Request, required: bool = True) -> dict[str, Any]:
        body = await request.body(self.max_body_bytes)
        if not body.strip():
            if required:
                raise InvalidRequest("this request needs a JSON object body")
            return {}
        return parse_object(body)

    @contextmanager
    def _audited(self, request: Request, action: str) -> Iterator[None]:
        caller = Caller.from_http(request.headers, request.source)
        with self.guard.audited(request.principal, action, request.params["model"], caller):
            yield


def _note(body: dict[str, Any]) -> str | None:
    """A change's ``note`` (why it was made: ``turnout optimize`` sends its report's summary), taken
    out of the document, for the event log."""
    note = body.pop("note", None)
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        raise InvalidRequest(f"'note' is text of at most {MAX_NOTE} characters")
    return note


def _actor(request: Request) -> str:
    principal = request.principal
    return principal.name if principal is not None else "anonymous"
