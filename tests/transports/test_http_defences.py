"""turnout's HTTP/1.1 server's defences on a real socket: the screen, the
gate and the body budget; flow control against a client that does not read;
and timeouts (a request that trickles in, idle and silent connections) and the
connection limit. The server's requests and framing: test_http_server.py."""

from __future__ import annotations

import asyncio
import socket

from tests.support import eventually
from tests.transports.http1_support import closed, exchange, read_response, run, serving
from turnout.overload.budget import BodyBudget
from turnout.overload.connections import Connections
from turnout.overload.gate import FREE, OpenGate, Pass
from turnout.transports.http import HttpLimits
from turnout.transports.rest.asgi import Response

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


def test_open_gate_admits_everything() -> None:
    assert OpenGate().enter("/x") is FREE


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
