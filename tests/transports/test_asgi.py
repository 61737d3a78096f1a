"""The small ASGI layer under the REST transport: routing, bodies, responses."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import pytest

from turnout.errors import InvalidRequest, PayloadTooLarge
from turnout.transports.rest.asgi import Request, Response, Router


async def _handler(request: Request) -> Response:
    return Response(b"")


async def _other(request: Request) -> Response:
    return Response(b"other")


def test_router_binds_parameters_and_tells_405_from_404() -> None:
    router = Router()
    router.add("POST", "/v2/models/{model}/infer", _handler)
    router.add("POST", "/v2/models/{model}/versions/{version}/infer", _other)
    router.add("GET", "/v2", _other)

    handler, params, known = router.match("POST", "/v2/models/m1/versions/3/infer")
    assert handler is _other and params == {"model": "m1", "version": "3"} and known
    handler, params, known = router.match("POST", "/v2/models/m1/infer")
    assert handler is _handler and params == {"model": "m1"}
    assert router.match("GET", "/v2/models/m1/infer") == (None, {}, True)  # 405
    assert router.match("POST", "/v2/models/m1/nope") == (None, {}, False)  # 404
    assert router.match("POST", "/v2/models//infer") == (None, {}, False)  # an empty name binds nothing
    assert router.match("GET", "/v2/")[0] is _other


def test_router_remembers_what_short_paths_matched_until_a_route_is_added() -> None:
    router = Router()
    router.add("POST", "/v2/models/{model}/infer", _handler)
    first = router.match("POST", "/v2/models/m1/infer")
    assert router.match("POST", "/v2/models/m1/infer") is first  # remembered, not scanned again
    router.add("POST", "/v2/models/{model}/infer", _other)  # a new route forgets what matched
    assert router.match("POST", "/v2/models/m1/infer")[0] is _other
    for n in range(5000):  # a client making up paths: each still matched right
        assert router.match("POST", f"/v2/models/m{n}/infer")[1] == {"model": f"m{n}"}
    long = "/v2/models/" + "m" * 300 + "/infer"
    assert router.match("POST", long) is not router.match("POST", long)  # too long to remember


def _receiver(*chunks: bytes, disconnect: bool = False) -> Any:
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    if disconnect:
        messages = [{"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


def _request(receive: Any, **headers: bytes) -> Request:
    return Request("POST", "/", {k.replace("_", "-").encode(): v for k, v in headers.items()}, {}, receive)


def test_body_is_joined_from_chunks_and_limited() -> None:
    assert asyncio.run(_request(_receiver(b"ab", b"cd")).body(10)) == b"abcd"
    with pytest.raises(PayloadTooLarge):
        asyncio.run(_request(_receiver(b"abc", b"def")).body(5))
    with pytest.raises(PayloadTooLarge, match="of 99 bytes"):
        asyncio.run(_request(_receiver(b""), content_length=b"99").body(5))
    with pytest.raises(InvalidRequest, match="went away"):
        asyncio.run(_request(_receiver(disconnect=True)).body(5))


def test_body_is_inflated_with_the_same_limit() -> None:
    packed = gzip.compress(b"x" * 100)
    assert asyncio.run(_request(_receiver(packed), content_encoding=b"gzip").body(100)) == b"x" * 100
    with pytest.raises(PayloadTooLarge, match="decompressed"):
        asyncio.run(_request(_receiver(packed), content_encoding=b"gzip").body(99))
    with pytest.raises(InvalidRequest, match="Content-Encoding 'br'"):
        asyncio.run(_request(_receiver(b"x"), content_encoding=b"br").body(99))


def test_response_is_two_asgi_messages() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(Response(b"{}", 404, headers=((b"retry-after", b"1"),))(send))
    assert sent[0] == {
        "type": "http.response.start",
        "status": 404,
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"2"), (b"retry-after", b"1")],
    }
    assert sent[1] == {"type": "http.response.body", "body": b"{}"}
