"""Pinned versions shared by replicas (``--state redis://``).

A pin made through any replica's admin API (pin, unpin, rollback, an MLflow
alias) is written to a Redis hash (model: version) and announced on a
channel in one MULTI, before it is made there: a pin Redis did not take is
not made (503), as a pin that cannot be saved to disk is not. Every replica
follows the channel (``redis_follow``) and takes the pin up as its own
(``DefaultVersions.follow``: the version loaded first, then the default),
without announcing it again, so a slower replica's old news can never
overwrite a newer pin. A resync every few seconds reads the whole hash:
what Redis no longer holds is unpinned here too, so Redis is where pins
are: a replica that starts sharing drops the pins of its own ``pins.json``
that Redis does not hold. A pin this replica cannot take up (the version is
not on its disk, or fails to load) is logged and tried again a minute
later, not at every resync. History (for rollback) and the signature
contract stay each replica's own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import cast

import redis
import redis.asyncio as aredis

from turnout.errors import Unavailable
from turnout.routing.redis_follow import follow
from turnout.routing.redis_state import Keys
from turnout.routing.state_store import StoreFailed
from turnout.urls import without_password

log = logging.getLogger("turnout.pins")

_RETRY_FAILED_SECONDS = 60.0


class RedisPins:
    """Writes pins to Redis and announces them (``PinStore``'s ``announce``)."""

    def __init__(self, url: str, keys: Keys) -> None:
        self._keys = keys
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, decode_responses=True)
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            raise StoreFailed(f"Redis at {without_password(url)} does not answer: {exc}") from None

    def announce(self, model: str, version: int | None) -> None:
        """``version`` pinned for ``model`` (None: unpinned) on every replica; raises
        ``Unavailable`` (and nothing is shared) when Redis does not take it."""
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                if version is None:
                    pipe.hdel(self._keys.pins, model)
                else:
                    pipe.hset(self._keys.pins, model, str(version))
                pipe.publish(self._keys.pins_changed, model)
                pipe.execute()
        except redis.RedisError as exc:
            raise Unavailable(
                f"the pin cannot be shared with the other replicas (Redis: {exc})", retry_after=1.0
            ) from None

    def close(self) -> None:
        self._redis.close()


class PinFollower:
    """Takes up the pins other replicas announce (``take(model, version)``)."""

    def __init__(
        self,
        url: str,
        keys: Keys,
        take: Callable[[str, int | None], Awaitable[None]],
        pinned_here: Callable[[], dict[str, int]],
        resync_seconds: float = 5.0,
    ) -> None:
        self._url = url
        self._keys = keys
        self._take_up = take
        self._pinned_here = pinned_here
        self._resync = resync_seconds
        self._redis: aredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._failed: dict[tuple[str, str | None], float] = {}  # (model, pin as stored): when to try it again

    def start(self) -> None:
        self._redis = aredis.Redis.from_url(self._url, socket_timeout=2.0, socket_connect_timeout=2.0,
                                            decode_responses=True)  # fmt: skip
        self._task = asyncio.get_running_loop().create_task(
            follow(self._redis, self._keys.pins_changed, self._take, self._take_all, self._resync, "shared pins")
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()

    async def _take(self, model: str) -> None:
        assert self._redis is not None
        await self._taken_up(model, cast(str | None, await self._redis.hget(self._keys.pins, model)))

    async def _take_all(self) -> None:
        assert self._redis is not None
        here = set(self._pinned_here())  # before Redis is read: a pin made here meanwhile is in Redis, not in this
        found = cast(dict[str, str], await self._redis.hgetall(self._keys.pins))  # decode_responses: str
        for model, version in found.items():
            await self._taken_up(model, version)
        for model in here - set(found):  # unpinned while this replica was not listening
            # asked again: following a pin above may have taken minutes (a load), and a pin made since stands
            await self._taken_up(model, cast(str | None, await self._redis.hget(self._keys.pins, model)))

    async def _taken_up(self, model: str, stored: str | None) -> None:
        """Take one pin up; one that failed here is not tried again for a while (each try
        may scan the disk or load a version), and never stops the following of the others."""
        now = time.monotonic()
        if self._failed.get((model, stored), 0.0) > now:
            return
        try:
            await self._take_up(model, None if stored is None else int(stored))
        except Exception as exc:
            self._failed[(model, stored)] = now + _RETRY_FAILED_SECONDS
            log.error("shared pins: model '%s' cannot take up %s here (tried again in %g s): %s", model,
                      "the unpin" if stored is None else f"the pin of version {stored!r}", _RETRY_FAILED_SECONDS,
                      exc)  # fmt: skip
        else:
            self._failed.pop((model, stored), None)
