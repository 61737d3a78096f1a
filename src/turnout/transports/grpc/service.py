"""The V2 gRPC service (``inference.GRPCInferenceService``): the method table,
message conversion, the DataPlane call, and errors mapped to gRPC statuses.
The transport below it is ``turnout.transports.http2``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from turnout.errors import Code, Forbidden, TurnoutError
from turnout.observability import tracing
from turnout.observability.tracing import Tracer
from turnout.protocol.limits import DEFAULT_LIMITS, InputLimits, clipped
from turnout.security.guard import Caller, Guard
from turnout.security.principal import Action, Principal
from turnout.serving.admin import ModelAdmin
from turnout.serving.dataplane import DataPlane
from turnout.transports.grpc import convert, wire
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb
from turnout.transports.grpc.wire import GrpcError, Status
from turnout.transports.http2.server import Reply, Request
from turnout.transports.planes import Plane, admin_elsewhere_message

log = logging.getLogger("turnout.grpc")

SERVICE = "inference.GRPCInferenceService"
VARIANT_METADATA = "turnout-variant"  # trailing metadata: which routing variant answered

STATUS = {
    Code.INVALID: Status.INVALID_ARGUMENT,
    Code.NOT_FOUND: Status.NOT_FOUND,
    Code.TOO_LARGE: Status.RESOURCE_EXHAUSTED,
    Code.OVERLOADED: Status.RESOURCE_EXHAUSTED,
    Code.UNAVAILABLE: Status.UNAVAILABLE,
    Code.TIMEOUT: Status.DEADLINE_EXCEEDED,
    Code.INTERNAL: Status.INTERNAL,
    Code.UNAUTHENTICATED: Status.UNAUTHENTICATED,
    Code.FORBIDDEN: Status.PERMISSION_DENIED,
    Code.RATE_LIMITED: Status.RESOURCE_EXHAUSTED,
    Code.CONFLICT: Status.ALREADY_EXISTS,
}


@dataclass(frozen=True, slots=True)
class CallContext:
    deadline: float | None  # seconds the client still waits, or None
    caller: Caller
    principal: Principal | None  # None on open methods (health)
    metadata: Mapping[str, str] = field(default_factory=dict)  # the call's headers (lower-case names)
    trailing: list[tuple[str, str]] = field(default_factory=list)  # a call adds trailing metadata here


# (request message, its context) -> response message
Call = Callable[[Any, CallContext], Awaitable[Any]]


# (method name, call, what the guard checks, the model a call concerns)
_Row = tuple[str, Call, Action | None, Callable[[Any], str | None]]


def _no_model(message: Any) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class Method:
    request_type: Any
    call: Call
    action: Action | None  # what the guard checks; None: open to anyone (health)
    model_of: Callable[[Any], str | None] = _no_model  # the model a call concerns, for allow lists


class InferenceService:
    """The V2 gRPC service, for one plane (see ``planes``): the inference
    plane answers the repository's load and unload with PERMISSION_DENIED
    and where to go; the admin plane serves those, the index and health."""

    def __init__(
        self,
        dataplane: DataPlane,
        admin: ModelAdmin,
        max_message_bytes: int,
        guard: Guard,
        plane: Plane = Plane.INFERENCE,
        admin_elsewhere: str = "",
        limits: InputLimits = DEFAULT_LIMITS,
        tracer: Tracer | None = None,
    ) -> None:
        self._tracer = tracer  # None: tracing off
        self._limits = limits
        self._dataplane = dataplane
        self._admin = admin
        self._limit = max_message_bytes
        self._guard = guard
        self._admin_elsewhere = admin_elsewhere

        def by_name(message: Any) -> str | None:
            return str(message.name)

        def by_model_name(message: Any) -> str | None:
            return str(message.model_name)

        table: list[_Row] = [
            ("ServerLive", self.server_live, None, _no_model),
            ("ServerReady", self.server_ready, None, _no_model),
            ("ServerMetadata", self.server_metadata, None, _no_model),
            ("RepositoryIndex", self.repository_index, Action.READ, _no_model),
        ]
        if plane.serves_inference:
            table += [
                ("ModelReady", self.model_ready, Action.READ, by_name),
                ("ModelMetadata", self.model_metadata, Action.READ, by_name),
                ("ModelInfer", self.model_infer, Action.INFER, by_model_name),
            ]
        if plane.serves_admin:
            table += [
                ("RepositoryModelLoad", self.repository_model_load, Action.ADMIN, by_model_name),
                ("RepositoryModelUnload", self.repository_model_unload, Action.ADMIN, by_model_name),
            ]
        else:
            table += [
                ("RepositoryModelLoad", self.admin_elsewhere, None, _no_model),
                ("RepositoryModelUnload", self.admin_elsewhere, None, _no_model),
            ]
        self.methods: dict[str, Method] = {
            f"/{SERVICE}/{name}": Method(getattr(pb, f"{name}Request"), call, action, model_of)
            for name, call, action, model_of in table
        }

    async def handle(self, request: Request) -> Reply:
        """One call: the HTTP/2 exchange in, the gRPC answer out. Never raises."""
        try:
            return await self._handle(request)
        except GrpcError as exc:
            return Reply(wire.error_head(exc.status, exc.message, exc.metadata))
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug, not the client's fault: a clean INTERNAL, and the log has it
            log.exception("unexpected error in a gRPC call")
            return Reply(wire.error_head(Status.INTERNAL, "internal error; the server log has the details"))

    def screen(self, headers: dict[str, str], peer: str) -> Reply | None:
        """Refuse a call by its headers alone, before its body arrives: not
        gRPC, an unknown method, no valid credential, or a spent rate. So
        nobody without a credential can make the server hold or inflate a
        message; roles that depend on the model are checked once the
        message says which (``_handle``)."""
        path = headers.get(":path", "")
        if headers.get(":method") != "POST" or not headers.get("content-type", "").startswith(wire.CONTENT_TYPE):
            return Reply(wire.error_head(Status.INTERNAL, "a gRPC call is a POST with content-type application/grpc"))
        method = self.methods.get(path)
        if method is None:
            return Reply(wire.error_head(Status.UNIMPLEMENTED, f"unknown method {clipped(path)}"))
        action = method.action
        if action is None or self._guard.open_to_anyone(action):
            return None
        try:
            self._guard.admit(Caller.from_headers(headers, peer), action, path)
        except TurnoutError as exc:
            return Reply(_error_head(exc))
        return None

    async def _handle(self, request: Request) -> Reply:
        headers = request.headers
        started = time.monotonic()
        path = headers[":path"]
        method = self.methods[path]  # screen() refused the others
        timeout = wire.parse_timeout(headers.get("grpc-timeout"))
        if request.body is None:
            raise GrpcError(Status.RESOURCE_EXHAUSTED, f"the request message is larger than {self._limit} bytes")
        body = wire.unframe(request.body, headers.get("grpc-encoding"), self._limit)
        try:
            message = method.request_type.FromString(body)
        except DecodeError as exc:
            raise GrpcError(
                Status.INVALID_ARGUMENT, f"cannot parse the {path.rsplit('/', 1)[-1]} request: {exc}"
            ) from None
        remaining = None if timeout is None else timeout - (time.monotonic() - started)
        caller = Caller.from_headers(headers, request.peer)
        try:
            # admitted at the door (``screen``): counted against its rate there
            model = method.model_of(message)
            principal = self._guard.principal(method.action, lambda: caller, model, path, counted=False)
            context = CallContext(remaining, caller, principal, headers)
            response = await method.call(message, context)
        except TurnoutError as exc:
            raise GrpcError(STATUS[exc.code], exc.message, _retry_metadata(exc)) from None
        trailers = wire.trailers(Status.OK, "", context.trailing) if context.trailing else wire.OK_TRAILERS
        return Reply(wire.RESPONSE_HEAD, wire.frame(response.SerializeToString()), trailers)

    # methods
    async def server_live(self, request: Any, context: CallContext) -> Any:
        return pb.ServerLiveResponse(live=self._dataplane.live())

    async def server_ready(self, request: Any, context: CallContext) -> Any:
        return pb.ServerReadyResponse(ready=self._dataplane.ready())

    async def server_metadata(self, request: Any, context: CallContext) -> Any:
        return pb.ServerMetadataResponse(**self._dataplane.server_metadata())

    async def model_ready(self, request: Any, context: CallContext) -> Any:
        return pb.ModelReadyResponse(ready=self._dataplane.model_ready(request.name, request.version or None))

    async def model_metadata(self, request: Any, context: CallContext) -> Any:
        metadata = await self._dataplane.model_metadata(request.name, request.version or None)
        response = pb.ModelMetadataResponse(
            name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"]
        )
        for kind in ("inputs", "outputs"):
            for tensor in metadata[kind]:
                getattr(response, kind).add(**tensor)
        return response

    async def model_infer(self, request: Any, context: CallContext) -> Any:
        tracer = self._tracer
        if tracer is None:
            return await self._model_infer(request, context)
        with tracer.request("grpc", context.metadata, request.model_name) as trace:
            trace.decoded = tracing.RequestTrace.now()  # the message was parsed before the call
            return await self._model_infer(request, context)

    async def _model_infer(self, request: Any, context: CallContext) -> Any:
        arrival = await self._dataplane.arrive(request.model_name, request.model_version or None, "grpc")
        try:
            decoded, as_raw = convert.decode_request(request, self._limits)
        except TurnoutError as exc:
            self._dataplane.record_rejected(arrival, "grpc", exc)
            raise
        metadata = context.metadata
        response = await self._dataplane.infer(
            decoded, "grpc", context.deadline, lambda name: metadata.get(name.lower()), arrival
        )
        variant = response.parameters.get("variant")
        if variant is not None:
            context.trailing.append((VARIANT_METADATA, str(variant)))
        return convert.encode_response(response, as_raw)

    async def repository_index(self, request: Any, context: CallContext) -> Any:
        response = pb.RepositoryIndexResponse()
        for entry in self._admin.repository_index(request.ready):
            response.models.add(name=entry.name, version=entry.version, state=entry.state.value, reason=entry.reason)
        return response

    async def repository_model_load(self, request: Any, context: CallContext) -> Any:
        with self._guard.audited(context.principal, "load", request.model_name, context.caller):
            await self._admin.load_model(request.model_name, dict(request.parameters))
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(self, request: Any, context: CallContext) -> Any:
        with self._guard.audited(context.principal, "unload", request.model_name, context.caller):
            await self._admin.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def admin_elsewhere(self, request: Any, context: CallContext) -> Any:
        raise Forbidden(admin_elsewhere_message(self._admin_elsewhere))


def _retry_metadata(exc: TurnoutError) -> tuple[tuple[str, str], ...]:
    retry_after = exc.retry_after_header()
    return (("retry-after", retry_after),) if retry_after is not None else ()


def _error_head(exc: TurnoutError) -> bytes:
    return wire.error_head(STATUS[exc.code], exc.message, _retry_metadata(exc))
