"""A remote endpoint set's attempts, against replicas written as raw asyncio
servers on loopback: a failed attempt retried on another replica within the
budget, a slow one hedged and the loser's connection dropped, a dead replica
ejected, and no attempt outliving the request's deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from tests.routing.remote.loop import run
from turnout.errors import DeadlineExceeded, Unavailable
from turnout.model.runtimes.base import Relayed
from turnout.routing.remote.endpoint_set import EndpointSet
from turnout.routing.remote.runtime import LoadedRemote
from turnout.routing.remote.settings import RemoteSettings

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
BUSY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy"


@dataclass
class Replica:
    """A replica whose answer to each request ``answer`` decides: bytes to
    send after a delay, or None to close the connection unanswered."""

    answer: Callable[[int], tuple[float, bytes | None]]
    requests: int = 0
    dropped: int = 0  # connections the gateway closed while a request waited
    port: int = 0
    server: asyncio.Server | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)  # of the inference requests

    async def start(self) -> Replica:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:  # each handler then reads the end of its stream and returns
            writer.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
                await reader.readexactly(length)
                if head.startswith(b"GET"):  # a health probe
                    writer.write(OK)
                    continue
                self.requests += 1
                self.heads.append(head)
                delay, answer = self.answer(self.requests)
                if delay:
                    try:
                        await asyncio.wait_for(reader.read(1), delay)  # b"" (EOF) when the gateway drops it
                        self.dropped += 1
                        return
                    except TimeoutError:
                        pass
                if answer is None:
                    return
                writer.write(answer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def settings(replicas: list[Replica], **changes: object) -> RemoteSettings:
    return RemoteSettings.model_validate({"replicas": [r.address for r in replicas], **changes})


async def with_set(
    answers: list[Callable[[int], tuple[float, bytes | None]]],
    scenario: Callable[[EndpointSet, list[Replica]], Awaitable[None]],
    **changes: object,
) -> None:
    replicas = [await Replica(answer).start() for answer in answers]
    endpoints = EndpointSet("model 'm' version 1", "/v2/models/m", settings(replicas, **changes))
    try:
        await asyncio.wait_for(scenario(endpoints, replicas), 30)
    finally:
        await endpoints.close()
        for replica in replicas:
            await replica.stop()


def send(endpoints: EndpointSet, within: float = 5.0) -> Awaitable[tuple[Relayed, str]]:
    return endpoints.exchange(b"/v2/models/m/infer", b"", b"{}", time.monotonic() + within)


def always(delay: float, answer: bytes | None) -> Callable[[int], tuple[float, bytes | None]]:
    return lambda _: (delay, answer)


def test_a_failed_attempt_is_retried_on_another_replica() -> None:
    async def scenario(endpoints: EndpointSet, replicas: list[Replica]) -> None:
        for _ in range(20):
            answer, replica = await send(endpoints)
            assert replica == replicas[1].address and answer.status == 200
        assert replicas[0].requests > 0  # it was tried, and each failure retried elsewhere

    run(with_set([always(0, BUSY), always(0, OK)], scenario, hedging={"enabled": False}))


def test_retries_stop_at_the_budget_so_they_cannot_multiply_an_outage() -> None:
    async def scenario(endpoints: EndpointSet, replicas: list[Replica]) -> None:
        failed = 0
        for _ in range(100):
            try:
                await send(endpoints)
            except Unavailable as exc:
                failed += 1
                assert "503 busy" in str(exc)
        extra = replicas[0].requests + replicas[1].requests - 100
        assert extra <= 10 + 5, extra  # 10% of 100 requests, plus the 5 a quiet window may spend
        assert failed >= 100 - extra

    busy = always(0, BUSY)
    changes = {"hedging": {"enabled": False}, "retries": {"budget_percent": 10, "min_per_second": 0.5},
               "ejection": {"consecutive_failures": 1000}}  # fmt: skip
    run(with_set([busy, busy], scenario, **changes))


def test_a_slow_attempt_is_hedged_and_the_loser_dropped() -> None:
    sent = 0

    def slow_sometimes(_: int) -> tuple[float, bytes | None]:  # one in ten of all, once 60 are known
        nonlocal sent
        sent += 1
        return (0.5 if sent > 60 and sent % 10 == 0 else 0.0), OK

    async def scenario(endpoints: EndpointSet, replicas: list[Replica]) -> None:
        for _ in range(60):  # enough answers for a p95
            await send(endpoints)
        took = []
        for _ in range(40):
            started = time.monotonic()
            await send(endpoints)
            took.append(time.monotonic() - started)
        assert max(took) < 0.25, f"a slow attempt was waited out: {max(took):.3f} s"
        await asyncio.sleep(0.1)
        assert sum(r.dropped for r in replicas) > 0  # the losers' connections were closed

    run(with_set([slow_sometimes, slow_sometimes, slow_sometimes], scenario))


def test_a_dead_replica_is_ejected_after_failing_in_a_row() -> None:
    async def scenario(endpoints: EndpointSet, replicas: list[Replica]) -> None:
        await replicas[0].stop()  # nothing listens there now
        for _ in range(30):
            _, replica = await send(endpoints)
            assert replica != replicas[0].address
        assert replicas[0].address not in endpoints.available(time.monotonic())

    changes = {"hedging": {"enabled": False}, "ejection": {"consecutive_failures": 3}}
    run(with_set([always(0, OK), always(0, OK), always(0, OK)], scenario, **changes))


def test_no_attempt_outlives_the_deadline() -> None:
    async def scenario(endpoints: EndpointSet, replicas: list[Replica]) -> None:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="in time"):
            await send(endpoints, within=0.2)
        assert time.monotonic() - started < 0.4
        await asyncio.sleep(0.1)
        assert replicas[0].dropped + replicas[1].dropped >= 1  # the replica saw its request given up

    run(with_set([always(2.0, OK), always(2.0, OK)], scenario, hedging={"enabled": False}))


def test_replicas_named_by_dns_answer_from_the_first_request() -> None:
    async def scenario() -> None:
        replica = await Replica(always(0, OK)).start()
        named = RemoteSettings.model_validate({"dns": f"localhost:{replica.port}"})
        endpoints = EndpointSet("model 'm' version 1", "/v2/models/m", named)
        try:
            answer, address = await send(endpoints)  # resolved on the way: not "no replica is known yet"
            assert answer.status == 200 and address.endswith(f":{replica.port}")
            assert f"127.0.0.1:{replica.port}" in endpoints.replicas()
        finally:
            await endpoints.close()
            await replica.stop()

    run(scenario())


def test_a_body_passed_on_unread_carries_what_is_left_of_its_deadline() -> None:
    async def scenario(endpoints: EndpointSet, replicas: list[Replica]) -> None:
        model = LoadedRemote(endpoints, "/v2/models/m", settings(replicas), None)
        answer = await model.forward(b"{}", None, time.monotonic() + 2.0)
        assert answer.status == 200
        (head,) = replicas[0].heads
        left = int(head.split(b"turnout-timeout-us: ")[1].split(b"\r\n")[0])
        assert 1_500_000 < left <= 2_000_000  # microseconds, as grpc-timeout carries it
        assert b"content-type: application/json" in head

    run(with_set([always(0, OK)], scenario))


def test_an_ejected_replica_is_back_once_its_time_out_ends() -> None:
    """What ``available`` found is kept between requests: a replica's return at
    the end of its ejection must still be seen, with no other change to say so."""
    now = [1000.0]

    async def scenario() -> None:
        replicas = [await Replica(always(0, BUSY)).start(), await Replica(always(0, OK)).start()]
        changes = {"hedging": {"enabled": False}, "ejection": {"consecutive_failures": 1, "base_seconds": 30}}
        endpoints = EndpointSet(
            "model 'm' version 1", "/v2/models/m", settings(replicas, **changes), clock=lambda: now[0]
        )
        try:
            while replicas[0].requests == 0:  # the balancer's draw: until one went to the failing replica
                _, replica = await send(endpoints)
                assert replica == replicas[1].address  # retried there
            assert endpoints.available(now[0]) == [replicas[1].address]
            now[0] += 29.0
            assert endpoints.available(now[0]) == [replicas[1].address]
            now[0] += 2.0
            assert endpoints.available(now[0]) == [replicas[0].address, replicas[1].address]
        finally:
            await endpoints.close()
            for replica in replicas:
                await replica.stop()

    run(scenario())


def test_a_replica_that_refuses_connections_is_left_out_at_once() -> None:
    """Down, not slow: one refused connection leaves it out until a probe passes,
    without the failures in a row ejection needs (and whatever else is ejected)."""

    async def scenario(endpoints: EndpointSet, replicas: list[Replica]) -> None:
        await send(endpoints)  # the first request starts the probes; the next is a minute away
        await replicas[0].stop()
        sent = 0
        while replicas[0].address in endpoints.available(time.monotonic()):
            assert sent < 30, "still in the set after 30 requests"
            _, replica = await send(endpoints)  # retried on another when it went there
            assert replica != replicas[0].address
            sent += 1

    changes = {"hedging": {"enabled": False}, "ejection": {"consecutive_failures": 100},
               "health": {"interval_seconds": 60}, "max_idle_connections": 0}  # fmt: skip
    run(with_set([always(0, OK), always(0, OK), always(0, OK)], scenario, **changes))
