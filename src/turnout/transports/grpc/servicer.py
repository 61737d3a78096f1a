"""The V2 gRPC service (``inference.GRPCInferenceService``) on grpc.aio:
converts messages, calls the DataPlane, maps errors to status codes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from turnout.dataplane import DataPlane
from turnout.errors import Code, TurnoutError
from turnout.transports.grpc import convert
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2_grpc as pb_grpc

log = logging.getLogger("turnout.grpc")

STATUS = {
    Code.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    Code.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Code.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Code.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    Code.INTERNAL: grpc.StatusCode.INTERNAL,
}

T = TypeVar("T")


async def _answer(context: grpc.aio.ServicerContext[Any, Any], call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except TurnoutError as exc:
        retry_after = exc.retry_after_header()
        if retry_after is not None:
            context.set_trailing_metadata((("retry-after", retry_after),))
        await context.abort(STATUS[exc.code], exc.message)
        raise AssertionError("unreachable: abort raises") from exc
    except Exception as exc:  # a bug, not the client's fault: a clean INTERNAL, and the log has it
        log.exception("unexpected error in a gRPC call")
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")
        raise AssertionError("unreachable: abort raises") from exc


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:  # noqa: N802 - gRPC names
        return pb.ServerLiveResponse(live=self._dataplane.live())

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:  # noqa: N802
        return pb.ServerReadyResponse(ready=self._dataplane.ready())

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:  # noqa: N802
        return pb.ServerMetadataResponse(**self._dataplane.server_metadata())

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:  # noqa: N802
        async def call() -> pb.ModelReadyResponse:
            return pb.ModelReadyResponse(ready=self._dataplane.model_ready(request.name, request.version or None))

        return await _answer(context, call)

    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:  # noqa: N802
        async def call() -> pb.ModelMetadataResponse:
            metadata = self._dataplane.model_metadata(request.name, request.version or None)
            response = pb.ModelMetadataResponse(
                name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"]
            )
            for kind in ("inputs", "outputs"):
                for tensor in metadata[kind]:
                    getattr(response, kind).add(**tensor)
            return response

        return await _answer(context, call)

    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        async def call() -> pb.ModelInferResponse:
            served = self._dataplane.resolve(request.model_name, request.model_version or None, "grpc")
            try:
                decoded, as_raw = convert.decode_request(request)
            except TurnoutError as exc:
                self._dataplane.record_rejected(served, "grpc", exc)
                raise
            response = await self._dataplane.infer(decoded, "grpc", context.time_remaining())
            return convert.encode_response(response, as_raw)

        return await _answer(context, call)

    async def RepositoryIndex(self, request: Any, context: Any) -> pb.RepositoryIndexResponse:  # noqa: N802
        response = pb.RepositoryIndexResponse()
        for entry in self._dataplane.repository_index(request.ready):
            response.models.add(name=entry.name, version=entry.version, state=entry.state.value, reason=entry.reason)
        return response

    async def RepositoryModelLoad(self, request: Any, context: Any) -> pb.RepositoryModelLoadResponse:  # noqa: N802
        async def call() -> pb.RepositoryModelLoadResponse:
            await self._dataplane.load_model(request.model_name, dict(request.parameters))
            return pb.RepositoryModelLoadResponse()

        return await _answer(context, call)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> pb.RepositoryModelUnloadResponse:  # noqa: N802
        async def call() -> pb.RepositoryModelUnloadResponse:
            await self._dataplane.unload_model(request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await _answer(context, call)


def add_to_server(server: grpc.aio.Server, dataplane: DataPlane) -> None:
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(dataplane), server)  # type: ignore[no-untyped-call]
