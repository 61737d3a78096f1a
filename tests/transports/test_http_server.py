"""turnout's HTTP/1.1 server on a real socket: keep-alive, pipelining,
100-continue, the body limit, malformed requests, shutdown and half-closed
clients; and what it refuses before a request is handled: header limits (431,
414), HEAD, Upgrade, Host and ambiguous body framing. The doors, flow control,
timeouts and the connection limit: test_http_defences.py."""

from __future__ import annotations

import asyncio

from tests.transports.http1_support import closed, exchange, read_response, run, serving
from turnout.transports.http import HttpLimits


def test_pipelined_requests_are_answered_in_order() -> None:
    async def scenario() -> None:
        async with serving() as (port, handled, _):
            requests = b"".join(b"POST /a%d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi" % i for i in range(3))
            reply = await exchange(port, requests, lambda r: r.count(b"HTTP/1.1 200") == 3)
        assert [h[1] for h in handled] == ["/a0", "/a1", "/a2"]
        assert reply.index(b'"/a0"') < reply.index(b'"/a1"') < reply.index(b'"/a2"')
        assert all(body == b"hi" for _, _, body in handled)

    run(scenario)


def test_expect_100_continue() -> None:
    async def scenario() -> None:
        async with serving() as (port, handled, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 100")
            writer.write(b"abc")
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
            writer.close()
        assert handled == [("POST", "/x", b"abc")]

    run(scenario)


def test_a_body_over_the_limit_reaches_the_handler_as_none() -> None:
    async def scenario() -> None:
        async with serving(limit=10) as (port, handled, _):
            declared = b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n" + b"x" * 11
            assert (await exchange(port, declared, lambda r: b"\r\n\r\n" in r)).startswith(b"HTTP/1.1 413")
            chunked = (
                b"POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"6\r\nxxxxxx\r\n6\r\nxxxxxx\r\n0\r\n\r\n"
            )
            assert (await exchange(port, chunked, lambda r: b"\r\n\r\n" in r)).startswith(b"HTTP/1.1 413")
        assert handled == [("POST", "/big", None), ("POST", "/chunks", None)]

    run(scenario)


def test_a_malformed_request_gets_400_and_the_connection_closes() -> None:
    async def scenario() -> None:
        async with serving() as (port, handled, _):
            reply = await exchange(port, b"NOT HTTP AT ALL\r\n\r\n", lambda r: False)
        assert reply.startswith(b"HTTP/1.1 400")
        assert b"connection: close" in reply
        assert handled == []

    run(scenario)


def test_connection_close_is_honoured() -> None:
    async def scenario() -> None:
        async with serving() as (port, _, _):
            request = b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            reply = await exchange(port, request, lambda r: False)  # reads until the server closes
        assert reply.startswith(b"HTTP/1.1 200") and b"connection: close" in reply

    run(scenario)


def test_shutdown_finishes_the_request_in_flight() -> None:
    async def scenario() -> None:
        arrived = asyncio.Event()
        async with serving(delay=0.2, arrived=arrived) as (port, _, server):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(arrived.wait(), 5)
            await server.shutdown(5.0)
            reply = await asyncio.wait_for(reader.read(), 5)  # the answer, then the close
            writer.close()
        assert reply.startswith(b"HTTP/1.1 200") and b"connection: close" in reply

    run(scenario)


def test_a_half_closed_client_gets_its_answers() -> None:
    async def scenario() -> None:
        async with serving() as (port, _, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
            writer.write_eof()
            answer = await closed(reader)
            assert answer.count(b"HTTP/1.1 200") == 2 and answer.endswith(b'{"echo":"/b"}')
            writer.close()

    run(scenario)


def test_100_continue_waits_for_the_answers_before_it() -> None:
    """Sent while an earlier request is answered, it would be read as that
    request's interim response."""

    async def scenario() -> None:
        arrived = asyncio.Event()
        async with serving(delay=0.3, arrived=arrived) as (port, handled, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(arrived.wait(), 5)
            writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 200") and body == b'{"echo":"/slow"}'
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 100")
            writer.write(b"abc")
            assert (await read_response(reader))[1] == b'{"echo":"/x"}'
            writer.close()
        assert handled[-1] == ("POST", "/x", b"abc")

    run(scenario)


# --- header limits (431, 414), before the bytes reach the parser


SMALL = HttpLimits(max_head_bytes=1024, max_headers=10, max_url_bytes=100)


def test_a_head_over_its_byte_limit_gets_431_and_the_connection_closes() -> None:
    async def scenario() -> None:
        async with serving(limits=SMALL) as (port, handled, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # one header line that never ends: refused once the limit's worth has arrived
            writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 2000)
            answer = await closed(reader)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
            assert b"exceed 1024 bytes" in answer and b"connection: close" in answer
            # many complete lines that add up past it, in one write
            lines = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 150) for i in range(8))
            answer = await exchange(port, b"GET /x HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n", lambda r: False)
            assert answer.startswith(b"HTTP/1.1 431")
            # a head just under it is served
            ok = b"GET /x HTTP/1.1\r\nHost: x\r\nX-Fine: " + b"a" * 900 + b"\r\n\r\n"
            assert (await exchange(port, ok, lambda r: b"}" in r)).startswith(b"HTTP/1.1 200")
        assert handled == [("GET", "/x", b"")]

    run(scenario)


def test_too_many_headers_get_431() -> None:
    async def scenario() -> None:
        async with serving(limits=SMALL) as (port, handled, _):
            lines = b"".join(b"X-%d: v\r\n" % i for i in range(10))  # 11 with Host
            answer = await exchange(port, b"GET /x HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n", lambda r: False)
            assert answer.startswith(b"HTTP/1.1 431") and b"more than 10 header fields" in answer
        assert handled == []

    run(scenario)


def test_a_long_url_gets_414() -> None:
    async def scenario() -> None:
        async with serving(limits=SMALL) as (port, handled, _):
            answer = await exchange(port, b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: x\r\n\r\n", lambda r: False)
            assert answer.startswith(b"HTTP/1.1 414 URI Too Long")
        assert handled == []

    run(scenario)


def test_limits_must_be_positive() -> None:
    try:
        HttpLimits(max_headers=0)
    except ValueError as exc:
        assert "max_headers" in str(exc)
    else:
        raise AssertionError("a zero limit was accepted")


# --- HEAD, Upgrade, Host, framing


def test_head_is_answered_as_get_without_a_body() -> None:
    """Every answer to HEAD has GET's headers and no body, refusals included,
    so the next answer on the connection is read where the client expects it."""

    async def scenario() -> None:
        async with serving() as (port, handled, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n"
                b"HEAD /post-only HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            head, body = await read_response(reader, head=True)
            assert head.startswith(b"HTTP/1.1 200") and b"content-length: 13\r\n" in head  # {"echo":"/x"}
            head, body = await read_response(reader, head=True)
            assert head.startswith(b"HTTP/1.1 405")
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 200") and body == b'{"echo":"/after"}'
            writer.close()
        assert [(m, p) for m, p, _ in handled] == [("GET", "/x"), ("GET", "/post-only"), ("GET", "/after")]

    run(scenario)


def test_an_upgrade_is_ignored_and_the_request_served_as_http_1_1() -> None:
    """h2c (``curl --http2``): the request is answered over HTTP/1.1, its body
    (when it has one) parsed as usual, and the connection goes on."""

    async def scenario() -> None:
        async with serving() as (port, handled, _):
            upgrade = (
                b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
            )
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /plain HTTP/1.1\r\nHost: x\r\n" + upgrade + b"\r\n")
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 200") and body == b'{"echo":"/plain"}'
            writer.write(b"POST /sized HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n" + upgrade + b"\r\nhello")
            writer.write(b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + upgrade + b"\r\n")
            writer.write(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            for path in (b"/sized", b"/chunked", b"/next"):
                head, body = await read_response(reader)
                assert head.startswith(b"HTTP/1.1 200") and body == b'{"echo":"%s"}' % path
            writer.close()
        assert handled == [("GET", "/plain", b""), ("POST", "/sized", b"hello"), ("POST", "/chunked", b"abcde"),
                           ("GET", "/next", b"")]  # fmt: skip

    run(scenario)


def test_http_1_1_needs_exactly_one_host() -> None:
    async def scenario() -> None:
        async with serving() as (port, handled, _):
            for request in (
                b"GET /none HTTP/1.1\r\n\r\n",
                b"GET /two HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                b"GET /two HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n",
            ):
                answer = await exchange(port, request, lambda r: False)
                assert answer.startswith(b"HTTP/1.1 400") and b"Host" in answer, request
            answer = await exchange(port, b"GET /old HTTP/1.0\r\n\r\n", lambda r: False)  # 1.0 needs none
            assert answer.startswith(b"HTTP/1.1 200")
        assert handled == [("GET", "/old", b"")]

    run(scenario)


def test_ambiguous_body_framing_gets_400() -> None:
    """llhttp refuses what request smuggling needs; the server keeps those 400s."""

    async def scenario() -> None:
        async with serving() as (port, handled, _):
            for framing in (
                b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                b"Content-Length: 3\r\nContent-Length: 4\r\n",
                b"Transfer-Encoding: chunked, gzip\r\n",
                b"Transfer-Encoding: gzip\r\n",
            ):
                request = b"POST /x HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n0\r\n\r\n"
                answer = await exchange(port, request, lambda r: False)
                assert answer.startswith(b"HTTP/1.1 400"), framing
        assert handled == []

    run(scenario)
