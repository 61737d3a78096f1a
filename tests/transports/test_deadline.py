"""A connection's deadline: moved later without a timer, earlier with one, and
never firing for a deadline cleared or moved on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from turnout.transports.http.deadline import Deadline


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def test_moving_later_schedules_nothing_and_fires_at_the_new_deadline() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        deadline = Deadline(loop, lambda: fired.append(loop.time()))
        start = loop.time()
        deadline.set(start + 0.05)
        armed = deadline.armed_at
        deadline.set(start + 0.15)  # later: the timer stays where it was
        assert deadline.armed_at == armed
        await asyncio.sleep(0.1)
        assert fired == []  # woke at 0.05, slept again
        await asyncio.sleep(0.1)
        assert len(fired) == 1 and fired[0] >= start + 0.15

    run(body)


def test_moving_earlier_rearms_and_clearing_never_fires() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        fired: list[str] = []
        deadline = Deadline(loop, lambda: fired.append("x"))
        start = loop.time()
        deadline.set(start + 10)
        deadline.at = when = start + 0.03  # the inline idiom of the request path
        if when < deadline.armed_at:
            deadline.arm()
        await asyncio.sleep(0.08)
        assert fired == ["x"]
        deadline.set(loop.time() + 0.03)
        deadline.at = 0.0  # cleared: the timer wakes and does nothing
        await asyncio.sleep(0.08)
        assert fired == ["x"]
        deadline.set(loop.time() + 0.03)
        deadline.cancel()
        await asyncio.sleep(0.08)
        assert fired == ["x"] and deadline.armed_at == float("inf")

    run(body)
