"""The V2 REST transport: routes translate HTTP to DataPlane calls and errors
to status codes, and nothing more."""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from turnout.dataplane import DataPlane
from turnout.errors import Code, InvalidRequest, PayloadTooLarge, TurnoutError
from turnout.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from turnout.observability.metrics import Metrics
from turnout.protocol.rest_codec import HEADER_LENGTH, decode_request, dumps, encode_response, parse_object
from turnout.transports.triton_config import triton_model_config

log = logging.getLogger("turnout.rest")
_DIGITS = re.compile(r"[0-9]{1,18}")

STATUS = {
    Code.INVALID: 400,
    Code.NOT_FOUND: 404,
    Code.TOO_LARGE: 413,
    Code.UNAVAILABLE: 503,
    Code.OVERLOADED: 503,
    Code.TIMEOUT: 503,
    Code.INTERNAL: 500,
}
JSON = "application/json"
Handler = Callable[[Request], Awaitable[Response]]


def json_response(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(document), status_code=status, media_type=JSON, headers=headers)


def error_response(exc: TurnoutError) -> Response:
    retry_after = exc.retry_after_header()
    headers = None if retry_after is None else {"Retry-After": retry_after}
    return json_response({"error": exc.message}, STATUS[exc.code], headers)


def _mapped(handler: Handler) -> Handler:
    async def call(request: Request) -> Response:
        try:
            return await handler(request)
        except TurnoutError as exc:
            return error_response(exc)
        except Exception:  # a bug, not the client's fault: answer in the protocol's shape and log it
            log.exception("unexpected error answering %s %s", request.method, request.url.path)
            return json_response({"error": "internal error; the server log has the details"}, 500)

    return call


async def _http_error(request: Request, exc: Exception) -> Response:
    """The router's own 404 and 405, in the V2 error shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return json_response({"error": f"{request.method} is not allowed on {request.url.path}"}, 405)
    return json_response({"error": f"no such endpoint: {request.method} {request.url.path}"}, exc.status_code)


class RestApi:
    def __init__(self, dataplane: DataPlane, metrics: Metrics, max_body_bytes: int) -> None:
        self._dataplane = dataplane
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes

    def app(self) -> Starlette:
        model = "/v2/models/{model}"
        version = model + "/versions/{version}"
        routes = [
            Route("/v2/health/live", self.live),
            Route("/v2/health/ready", self.ready),
            Route("/v2", self.server_metadata),
            Route("/v2/", self.server_metadata),
            Route(model, self.model_metadata),
            Route(version, self.model_metadata),
            Route(model + "/config", self.model_config),
            Route(version + "/config", self.model_config),
            Route(model + "/ready", self.model_ready),
            Route(version + "/ready", self.model_ready),
            Route(model + "/infer", self.infer, methods=["POST"]),
            Route(version + "/infer", self.infer, methods=["POST"]),
            Route("/v2/repository/index", self.repository_index, methods=["POST"]),
            Route("/v2/repository/models/{model}/load", self.load, methods=["POST"]),
            Route("/v2/repository/models/{model}/unload", self.unload, methods=["POST"]),
            Route("/metrics", self.metrics),
        ]
        return Starlette(
            routes=[Route(r.path, _mapped(r.endpoint), methods=r.methods) for r in routes],
            exception_handlers={404: _http_error, 405: _http_error},
        )

    async def live(self, request: Request) -> Response:
        live = self._dataplane.live()
        return json_response({"live": live}, 200 if live else 503)

    async def ready(self, request: Request) -> Response:
        ready = self._dataplane.ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        return json_response(self._dataplane.server_metadata())

    async def model_metadata(self, request: Request) -> Response:
        params = request.path_params
        return json_response(self._dataplane.model_metadata(params["model"], params.get("version")))

    async def model_config(self, request: Request) -> Response:
        params = request.path_params
        return json_response(
            triton_model_config(self._dataplane.served_version(params["model"], params.get("version")))
        )

    async def model_ready(self, request: Request) -> Response:
        params = request.path_params
        ready = self._dataplane.model_ready(params["model"], params.get("version"))
        return json_response({"name": params["model"], "ready": ready}, 200 if ready else 503)

    async def infer(self, request: Request) -> Response:
        params = request.path_params
        # An unknown model is a 404 before its body is read; the version that
        # answers is chosen again after, since a reload may finish meanwhile.
        served = self._dataplane.resolve(params["model"], params.get("version"), "rest")
        try:
            body = await self._body(request)
            inference = decode_request(body, _header_length(request), params["model"], params.get("version"))
        except TurnoutError as exc:
            self._dataplane.record_rejected(served, "rest", exc)
            raise
        response = await self._dataplane.infer(inference, "rest")
        encoded = encode_response(response, inference)
        if encoded.header_length is None:
            return Response(encoded.body, media_type=JSON)
        return Response(
            encoded.body,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(encoded.header_length)},
        )

    async def repository_index(self, request: Request) -> Response:
        body = await self._body(request)
        ready_only = False
        if body.strip():
            document = parse_object(body)
            ready_only = document.get("ready") is True
        entries = self._dataplane.repository_index(ready_only)
        return json_response(
            [{"name": e.name, "version": e.version, "state": e.state.value, "reason": e.reason} for e in entries]
        )

    async def load(self, request: Request) -> Response:
        body = await self._body(request)
        parameters = parse_object(body).get("parameters") if body.strip() else None
        await self._dataplane.load_model(request.path_params["model"], parameters)
        return Response(b"", status_code=200)

    async def unload(self, request: Request) -> Response:
        await self._body(request)
        await self._dataplane.unload_model(request.path_params["model"])
        return Response(b"", status_code=200)

    async def metrics(self, request: Request) -> Response:
        return Response(self._metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    async def _body(self, request: Request) -> bytes:
        """The request body, refused early once it passes the size limit."""
        limit = self._max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and _DIGITS.fullmatch(declared) and int(declared) > limit:
            raise PayloadTooLarge(f"the body of {declared} bytes exceeds the limit of {limit} bytes")
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "identity").lower()
        if encoding in ("gzip", "deflate"):
            body = _decompress(body, encoding, limit)
        elif encoding != "identity":
            raise InvalidRequest(f"unsupported Content-Encoding {encoding!r}; use gzip or deflate")
        return body


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Inflate with a cap, so a small compressed body cannot expand without bound."""
    window = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(window)
    try:
        result = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidRequest(f"the {encoding} body cannot be decompressed: {exc}") from None
    if len(result) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the decompressed body exceeds the limit of {limit} bytes")
    if not inflater.eof:
        raise InvalidRequest(f"the {encoding} body is truncated")
    if inflater.unused_data:
        raise InvalidRequest(f"the {encoding} body has {len(inflater.unused_data)} bytes after its end")
    return result


def _header_length(request: Request) -> int | None:
    value = request.headers.get(HEADER_LENGTH)
    if value is None:
        return None
    if not _DIGITS.fullmatch(value):
        raise InvalidRequest(f"Inference-Header-Content-Length must be an integer, got {value[:40]!r}")
    return int(value)
