"""The little of HTTP that the REST transport needs, straight on ASGI.

A framework's router and middleware stack cost more per request than the
whole V2 decode on a small model (measured with py-spy: ~45% of a core at 64
concurrent requests), so requests are matched by splitting the path, bodies
are read with a size limit, and responses are two ASGI messages.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from turnout.errors import InvalidRequest, PayloadTooLarge
from turnout.security.principal import Principal

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[bytes, bytes]
    params: dict[str, str]
    receive: Receive
    source: str = ""  # the client's address, "host:port"
    principal: Principal | None = None  # who the guard let in; None on open routes
    # the whole body, when the server read it before the handler (turnout's
    # own HTTP server): ``receive`` is then not called
    preread: bytes | None = None

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    async def body(self, limit: int) -> bytes:
        """The whole body, refused as soon as it passes ``limit`` bytes
        (declared or received), then inflated if gzip/deflate, with the same cap."""
        declared = self.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and len(declared) < 19 and int(declared) > limit:
            raise PayloadTooLarge(f"the body of {int(declared)} bytes exceeds the limit of {limit} bytes")
        body = self.preread
        if body is None:
            body = await self._received(limit)
        elif len(body) > limit:
            raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
        if b"content-encoding" not in self.headers:
            return body
        encoding = self.headers[b"content-encoding"].lower()
        if encoding in (b"gzip", b"deflate"):
            return _decompress(body, encoding.decode(), limit)
        if encoding != b"identity":
            raise InvalidRequest(f"unsupported Content-Encoding {encoding.decode('latin-1')!r}; use gzip or deflate")
        return body

    async def _received(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise InvalidRequest("the client went away before sending the whole body")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@dataclass(frozen=True, slots=True)
class Response:
    body: bytes
    status: int = 200
    content_type: bytes = b"application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()

    async def __call__(self, send: Send) -> None:
        headers = [
            (b"content-type", self.content_type),
            (b"content-length", str(len(self.body)).encode()),
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")
_REMEMBERED_PATHS = 1024
_REMEMBERED_PATH_CHARS = 256


@dataclass(slots=True)
class Router(Generic[T]):
    """Paths as tuples of segments; ``{name}`` segments bind parameters. What a
    route leads to (``T``) is the application's: a handler, or a handler and
    what it takes to call it."""

    _routes: list[tuple[tuple[str, ...], dict[str, T]]] = field(default_factory=list)
    # What (method, path) matched, for short paths: a request is matched twice
    # (at its headers by the screen, then by the handler), and the same few
    # paths come again and again. Bounded: emptied when full, so paths a
    # client makes up cost a scan, never memory. The parameters are shared:
    # handlers only read them.
    _found: dict[tuple[str, str], tuple[T | None, dict[str, str], bool]] = field(default_factory=dict)

    def add(self, method: str, pattern: str, handler: T) -> None:
        self._found.clear()
        segments = tuple(pattern.strip("/").split("/"))
        for existing, methods in self._routes:
            if existing == segments:
                methods[method] = handler
                return
        self._routes.append((segments, {method: handler}))

    def match(self, method: str, path: str) -> tuple[T | None, dict[str, str], bool]:
        """(handler, parameters, path known): the handler is None when the path
        is unknown (404) or the method is not allowed on it (405)."""
        key = (method, path)
        found = self._found.get(key)
        if found is None:
            found = self._scan(method, path)
            if len(path) <= _REMEMBERED_PATH_CHARS:
                if len(self._found) >= _REMEMBERED_PATHS:
                    self._found.clear()
                self._found[key] = found
        return found

    def _scan(self, method: str, path: str) -> tuple[T | None, dict[str, str], bool]:
        parts = path.strip("/").split("/")
        known = False
        for segments, methods in self._routes:
            if len(segments) != len(parts):
                continue
            params: dict[str, str] = {}
            for want, got in zip(segments, parts, strict=True):
                if want[0] == "{":
                    if not got:
                        break
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                known = True
                handler = methods.get(method)
                if handler is not None:
                    return handler, params, True
        return None, {}, known


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
