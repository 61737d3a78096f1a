"""A replica's routing kept in step with the others' (``--state redis://``).

Two duties, each a loop on the event loop:

- **Follow.** Every change any replica saves is announced on a Redis channel
  (``redis_state.py``); on the announcement this replica reads that
  endpoint's state and takes it up (``TrafficControl.adopt``), so a policy
  set through any replica's admin API is in force on all of them within
  a round trip or two, well inside a second. Every ``resync_seconds`` it
  reads every endpoint's state anyway: an announcement sent while this
  replica's subscription was reconnecting is not lost for long.
- **Lead.** One replica at a time judges running rollouts and moves them on
  (its decisions are saved, so announced, so followed): the holder of a
  lease, a Redis key with a time to live of ``lease_seconds``, renewed every
  third of it. A leader that dies (SIGKILL) stops renewing; within
  ``lease_seconds`` another replica takes the key and goes on from the
  rollout's saved step. A replica that cannot reach Redis does not lead.
- **Share the evidence.** Every replica writes its windows of each running
  rollout's step (counts, and part of its latency sample) to a hash per
  endpoint every ``share_seconds``; the leader reads the others' and judges
  the step on all of them (``RolloutWindows``), so a rollout is judged on
  every replica's requests, not on the leader's share. A window older than
  ``3 * share_seconds`` (a replica gone) is left out.

Event-loop only; the Redis client is redis-py's asyncio one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

import redis
import redis.asyncio as aredis

from turnout.routing.redis_follow import follow
from turnout.routing.redis_state import Keys

log = logging.getLogger("turnout.routing")

# renew the lease only while this replica still holds it: another may have taken it after an expiry
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


class SharedRouting:
    def __init__(
        self,
        url: str,
        keys: Keys,
        adopt: Callable[[str, dict[str, Any] | None], None],
        saw: Callable[[str, str | None], None] = lambda endpoint, stored: None,
        saves: Callable[[], int] = lambda: 0,
        windows: Callable[[], dict[str, dict[str, Any]]] = dict,
        routed: Callable[[], list[str]] = list,
        lease_seconds: float = 3.0,
        resync_seconds: float = 5.0,
        share_seconds: float = 0.5,
    ) -> None:
        self._url = url
        self._keys = keys
        self._adopt = adopt
        self._saw = saw  # the state as stored, taken up here: what a save here may replace (redis_state)
        # saves made here so far: a read that one overtook is older than what this replica has (and said)
        self._saves = saves
        self._lease_ms = int(lease_seconds * 1000)
        self._resync = resync_seconds
        self._windows = windows  # this replica's windows of running rollouts (TrafficControl.shared_windows)
        self._routed = routed  # the endpoints with a policy here now
        self._share = share_seconds
        self._elsewhere: dict[str, list[dict[str, Any]]] = {}  # endpoint: other replicas' shared windows
        self.replica = uuid.uuid4().hex  # this process, as the lease names its holder
        self._leading = False
        self._valid_until = 0.0  # when the lease, as last taken or renewed, runs out (less a margin)
        self._tasks: list[asyncio.Task[None]] = []
        self._redis: aredis.Redis | None = None

    def leads(self) -> bool:
        """Whether this replica judges rollouts now: it holds the lease, and
        will until past now even if its last renewal took a while to answer."""
        return self._leading and time.monotonic() < self._valid_until

    def elsewhere(self, endpoint: str, step: tuple[str, int]) -> list[dict[str, Any]]:
        """The other replicas' windows of ``endpoint``'s rollout at ``step`` (candidate, index), as last read."""
        return [found["windows"] for found in self._elsewhere.get(endpoint, ()) if tuple(found["step"]) == step]

    def start(self) -> None:
        self._redis = aredis.Redis.from_url(self._url, socket_timeout=2.0, socket_connect_timeout=2.0,
                                            decode_responses=True)  # fmt: skip
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow()), loop.create_task(self._lead()),
                       loop.create_task(self._share_windows())]  # fmt: skip

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._redis is not None:
            if self._leading:  # hand the lease on at once rather than after its expiry
                with contextlib.suppress(redis.RedisError):
                    await self._redis.eval(_RENEW, 1, self._keys.lease, self.replica, 1)
            await self._redis.aclose()

    async def _follow(self) -> None:
        assert self._redis is not None
        await follow(self._redis, self._keys.changed, self._take, self._take_all, self._resync, "shared routing state")

    async def _take(self, endpoint: str) -> None:
        assert self._redis is not None
        before = self._saves()
        state = cast(str | None, await self._redis.hget(self._keys.endpoints, endpoint))  # decode_responses: str
        if self._saves() != before:
            return  # a save here overtook this read: its own announcement brings the newer state
        self._adopted(endpoint, state)

    async def _take_all(self) -> None:
        assert self._redis is not None
        before = self._saves()
        found = cast(dict[str, str], await self._redis.hgetall(self._keys.endpoints))  # decode_responses: str
        if self._saves() != before:
            return  # overtaken by a save here (see _take); the next resync reads again
        for endpoint, state in found.items():
            self._adopted(endpoint, state)
        for endpoint in set(self._routed()) - set(found):  # forgotten while this replica was not listening
            self._adopted(endpoint, None)

    def _adopted(self, endpoint: str, stored: str | None) -> None:
        try:
            self._saw(endpoint, stored)
            self._adopt(endpoint, None if stored is None else json.loads(stored))
        except Exception:  # one endpoint's state must not stop the following of the others
            log.exception("shared routing state: %s could not be taken up", endpoint)

    async def _lead(self) -> None:
        assert self._redis is not None
        while True:
            asked = time.monotonic()  # the lease runs from when it was asked for, not from the answer
            try:
                if self._leading:
                    held = await self._redis.eval(_RENEW, 1, self._keys.lease, self.replica, self._lease_ms)
                else:
                    held = await self._redis.set(self._keys.lease, self.replica, nx=True, px=self._lease_ms)
                    if held:
                        log.info("shared routing state: this replica now judges rollouts")
                self._leading = bool(held)
                if held:
                    self._valid_until = asked + self._lease_ms / 1000 * 2 / 3  # a third kept for clock drift
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis gone, or anything else: not provably leading
                self._leading = False
            await asyncio.sleep(self._lease_ms / 3000)

    async def _share_windows(self) -> None:
        assert self._redis is not None
        while True:
            await asyncio.sleep(self._share)
            try:
                mine = self._windows()
                if not mine:  # no rollout running here: nothing to write or read
                    self._elsewhere = {}
                    continue
                now = time.time()
                async with self._redis.pipeline(transaction=False) as pipe:
                    for endpoint, shared in mine.items():
                        key = self._keys.windows_of(endpoint)
                        pipe.hset(key, self.replica, json.dumps({**shared, "at": now}))
                        pipe.expire(key, 60)
                    await pipe.execute()
                if not self._leading:
                    self._elsewhere = {}
                    continue
                found: dict[str, list[dict[str, Any]]] = {}
                for endpoint in mine:
                    others = cast(dict[str, str], await self._redis.hgetall(self._keys.windows_of(endpoint)))
                    fresh = [json.loads(v) for k, v in others.items() if k != self.replica]
                    found[endpoint] = [w for w in fresh if now - float(w["at"]) < 3 * self._share]
                self._elsewhere = found
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis gone, a window unreadable: judged on this replica's own until it answers
                self._elsewhere = {}
