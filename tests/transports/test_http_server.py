"""turnout's HTTP/1.1 server on a real socket: keep-alive, pipelining,
100-continue, limits, malformed requests, shutdown; and its defences: header
limits, HEAD, Upgrade, Host, the screen, the gate, the body budget, flow
control, timeouts and the connection limit."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

from tests.support import eventually
from turnout.overload.budget import BodyBudget
from turnout.overload.connections import Connections
from turnout.overload.gate import FREE, Gate, OpenGate, Pass
from turnout.transports.http import HttpLimits, HttpServer, Screen, admit_all
from turnout.transports.rest.asgi import Response

Handled = list[tuple[str, str, bytes | None]]


@asynccontextmanager
async def serving(
    limit: int = 100,
    delay: float = 0.0,
    arrived: asyncio.Event | None = None,
    read_timeout: float | None = 30.0,
    limits: HttpLimits | None = None,
    screen: Screen = admit_all,
    gate: Gate | None = None,
    budget: BodyBudget | None = None,
    connections: Connections | None = None,
    reply: bytes = b"",
) -> AsyncIterator[tuple[int, Handled, HttpServer]]:
    handled: Handled = []

    async def handle(method: str, path: str, headers: dict[bytes, bytes], body: bytes | None, source: str) -> Response:
        handled.append((method, path, body))
        if arrived is not None:
            arrived.set()
        if delay:
            await asyncio.sleep(delay)  # a slow handler, to have requests in flight
        if path == "/post-only" and method != "POST":
            return Response(b'{"error":"not allowed"}', 405)
        return Response(reply or b'{"echo":"%s"}' % path.encode(), 200 if body is not None else 413)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    if read_timeout is not None:
        limits = replace(limits or HttpLimits(), read_timeout=read_timeout)
    server = HttpServer(
        handle,
        limit,
        limits=limits,
        screen=screen,
        gate=gate,
        budget=budget,
        connections=connections,
    )
    await server.start(sock)
    try:
        yield sock.getsockname()[1], handled, server
    finally:
        await server.shutdown(1.0)


async def exchange(port: int, data: bytes, until: Callable[[bytes], bool]) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    received = b""
    while not until(received):
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        received += chunk
    writer.close()
    return received


async def read_response(reader: asyncio.StreamReader, head: bool = False) -> tuple[bytes, bytes]:
    """One response: its head, and its body (none after a HEAD request)."""
    head_bytes = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head_bytes.split(b"content-length: ")[1].split(b"\r\n")[0])
    body = b"" if head else await asyncio.wait_for(reader.readexactly(length), 5)
    return head_bytes, body


async def closed(reader: asyncio.StreamReader, within: float = 5.0) -> bytes:
    """What the server sent before closing the connection (it must close)."""
    return await asyncio.wait_for(reader.read(), within)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


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


def test_a_request_that_trickles_in_is_cut_off_with_408() -> None:
    """A slowloris client (headers, then a body that never finishes) gets 408 and
    loses the connection when the read timeout passes; nothing reaches the handler."""

    async def scenario() -> None:
        async with serving(read_timeout=0.3) as (port, handled, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n0123456789")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)  # read() returns when the server closes
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
            assert b"did not arrive within 0.3 s" in answer
            assert handled == []
            writer.close()
            # a request that arrives whole in time is unaffected
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for path in (b"/fast", b"/again"):
                writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200")
                length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
                assert await reader.readexactly(length) == b'{"echo":"%s"}' % path
                await asyncio.sleep(0.5)  # idle between requests is not a slow request
            writer.close()

    asyncio.run(scenario())


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


# --- the screen, the gate, the body budget


def refuse_secret(method: str, path: str, headers: dict[bytes, bytes], peer: str) -> Response | None:
    assert peer.startswith("127.0.0.1:")
    if path == "/secret" and headers.get(b"authorization") != b"Bearer ok":
        return Response(b'{"error":"who are you"}', 401)
    return None


def test_a_screened_request_never_gets_100_continue() -> None:
    async def scenario() -> None:
        async with serving(screen=refuse_secret) as (port, handled, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /secret HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
            answer = await closed(reader)  # answered and closed: the client might send the body or not
            assert answer.startswith(b"HTTP/1.1 401") and b"100 Continue" not in answer
            writer.close()
            # with the credential: 100 Continue, then the answer
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /secret HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ok\r\nContent-Length: 3\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 100")
            writer.write(b"abc")
            assert (await read_response(reader))[0].startswith(b"HTTP/1.1 200")
            writer.close()
        assert handled == [("POST", "/secret", b"abc")]

    run(scenario)


def test_a_screened_request_keeps_its_turn_and_its_body_is_dropped() -> None:
    async def scenario() -> None:
        async with serving(screen=refuse_secret, delay=0.05) as (port, handled, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /secret HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"  # small: dropped
                b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            answers = [await read_response(reader) for _ in range(3)]
            assert [head[:12] for head, _ in answers] == [b"HTTP/1.1 200", b"HTTP/1.1 401", b"HTTP/1.1 200"]
            # a large declared body is not read at all: answered, and the connection closed
            writer.write(b"POST /secret HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
            answer = await closed(reader)
            assert answer.startswith(b"HTTP/1.1 401") and b"connection: close" in answer
            writer.close()
        assert handled == [("GET", "/first", b""), ("GET", "/third", b"")]

    run(scenario)


class CountingGate:
    """Sheds ``/busy``; counts the passes given and left."""

    retry_after = 7

    def __init__(self) -> None:
        self.entered = 0
        self.left = 0
        self.most = 0

    def enter(self, path: str) -> Pass | None:
        if path == "/busy":
            return None
        self.entered += 1
        self.most = max(self.most, self.entered - self.left)
        gate = self

        class _Pass:
            done = False

            def leave(self) -> None:
                assert not self.done, "left twice"
                self.done = True
                gate.left += 1

        return _Pass()


def test_the_gate_sheds_with_503_and_every_pass_is_left_once() -> None:
    async def scenario() -> None:
        gate = CountingGate()
        async with serving(gate=gate) as (port, handled, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /busy HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
                b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            answers = [await read_response(reader) for _ in range(3)]
            shed_head, shed_body = answers[1]
            assert shed_head.startswith(b"HTTP/1.1 503") and b"retry-after: 7\r\n" in shed_head
            assert b"capacity" in shed_body
            # a request cut off by the connection's loss leaves too
            writer.write(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf")
            await writer.drain()
            await eventually(lambda: gate.entered == 3, "the third request let in")
            writer.close()
            await eventually(lambda: gate.left == 3, "its pass given back")
        assert [p for _, p, _ in handled] == ["/a", "/b"]
        assert gate.entered == gate.left == 3

    run(scenario)


def test_the_body_budget_refuses_with_503_and_gets_every_byte_back() -> None:
    async def scenario() -> None:
        budget = BodyBudget(100)
        async with serving(limit=1000, budget=budget) as (port, handled, _):
            # declared past what the budget has left: refused before it is read
            answer = await exchange(
                port, b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n", lambda r: False
            )
            assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer
            # chunked: refused when it passes the budget
            chunked = b"POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"40\r\n" + b"x" * 64
            answer = await exchange(port, chunked + b"\r\n40\r\n" + b"x" * 64 + b"\r\n0\r\n\r\n", lambda r: False)
            assert answer.startswith(b"HTTP/1.1 503")
            # within it: served, and the bytes are back once the handler is done
            request = b"POST /fits HTTP/1.1\r\nHost: x\r\nContent-Length: 90\r\n\r\n" + b"x" * 90
            assert (await exchange(port, request, lambda r: b"}" in r)).startswith(b"HTTP/1.1 200")
            # a body cut short by the connection's loss gives its bytes back
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /cut HTTP/1.1\r\nHost: x\r\nContent-Length: 90\r\n\r\nxx")
            await writer.drain()
            await eventually(lambda: budget.held == 90, "the declared body held")
            writer.close()
            await eventually(lambda: budget.held == 0, "every byte given back")
        assert [p for _, p, _ in handled] == ["/fits"]
        assert budget.held == 0

    run(scenario)


# --- flow control


def test_a_client_that_does_not_read_is_not_read_either() -> None:
    """Pipelined requests whose answers are never read: the server stops
    reading once its write buffer is full, so it holds a bounded amount, and
    gives up on the connection after ``write_timeout``."""

    async def scenario() -> None:
        limits = HttpLimits(write_timeout=0.5)
        async with serving(limits=limits, reply=b"x" * (4 << 20)) as (port, handled, _):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            request = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"
            for _ in range(200):  # one request per read on the server's side
                try:
                    sock.send(request)
                except BlockingIOError:
                    break  # the server stopped reading: our send buffer and its receive buffer are full
                except ConnectionResetError:
                    break  # on a slow machine this loop outlasts write_timeout: the server gave up already
                await asyncio.sleep(0.002)
            assert len(handled) <= 3, f"{len(handled)} answers of 4 MiB made for a client that reads none"
            await asyncio.sleep(1.0)  # past write_timeout: aborted
            sock.setblocking(True)
            sock.settimeout(5)
            try:
                while sock.recv(1 << 20):
                    pass
            except ConnectionResetError:
                pass
            sock.close()

    run(scenario)


def test_reading_pauses_while_pipelined_requests_wait() -> None:
    async def scenario() -> None:
        gate = CountingGate()  # passes are taken when a request's head has been read
        limits = HttpLimits(max_pipelined=4)
        async with serving(limits=limits, gate=gate, delay=0.02) as (port, handled, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for i in range(30):
                writer.write(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                await writer.drain()
                await asyncio.sleep(0.002)
            answers = [await read_response(reader) for _ in range(30)]
            assert answers[-1][1] == b'{"echo":"/p29"}'
            writer.close()
        assert len(handled) == 30
        assert gate.most <= 4 + 2, f"{gate.most} requests read ahead of their answers"

    run(scenario)


# --- timeouts and the connection limit


def test_idle_and_silent_connections_are_closed() -> None:
    async def scenario() -> None:
        limits = HttpLimits(keep_alive_timeout=0.3, head_timeout=0.3)
        async with serving(limits=limits) as (port, _, _):
            silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            await read_response(reader)
            slow_reader, slow = await asyncio.open_connection("127.0.0.1", port)
            slow.write(b"GET /x HTTP/1.1\r\nHost")  # a head that stops
            assert await closed(silent_reader, 2) == b""  # never sent a byte: closed after head_timeout
            assert await closed(reader, 2) == b""  # idle past keep_alive_timeout
            answer = await closed(slow_reader, 2)
            assert answer.startswith(b"HTTP/1.1 408") and b"headers did not arrive within 0.3 s" in answer
            for w in (silent, writer, slow):
                w.close()

    run(scenario)


def test_the_connection_limit_closes_the_longest_idle_connection() -> None:
    async def scenario() -> None:
        connections = Connections(3)
        arrived = asyncio.Event()
        async with serving(connections=connections, delay=0.5, arrived=arrived) as (port, _handled, _):
            first_reader, first = await asyncio.open_connection("127.0.0.1", port)
            await eventually(lambda: len(connections) == 1, "the first connection counted")
            others = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            await eventually(lambda: len(connections) == 3, "three connections counted")
            # one more: the silent one that came first makes room
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await closed(first_reader, 2) == b""
            writer.write(b"GET /served HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(arrived.wait(), 5)
            # the rest busy too: a newcomer evicts the idle ones, never a busy one
            for _, other in others:
                other.write(b"GET /busy HTTP/1.1\r\nHost: x\r\n\r\n")
            await eventually(lambda: len(_handled) == 3, "every connection busy")
            late_reader, late = await asyncio.open_connection("127.0.0.1", port)
            assert await closed(late_reader, 2) == b""  # refused: every connection is busy
            assert (await read_response(reader))[1] == b'{"echo":"/served"}'
            for other_reader, _ in others:
                assert (await read_response(other_reader))[0].startswith(b"HTTP/1.1 200")
            for w in (first, writer, late, *(o for _, o in others)):
                w.close()
            await eventually(lambda: len(connections) == 0, "every connection gone")

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


def test_limits_must_be_positive() -> None:
    try:
        HttpLimits(max_headers=0)
    except ValueError as exc:
        assert "max_headers" in str(exc)
    else:
        raise AssertionError("a zero limit was accepted")


def test_open_gate_admits_everything() -> None:
    assert OpenGate().enter("/x") is FREE


def test_a_head_that_starts_while_an_answer_is_pending_still_times_out() -> None:
    async def scenario() -> None:
        limits = HttpLimits(head_timeout=0.3)
        arrived = asyncio.Event()
        async with serving(limits=limits, delay=0.5, arrived=arrived) as (port, _, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(arrived.wait(), 5)
            writer.write(b"GET /next HTTP/1.1\r\nHo")  # and no more
            assert (await read_response(reader))[1] == b'{"echo":"/slow"}'
            answer = await closed(reader, 2)  # not the keep-alive timeout's 75 s
            assert answer.startswith(b"HTTP/1.1 408")
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
