"""The closed loop's busy polling: it keeps the generator's core turning
while requests are out (and costs that core), and stops with the point."""

from __future__ import annotations

import asyncio

import pytest

from turnout.bench.loadgen import Send, closed_loop


async def slow_factory() -> Send:
    async def send() -> str | None:
        await asyncio.sleep(0.005)  # a server that takes 5 ms: the generator has nothing to do meanwhile
        return None

    return send


@pytest.mark.parametrize(("busy_poll", "low", "high"), [(False, 0.0, 30.0), (True, 60.0, 101.0)])
def test_busy_polling_spends_the_wait_on_cpu(busy_poll: bool, low: float, high: float) -> None:
    async def scenario() -> None:
        result = await closed_loop(slow_factory, 1, duration=0.5, warmup=0.05, busy_poll=busy_poll)
        assert 50 <= result.requests <= 110  # ~100 calls of 5 ms in 0.5 s, spinning or not
        assert low <= result.client_cpu_percent <= high
        assert len(asyncio.all_tasks()) == 1  # the spinner stopped with the point

    asyncio.run(scenario())
