"""turnout's HTTP/2 server against a hostile client that holds on to its
resources, in process: a client that never reads (over TCP and over TLS) or
gives no window, the preface and idle timeouts, the connection limit, and the
doors (screen, gate, body budget) that decide which streams run and which
bytes are held; with a raw client on a real socket and limits tight enough
that each test takes moments. Breaking the protocol: test_http2_defences.py."""

from __future__ import annotations

import asyncio
import ssl

import grpc
import pytest

from tests.security.certs import Pki, make_pki
from tests.transports.http2_defence_support import answered
from tests.transports.test_http2_server import BIG, BIG_REPLY, ECHO, SLOW, RawClient, echo_call, run, serving
from turnout.overload.budget import BodyBudget
from turnout.overload.connections import Connections
from turnout.security.tls import TlsSettings, server_context
from turnout.transports.grpc import wire
from turnout.transports.http2 import frames as f
from turnout.transports.http2.limits import Http2Limits
from turnout.transports.http2.server import Reply

# the client's reading pace


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("over", ["tcp", "tls"])
def test_a_client_that_never_reads_is_not_read_either(over: str, pki: Pki) -> None:
    """2 MiB replies to tiny requests, never read: once the write buffer is
    full the server stops reading, so later requests wait in the socket, not
    in the server; when the client reads, everything is answered. Over TLS
    too, whose transport pauses and resumes from inside its own writes."""

    async def scenario() -> None:
        server_tls = client_tls = None
        if over == "tls":
            server_tls = server_context(TlsSettings(pki.server.cert, pki.server.key), "h2")
            client_tls = ssl.create_default_context(cafile=pki.ca)
            client_tls.set_alpn_protocols(["h2"])
        async with serving(tls=server_tls) as (port, service, _):
            client = await RawClient.connect(port, window=f.MAX_WINDOW, tls=client_tls)
            client.send(f.window_update(0, f.MAX_WINDOW - f.DEFAULT_WINDOW))
            stream_id = 1
            for _ in range(3):
                for _ in range(10):
                    client.call(stream_id, b"", BIG)
                    stream_id += 2
                await asyncio.sleep(0.3)
            assert len(service.bodies) <= 12  # the first round (replies to 20 MiB), not the others
            received = 0
            answered = 0
            while answered < 30:
                kind, flags, _, payload = await client.frame()
                received += len(payload) if kind == f.DATA else 0
                answered += kind == f.HEADERS and flags & f.END_STREAM
            assert received == 30 * len(BIG_REPLY)
            client.close()

    run(scenario)


def test_a_client_that_never_reads_is_dropped_after_the_write_timeout() -> None:
    async def scenario() -> None:
        async with serving(limits=Http2Limits(write_timeout=0.3)) as (port, _, _):
            client = await RawClient.connect(port, window=f.MAX_WINDOW)
            client.send(f.window_update(0, f.MAX_WINDOW - f.DEFAULT_WINDOW))
            for stream_id in range(1, 21, 2):
                client.call(stream_id, b"", BIG)
            await asyncio.sleep(1.0)
            assert await client.closed()  # what it did get, then a reset: not the 20 MiB

    run(scenario)


def test_a_reply_the_client_gives_no_window_for_is_reset_after_the_write_timeout() -> None:
    async def scenario() -> None:
        async with serving(limits=Http2Limits(write_timeout=0.3)) as (port, _, _):
            client = await RawClient.connect(port, window=0)
            client.call(1, b"held back")
            assert await client.reset_code(1) == f.CANCEL
            client.close()

    run(scenario)


# timeouts and the connection limit


def test_a_connection_without_preface_is_closed_after_the_preface_timeout() -> None:
    async def scenario() -> None:
        async with serving(limits=Http2Limits(preface_timeout=0.3)) as (port, _, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f.PREFACE)  # and no SETTINGS
            assert await RawClient(reader, writer).closed(timeout=3)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await RawClient(reader, writer).closed(timeout=3)

    run(scenario)


def test_an_idle_connection_goes_away_after_the_idle_timeout() -> None:
    async def scenario() -> None:
        async with serving(limits=Http2Limits(idle_timeout=0.3)) as (port, service, _):
            client = await RawClient.connect(port)
            client.call(1, b"x", SLOW)  # an open stream: not idle, however long
            await asyncio.sleep(0.6)
            service.release.set()
            _, data = await client.until(f.DATA, 1)
            assert data == wire.frame(b"x")
            assert await client.goaway() == f.NO_ERROR
            assert await client.closed()

    run(scenario)


def test_the_connection_limit_closes_the_longest_idle_connection() -> None:
    async def scenario() -> None:
        connections = Connections(3)
        async with serving(connections=connections) as (port, _, _):
            busy = await RawClient.connect(port)
            busy.call(1, b"x", SLOW)
            await asyncio.sleep(0.1)
            silent = [RawClient(*await asyncio.open_connection("127.0.0.1", port)) for _ in range(2)]
            await asyncio.sleep(0.1)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                assert await echo_call(channel)(b"let in", timeout=5) == b"let in"
            assert await silent[0].closed(timeout=2)  # the longest idle made room
            assert not await silent[1].closed(timeout=0.2)
            busy.send(f.frame(f.PING, 0, 0, bytes(8)))
            await busy.until(f.PING)  # a connection with a call in progress is never closed to make room
            for client in (busy, *silent):
                client.close()

    run(scenario)


# the doors: screen, gate, body budget


class CountingGate:
    """Admits up to ``room`` streams at once; counts what enters and leaves."""

    retry_after = 1

    def __init__(self, room: int) -> None:
        self.room = room
        self.inside = 0
        self.entered = 0

    def enter(self, path: str) -> CountingGate.Ticket | None:
        if self.inside >= self.room:
            return None
        self.inside += 1
        self.entered += 1
        return CountingGate.Ticket(self)

    class Ticket:
        def __init__(self, gate: CountingGate) -> None:
            self.gate = gate
            self.left = False

        def leave(self) -> None:
            assert not self.left, "left twice"
            self.left = True
            self.gate.inside -= 1


SHED = Reply(wire.error_head(wire.Status.RESOURCE_EXHAUSTED, "overloaded"))


def test_the_gate_sheds_at_the_headers_and_every_pass_is_left() -> None:
    async def scenario() -> None:
        gate = CountingGate(room=1)
        async with serving(gate=gate, shed=SHED, read_timeout=0.3) as (port, service, _):
            client = await RawClient.connect(port)
            client.call(1, b"x", SLOW)
            await asyncio.sleep(0.1)
            client.request(3)  # the gate is full: shed at its headers
            flags, _ = await client.until(f.HEADERS, 3)
            assert flags & f.END_STREAM and client.headers["grpc-status"] == str(int(wire.Status.RESOURCE_EXHAUSTED))
            assert await client.reset_code(3) == f.NO_ERROR  # its body is not wanted
            client.send(f.rst_stream(1, f.CANCEL))  # reset: its pass is left
            await answered(client, 5, b"answered")
            client.request(7)  # never finished: the read timeout
            assert await client.reset_code(7) == f.CANCEL
            client.call(9, b"x", SLOW)  # in progress when the connection goes
            await asyncio.sleep(0.1)
            client.close()
            await asyncio.sleep(0.2)
            assert gate.inside == 0 and gate.entered == 4
            assert len(service.bodies) == 3  # 1, 5 and 9: never the shed one

    run(scenario)


def test_without_a_shed_reply_a_gate_refuses_with_refused_stream() -> None:
    async def scenario() -> None:
        async with serving(gate=CountingGate(room=0)) as (port, service, _):
            client = await RawClient.connect(port)
            client.call(1, b"x")
            assert await client.reset_code(1) == f.REFUSED_STREAM
            assert service.bodies == []
            client.close()

    run(scenario)


def test_the_screen_sees_the_headers_and_the_peer() -> None:
    async def scenario() -> None:
        seen: list[tuple[str, str]] = []

        def screen(headers: dict[str, str], peer: str) -> Reply | None:
            seen.append((headers[":path"], peer))
            return None

        async with serving(screen=screen) as (port, _, _):
            client = await RawClient.connect(port)
            await answered(client, 1, b"x")
            local = client.writer.get_extra_info("sockname")
            assert seen == [(ECHO, f"{local[0]}:{local[1]}")]
            client.close()

    run(scenario)


def test_request_bodies_are_held_against_the_budget_and_given_back() -> None:
    async def scenario() -> None:
        budget = BodyBudget(1000)
        async with serving(budget=budget, shed=SHED, read_timeout=0.3) as (port, service, _):
            client = await RawClient.connect(port)
            client.request(1)
            client.send(f.frame(f.DATA, 0, 1, b"a" * 600))
            client.request(3)
            client.send(f.frame(f.DATA, 0, 3, b"b" * 600))  # 1,200 > 1,000: shed, its body dropped
            await client.until(f.HEADERS, 3)
            assert client.headers["grpc-status"] == str(int(wire.Status.RESOURCE_EXHAUSTED))
            assert budget.held == 600
            client.send(f.rst_stream(1, f.CANCEL))  # reset: given back
            await answered(client, 5, b"fits")
            assert budget.held == 0
            client.request(7)
            client.send(f.frame(f.DATA, 0, 7, b"c" * 500))
            assert await client.reset_code(7) == f.CANCEL  # the read timeout: given back
            assert budget.held == 0
            client.request(9)
            client.send(f.frame(f.DATA, 0, 9, b"d" * 500))
            await asyncio.sleep(0.1)
            assert budget.held == 500
            client.close()  # connection lost: given back
            await asyncio.sleep(0.2)
            assert budget.held == 0
            assert service.bodies == [wire.frame(b"fits")]

    run(scenario)
