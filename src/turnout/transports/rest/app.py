"""The V2 REST transport: routes translate HTTP to DataPlane calls and errors
to status codes, and nothing more."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from turnout import __version__
from turnout.errors import Code, Forbidden, InvalidRequest, PayloadTooLarge, TurnoutError
from turnout.model.runtimes.base import Relayed
from turnout.observability import tracing
from turnout.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from turnout.observability.metrics import Metrics
from turnout.observability.tracing import Tracer
from turnout.protocol.limits import DEFAULT_LIMITS, InputLimits, clipped
from turnout.protocol.rest_codec import (
    TIMEOUT_HEADER,
    decode_request,
    dumps,
    encode_response,
    header_timeout,
    parse_object,
)
from turnout.security.guard import Caller, Guard
from turnout.security.principal import Action
from turnout.serving.admin import ModelAdmin
from turnout.serving.dataplane import DataPlane
from turnout.transports.planes import Plane, admin_elsewhere_message
from turnout.transports.rest import openapi
from turnout.transports.rest.asgi import Handler, Receive, Request, Response, Router, Scope, Send
from turnout.transports.rest.triton_config import triton_model_config

log = logging.getLogger("turnout.rest")
_DIGITS = re.compile(rb"[0-9]{1,18}")

STATUS = {
    Code.INVALID: 400,
    Code.NOT_FOUND: 404,
    Code.TOO_LARGE: 413,
    Code.UNAVAILABLE: 503,
    Code.OVERLOADED: 503,
    Code.TIMEOUT: 503,
    Code.INTERNAL: 500,
    Code.UNAUTHENTICATED: 401,
    Code.FORBIDDEN: 403,
    Code.RATE_LIMITED: 429,
    Code.CONFLICT: 409,
}
OCTET_STREAM = b"application/octet-stream"
VARIANT_HEADER = b"turnout-variant"  # which routing variant answered


def json_response(document: Any, status: int = 200, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Response:
    return Response(dumps(document), status, headers=headers)


def error_response(exc: TurnoutError) -> Response:
    headers: tuple[tuple[bytes, bytes], ...] = ()
    retry_after = exc.retry_after_header()
    if retry_after is not None:
        headers = ((b"retry-after", retry_after.encode()),)
    if exc.code is Code.UNAUTHENTICATED:  # RFC 6750: say which scheme to use
        headers = ((b"www-authenticate", b'Bearer realm="turnout"'),)
    return json_response({"error": exc.message}, STATUS[exc.code], headers)


@dataclass(frozen=True, slots=True)
class _Route:
    handler: Handler
    action: Action | None  # what the guard checks; None: open to anyone (health probes)


class RestApi:
    """The ASGI application serving V2 REST (and /metrics), for one plane."""

    def __init__(
        self,
        dataplane: DataPlane,
        admin: ModelAdmin,
        metrics: Metrics,
        max_body_bytes: int,
        guard: Guard,
        plane: Plane = Plane.INFERENCE,
        admin_elsewhere: str = "",
        limits: InputLimits = DEFAULT_LIMITS,
        extra_routes: Sequence[tuple[str, str, Handler, Action | None]] = (),
        tracer: Tracer | None = None,
    ) -> None:
        self._tracer = tracer  # None: tracing off, and the request path does nothing for it
        self._limits = limits
        self._dataplane = dataplane
        self._admin = admin
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes
        self._guard = guard
        self._admin_elsewhere = admin_elsewhere  # where the admin plane is, for the public port's 403
        self._router: Router[_Route] = Router()
        model, version = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"

        def add(method: str, path: str, handler: Handler, action: Action | None) -> None:
            self._router.add(method, path, _Route(handler, action))

        inference = plane.serves_inference
        if inference:  # the inference routes first: they are the ones matched most
            for prefix in (model, version):
                add("POST", prefix + "/infer", self.infer, Action.INFER)
        self._openapi = dumps(openapi.document(__version__, plane.serves_inference, plane.serves_admin))
        add("GET", "/openapi.json", self.openapi, None)
        add("GET", "/v2/health/live", self.live, None)
        add("GET", "/v2/health/ready", self.ready, None)
        add("GET", "/v2", self.server_metadata, None)
        if inference:
            for prefix in (model, version):
                add("GET", prefix, self.model_metadata, Action.READ)
                add("GET", prefix + "/config", self.model_config, Action.READ)
                add("GET", prefix + "/ready", self.model_ready, Action.READ)
            add("GET", "/metrics", self.metrics, Action.READ)
        add("POST", "/v2/repository/index", self.repository_index, Action.READ)
        if plane.serves_admin:
            add("POST", "/v2/repository/models/{model}/load", self.load, Action.ADMIN)
            add("POST", "/v2/repository/models/{model}/unload", self.unload, Action.ADMIN)
        else:
            add("POST", "/v2/repository/models/{model}/load", self.admin_elsewhere, None)
            add("POST", "/v2/repository/models/{model}/unload", self.admin_elsewhere, None)
        for method, path, handler, action in extra_routes:  # traffic control's, for this plane
            add(method, path, handler, action)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """As an ASGI application (under uvicorn or any ASGI server)."""
        if scope["type"] != "http":  # lifespan is off; websockets are not served
            return
        client = scope.get("client")
        source = f"{client[0]}:{client[1]}" if client else ""
        response = await self._dispatch(scope["method"], scope["path"], dict(scope["headers"]), receive, source)
        await response(send)

    def screen(self, method: str, path: str, headers: dict[bytes, bytes], source: str) -> Response | None:
        """For turnout's own HTTP server, at a request's headers, before any of
        its body is read: an unknown route, a missing or invalid credential,
        a role that may not, or a spent rate is answered now, so nobody
        without a credential can make the server hold or inflate a body.
        None: let the body come (``handle`` then skips the rate count)."""
        route, params, known = self._router.match(method, path)
        if route is None:
            return _no_route(method, path, known)
        action = route.action
        if action is None or self._guard.open_to_anyone(action):
            return None
        try:
            self._guard.check(Caller.from_http(headers, source), action, params.get("model"), path)
        except TurnoutError as exc:
            return error_response(exc)
        return None

    async def handle(
        self, method: str, path: str, headers: dict[bytes, bytes], body: bytes | None, source: str = ""
    ) -> Response:
        """For turnout's own HTTP server, which has read the body already
        (``None``: it passed the size limit and was dropped), after ``screen``
        let the request in."""

        async def too_large() -> dict[str, Any]:
            raise PayloadTooLarge(f"the body exceeds the limit of {self._max_body_bytes} bytes")

        return await self._dispatch(method, path, headers, too_large, source, screened=True, preread=body)

    async def _dispatch(
        self,
        method: str,
        path: str,
        headers: dict[bytes, bytes],
        receive: Receive,
        source: str,
        screened: bool = False,
        preread: bytes | None = None,
    ) -> Response:
        route, params, known = self._router.match(method, path)
        if route is None:
            return _no_route(method, path, known)
        request = Request(method, path, headers, params, receive, source, preread=preread)
        try:
            request.principal = self._guard.principal(
                route.action, lambda: Caller.from_http(headers, source), params.get("model"), path, counted=not screened
            )
            return await route.handler(request)
        except TurnoutError as exc:
            return error_response(exc)
        except Exception:  # a bug, not the client's fault: answer in the protocol's shape and log it
            log.exception("unexpected error answering %s %s", method, path)
            return json_response({"error": "internal error; the server log has the details"}, 500)

    def relay(
        self, method: str, path: str, headers: dict[bytes, bytes], body: bytes, answer: Callable[[Response], None]
    ) -> bool:
        """For turnout's own HTTP server (``Relay``): ``handle`` for an inference
        request whose body goes on unread to a remote set, answered from the
        replica's callbacks (``DataPlane.relay``); False for any other, which
        ``handle`` answers: one it must read, trace or check a caller for, or
        one whose framing headers are wrong (their 400 is ``handle``'s)."""
        if not self._dataplane.relays or method != "POST" or self._tracer is not None or b"content-encoding" in headers:
            return False
        route, params, _ = self._router.match(method, path)
        if route is None or route.handler != self.infer or not self._guard.open_to_anyone(Action.INFER):
            return False
        header_length = None
        value = headers.get(b"inference-header-content-length")
        if value is not None:
            if not _DIGITS.fullmatch(value):
                return False
            header_length = int(value)
        try:
            deadline = header_timeout(headers.get(TIMEOUT_HEADER))
        except TurnoutError:
            return False

        def done(relayed: Relayed | None, error: TurnoutError | None) -> None:
            answer(error_response(error) if error is not None else _relayed(relayed))  # type: ignore[arg-type]

        return self._dataplane.relay(
            params["model"], params.get("version"), body, header_length, "rest", deadline, done
        )

    async def openapi(self, request: Request) -> Response:
        return Response(self._openapi)

    async def live(self, request: Request) -> Response:
        live = self._dataplane.live()
        return json_response({"live": live}, 200 if live else 503)

    async def ready(self, request: Request) -> Response:
        ready = self._dataplane.ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        return json_response(self._dataplane.server_metadata())

    async def model_metadata(self, request: Request) -> Response:
        params = request.params
        return json_response(await self._dataplane.model_metadata(params["model"], params.get("version")))

    async def model_config(self, request: Request) -> Response:
        params = request.params
        served = await self._dataplane.served_version(params["model"], params.get("version"))
        return json_response(triton_model_config(served))

    async def model_ready(self, request: Request) -> Response:
        params = request.params
        ready = self._dataplane.model_ready(params["model"], params.get("version"))
        return json_response({"name": params["model"], "ready": ready}, 200 if ready else 503)

    async def infer(self, request: Request) -> Response:
        tracer = self._tracer
        if tracer is None:
            return await self._infer(request)
        headers = request.headers
        carrier = {k.decode(): headers[k].decode("latin-1") for k in (b"traceparent", b"tracestate") if k in headers}
        with tracer.request("rest", carrier, request.params["model"]):
            return await self._infer(request)

    async def _infer(self, request: Request) -> Response:
        params = request.params
        model, version = params["model"], params.get("version")
        # An unknown model is a 404 before its body is read.
        arrival = await self._dataplane.arrive(model, version, "rest")
        try:
            body = await request.body(self._max_body_bytes)
            header_length = _header_length(request)
            deadline = header_timeout(request.headers.get(TIMEOUT_HEADER))  # a gateway's, passing its deadline on
        except TurnoutError as exc:
            self._dataplane.record_rejected(arrival, "rest", exc)
            raise
        if arrival.remote:  # asked first: no coroutine made per request for the models served here
            relayed = await self._dataplane.forward(
                arrival, body, header_length, "rest", deadline
            )  # counts its outcome
            if relayed is not None:  # a remote set's replica answered it, unread here
                return _relayed(relayed)
        try:
            inference = decode_request(body, header_length, model, version, self._limits)
        except TurnoutError as exc:
            self._dataplane.record_rejected(arrival, "rest", exc)
            raise
        trace = tracing.CURRENT.get()
        if trace is not None:
            trace.decoded = tracing.RequestTrace.now()
        headers = request.headers

        def key_of(name: str) -> str | None:  # an A/B test's assignment key, when sent as a header
            value = headers.get(name.lower().encode("latin-1"))
            return None if value is None else value.decode("latin-1")

        response = await self._dataplane.infer(inference, "rest", deadline, key_of, arrival)
        encoded = encode_response(response, inference)
        variant = response.parameters.get("variant")
        routed = () if variant is None else ((VARIANT_HEADER, str(variant).encode()),)
        if encoded.header_length is None:
            return Response(encoded.body, headers=routed)
        return Response(
            encoded.body,
            content_type=OCTET_STREAM,
            headers=((b"inference-header-content-length", str(encoded.header_length).encode()), *routed),
        )

    async def repository_index(self, request: Request) -> Response:
        body = await request.body(self._max_body_bytes)
        ready_only = bool(body.strip()) and parse_object(body).get("ready") is True
        entries = self._admin.repository_index(ready_only)
        return json_response(
            [{"name": e.name, "version": e.version, "state": e.state.value, "reason": e.reason} for e in entries]
        )

    async def load(self, request: Request) -> Response:
        model = request.params["model"]
        with self._guard.audited(request.principal, "load", model, Caller.from_http(request.headers, request.source)):
            body = await request.body(self._max_body_bytes)
            parameters = parse_object(body).get("parameters") if body.strip() else None
            await self._admin.load_model(model, parameters)
        return Response(b"")

    async def unload(self, request: Request) -> Response:
        model = request.params["model"]
        with self._guard.audited(request.principal, "unload", model, Caller.from_http(request.headers, request.source)):
            await request.body(self._max_body_bytes)
            await self._admin.unload_model(model)
        return Response(b"")

    async def admin_elsewhere(self, request: Request) -> Response:
        raise Forbidden(admin_elsewhere_message(self._admin_elsewhere))

    async def metrics(self, request: Request) -> Response:
        return Response(self._metrics.exposition(), content_type=METRICS_CONTENT_TYPE.encode())


def _no_route(method: str, path: str, known: bool) -> Response:
    shown = clipped(path)
    if known:
        return json_response({"error": f"{method[:20]} is not allowed on {shown}"}, 405)
    return json_response({"error": f"no such endpoint: {method[:20]} {shown}"}, 404)


def _relayed(relayed: Relayed) -> Response:
    """A replica's answer as it came: its status, body, and the headers that say how to read the body."""
    headers = relayed.headers
    length = headers.get(b"inference-header-content-length")
    return Response(
        relayed.body,
        relayed.status,
        headers.get(b"content-type", b"application/json"),
        () if length is None else ((b"inference-header-content-length", length),),
    )


def _header_length(request: Request) -> int | None:
    value = request.headers.get(b"inference-header-content-length")
    if value is None:
        return None
    if not _DIGITS.fullmatch(value):
        shown = value[:40].decode("latin-1")
        raise InvalidRequest(f"Inference-Header-Content-Length must be an integer, got {shown!r}")
    return int(value)
