"""Awaiting several steps or model calls at once, cheaply.

``asyncio.gather`` makes a task of each awaitable. The first is awaited here
instead, in the caller's own task: when it completes without suspending (a
cheap model answered inline by its batcher), the others start after it just
as they would under ``gather`` on one loop, and a task and a turn of the loop
are saved; when it suspends, the others' tasks run meanwhile. Should any
fail, the rest are cancelled, not left running unawaited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


async def together(calls: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Each call's result, in order."""
    first, *others = calls
    rest = [asyncio.ensure_future(call) for call in others]
    try:
        head = await first
        return [head, *(await asyncio.gather(*rest))] if rest else [head]
    except BaseException:
        for task in rest:
            task.cancel()
        raise
