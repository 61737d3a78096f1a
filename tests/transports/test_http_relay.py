"""The HTTP/1.1 server's relay (``Relay``): requests a handler takes and answers
by callbacks, without a task (a gateway's REST bodies passed on unread), on a
real socket. Their answers keep their turn among pipelined requests, a relay
that declines leaves the request whole to ``handle``, a drain waits for a
relayed answer, and a client gone before it leaves nothing held."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.transports.http1_support import closed, exchange, read_response, run, serving
from turnout.overload.budget import BodyBudget
from turnout.transports.rest.asgi import Response

Relayed = list[tuple[str, bytes]]


def relaying(taken: Relayed, delay: float | None = 0.05, arrived: asyncio.Event | None = None) -> Callable[..., bool]:
    """A relay taking the paths under /relay: answered ``delay`` seconds later
    (None: at once, before it returns); ``arrived`` is set as it takes one."""

    def relay(method: str, path: str, headers: dict[bytes, bytes], body: bytes,
              answer: Callable[[Response], None]) -> bool:  # fmt: skip
        if not path.startswith("/relay"):
            return False
        taken.append((path, body))
        if arrived is not None:
            arrived.set()
        response = Response(b'{"relayed":"%s"}' % path.encode())
        if delay is None:
            answer(response)
        else:
            asyncio.get_running_loop().call_later(delay, answer, response)
        return True

    return relay


def post(path: str) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi" % path.encode()


def test_answers_keep_their_turn_behind_and_after_a_relayed_request() -> None:
    async def scenario() -> None:
        taken: Relayed = []
        async with serving(relay=relaying(taken)) as (port, handled, _):
            requests = post("/relay0") + post("/a1") + post("/relay2") + post("/a3")
            reply = await exchange(port, requests, lambda r: r.count(b"HTTP/1.1 200") == 4)
            # a connection with nothing before its request: relayed again
            again = await exchange(port, post("/relay4"), lambda r: b"HTTP/1.1 200" in r)
        order = [reply.index(b'"/relay0"'), reply.index(b'"/a1"'), reply.index(b'"/relay2"'), reply.index(b'"/a3"')]
        assert order == sorted(order)
        # Only a request with no answer before it is relayed; those behind it are handled in turn.
        assert taken == [("/relay0", b"hi"), ("/relay4", b"hi")]
        assert [h[1] for h in handled] == ["/a1", "/relay2", "/a3"]
        assert b'"/relay4"' in again

    run(scenario)


def test_a_relay_may_answer_before_it_returns() -> None:
    async def scenario() -> None:
        taken: Relayed = []
        async with serving(relay=relaying(taken, delay=None)) as (port, handled, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for index in range(3):  # kept alive: each answered at once, the next read after it
                writer.write(post(f"/relay{index}"))
                head, body = await read_response(reader)
                assert head.startswith(b"HTTP/1.1 200") and body == b'{"relayed":"/relay%d"}' % index
            writer.close()
        assert len(taken) == 3 and not handled

    run(scenario)


def test_a_declined_request_reaches_the_handler_whole() -> None:
    async def scenario() -> None:
        taken: Relayed = []
        async with serving(relay=relaying(taken)) as (port, handled, _):
            reply = await exchange(port, post("/elsewhere"), lambda r: b"HTTP/1.1 200" in r)
        assert not taken and handled == [("POST", "/elsewhere", b"hi")]
        assert b'"/elsewhere"' in reply

    run(scenario)


def test_shutdown_waits_for_a_relayed_answer() -> None:
    async def scenario() -> None:
        taken: Relayed = []
        arrived = asyncio.Event()
        async with serving(relay=relaying(taken, 0.3, arrived)) as (port, _, server):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post("/relay-slow"))
            await asyncio.wait_for(arrived.wait(), 5)
            await server.shutdown(5.0)
            reply = await closed(reader)  # the answer, then the close
            writer.close()
        assert reply.startswith(b"HTTP/1.1 200") and b"connection: close" in reply and b"/relay-slow" in reply

    run(scenario)


def test_a_client_gone_before_its_relayed_answer_leaves_nothing_held() -> None:
    async def scenario() -> None:
        taken: Relayed = []
        budget = BodyBudget(1000)
        arrived = asyncio.Event()
        async with serving(relay=relaying(taken, 0.2, arrived), budget=budget) as (port, _, _server):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post("/relay-gone"))
            await asyncio.wait_for(arrived.wait(), 5)
            assert budget.held > 0  # the body's bytes, until the answer
            writer.close()  # gone before the answer
            await asyncio.sleep(0.4)  # a timer's worth: the answer came, to a connection that is no more
            assert budget.held == 0
            reply = await exchange(port, post("/relay-next"), lambda r: b"HTTP/1.1 200" in r)  # still serving
        assert b"/relay-next" in reply

    run(scenario)


def test_a_relay_that_fails_is_answered_500_and_the_connection_goes_on() -> None:
    async def scenario() -> None:
        def broken(method: str, path: str, headers: dict[bytes, bytes], body: bytes,
                   answer: Callable[[Response], None]) -> bool:  # fmt: skip
            if path == "/relay-broken":
                raise RuntimeError("a bug")
            if path == "/relay-late":  # fails after answering: the answer stands, once
                answer(Response(b'{"relayed":"late"}'))
                raise RuntimeError("a bug after the answer")
            return False

        async with serving(relay=broken) as (port, handled, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post("/relay-broken") + post("/after"))
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 500") and b"internal error" in body
            head, body = await read_response(reader)  # the one behind it, in its turn
            assert head.startswith(b"HTTP/1.1 200") and b'"/after"' in body
            writer.write(post("/relay-late") + post("/after-late"))
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 200") and body == b'{"relayed":"late"}'
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 200") and b'"/after-late"' in body
            writer.close()
        assert [h[1] for h in handled] == ["/after", "/after-late"]

    run(scenario)
