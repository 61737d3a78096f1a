"""WaitController: waiting for a batch only while waiting gathers requests."""

from __future__ import annotations

import asyncio

from tests.batcher.batching_fakes import RowModel, check_own_rows, request, running
from turnout.batcher.adaptive import WaitController
from turnout.batcher.planner import BatchLimits

BOTH = ("y", "s")


def test_waits_until_a_wait_gathers_nothing_then_probes_with_backoff() -> None:
    waits = WaitController(probe_min=0.1, probe_max=0.4)
    assert waits.should_wait(0.0)
    waits.waited(gained=0, now=1.0)
    assert not waits.should_wait(1.05)
    assert waits.should_wait(1.1)  # a probe
    waits.waited(gained=0, now=1.1)
    assert not waits.should_wait(1.25)
    assert waits.should_wait(1.3)  # the interval doubled to 0.2
    waits.waited(gained=0, now=1.3)
    waits.waited(gained=0, now=1.7)
    assert not waits.should_wait(1.7 + 0.39)
    assert waits.should_wait(1.7 + 0.4)  # capped at probe_max


def test_a_wait_that_pays_resumes_waiting_and_resets_the_backoff() -> None:
    waits = WaitController(probe_min=0.1, probe_max=1.0)
    waits.waited(gained=0, now=0.0)
    waits.waited(gained=0, now=0.1)
    waits.waited(gained=3, now=0.3)
    assert waits.should_wait(0.3)
    waits.waited(gained=0, now=0.5)
    assert waits.should_wait(0.6)  # back to the shortest interval


def test_a_lone_client_stops_paying_the_batching_delay() -> None:
    """Concurrency 1 with a long delay: after the first wait brings nothing,
    requests run at once (the batcher's half of target 3 in issue 3)."""
    delay = 0.3

    async def scenario() -> None:
        model = RowModel()
        async with running([model], BatchLimits(8, max_queue_delay=delay)) as batcher:
            loop = asyncio.get_running_loop()
            started = loop.time()
            check_own_rows(request(0), (await batcher.submit(request(0), BOTH)).outputs)
            assert loop.time() - started >= delay * 0.9  # the first wait happens
            started = loop.time()
            for rid in range(1, 11):
                check_own_rows(request(rid), (await batcher.submit(request(rid), BOTH)).outputs)
            assert loop.time() - started < delay  # ten requests, none waited out the delay

    asyncio.run(scenario())


def test_concurrent_clients_keep_batching() -> None:
    async def scenario() -> None:
        model = RowModel()
        async with running([model], BatchLimits(8, max_queue_delay=0.05)) as batcher:
            for _ in range(3):
                results = await asyncio.gather(*(batcher.submit(request(i), BOTH) for i in range(8)))
                for i, result in enumerate(results):
                    check_own_rows(request(i), result.outputs)
        assert max(c.rows for c in model.seen()) == 8

    asyncio.run(scenario())
