"""Whether Redis answers, said once per outage rather than once per failed call,
and how long each consumer loop waits before trying again."""

from __future__ import annotations

import asyncio
import logging

from turnout.observability.metrics import Metrics

log = logging.getLogger("turnout.streams")


class RedisHealth:
    """Shared by every stream loop of the process: the first failure of an
    outage is logged as an error and the recovery as a warning, with the
    ``turnout_stream_redis_up`` gauge following."""

    def __init__(self, address: str, metrics: Metrics) -> None:
        self._address = address
        self._up_gauge = metrics.stream_redis_up()
        self._up_gauge.set(1)
        self._down_since: float | None = None

    @property
    def up(self) -> bool:
        return self._down_since is None

    def failed(self, error: BaseException) -> None:
        if self._down_since is None:
            self._down_since = asyncio.get_running_loop().time()
            self._up_gauge.set(0)
            log.error(
                "Redis at %s is unreachable (%s): stream consumption paused, retrying with back-off; "
                "entries already read stay pending in Redis; HTTP and gRPC serving go on",
                self._address,
                error,
            )

    def answered(self) -> None:
        if self._down_since is not None:
            down_for = asyncio.get_running_loop().time() - self._down_since
            self._down_since = None
            self._up_gauge.set(1)
            log.warning("Redis at %s is reachable again after %.1f s: stream consumption resumed", self._address,
                        down_for)  # fmt: skip


class Backoff:
    """Exponential waits between retries, from ``first`` up to ``most`` seconds."""

    def __init__(self, first: float = 0.05, most: float = 5.0) -> None:
        self._first, self._most = first, most
        self._next = first

    async def wait(self) -> None:
        await asyncio.sleep(self._next)
        self._next = min(self._next * 2, self._most)

    def reset(self) -> None:
        self._next = self._first
