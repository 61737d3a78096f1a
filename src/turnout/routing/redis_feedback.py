"""A/B assignments and outcomes in Redis, shared by replicas (``--state
redis://...``): behind a load balancer, the feedback on a request often
reaches another replica than the one that answered it, and the report must
count every replica's requests.

The same contract as the SQLite ``FeedbackStore``: assignments are noted in
memory on the hot path (``AssignmentBuffer``) and written every second, each
as a key of its own (so a reused id keeps its first variant: SET NX) with a
time to live of ``ttl_seconds`` (feedback comes within days, not years),
counted per variant in one hash; an outcome is a field of the endpoint's
outcomes hash, written once (HSETNX: the first feedback stands). The report
is built by ``feedback.ab_report`` from those, as the SQLite store builds it.
Redis failures are ``StoreFailed`` (the API answers 503; assignments stay in
memory, up to a bound, for the next flush).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from typing import cast

import redis

from turnout.routing.feedback import (
    AbReport,
    AssignmentBuffer,
    DuplicateFeedback,
    FeedbackError,
    ab_report,
    outcome_value,
)
from turnout.routing.state_store import StoreFailed

# the assignment, if the id has none yet, and its variant's count, in one step
_ASSIGN = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return redis.call('hincrby', KEYS[2], ARGV[1], 1) end
return 0
"""


class RedisFeedbackStore:
    def __init__(
        self,
        url: str,
        namespace: str = "turnout",
        *,
        recent_limit: int = 100_000,
        ttl_seconds: int = 7 * 86_400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._namespace = namespace
        self._ttl = ttl_seconds
        self._buffer = AssignmentBuffer(recent_limit, clock)
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, decode_responses=True)
        self._assign = self._redis.register_script(_ASSIGN)

    def remember(self, endpoint: str, request_id: str, variant: str) -> None:
        """Note that ``variant`` served ``request_id``; memory only, O(1)."""
        self._buffer.remember(endpoint, request_id, variant)

    @property
    def lost(self) -> int:
        return self._buffer.lost

    def flush(self) -> int:
        """Write the noted assignments in one round trip; returns how many."""
        batch = self._buffer.take()
        if not batch:
            return 0
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for (endpoint, request_id), (variant, _) in batch.items():
                    self._assign(keys=self._assignment_keys(endpoint, request_id), args=[variant, self._ttl],
                                 client=pipe)  # fmt: skip
                pipe.execute()
        except redis.RedisError as exc:
            self._buffer.give_back(batch)
            raise StoreFailed(str(exc)) from None
        return len(batch)

    def record(self, endpoint: str, request_id: str, outcome: object) -> str:
        """Store the outcome of an A/B-routed request, answered by any replica; returns its variant."""
        value = outcome_value(outcome)
        pending, recent = self._buffer.claim(endpoint, request_id)
        try:
            if pending is not None:  # written now, so that every outcome has its assignment
                self._assign(keys=self._assignment_keys(endpoint, request_id), args=[pending[0], self._ttl])
            variant = recent or (pending[0] if pending else None)
            if variant is None:
                variant = self._written(self._assignment_keys(endpoint, request_id)[0])
            if variant is None:
                raise FeedbackError(
                    f"no A/B assignment for request id {request_id!r} on {endpoint!r}; feedback is accepted "
                    "only for ids returned by an A/B-routed response"
                )
            fresh = self._redis.hsetnx(self._key(endpoint, "outcomes"), request_id, json.dumps([variant, value]))
        except redis.RedisError as exc:
            raise StoreFailed(str(exc)) from None
        if not fresh:
            raise DuplicateFeedback(
                f"duplicate feedback for request id {request_id!r} on {endpoint!r}: an outcome is already "
                "recorded and the first one stands"
            )
        return variant

    def report(self, endpoint: str, min_count: int = 30, baseline: str | None = None) -> AbReport:
        self.flush()  # this replica's last second counts too
        try:
            assigned = cast(dict[str, str], self._redis.hgetall(self._key(endpoint, "assigned")))
            recorded = cast(list[str], self._redis.hvals(self._key(endpoint, "outcomes")))
        except redis.RedisError as exc:
            raise StoreFailed(str(exc)) from None
        values: dict[str, list[float]] = {}
        for item in recorded:
            variant, value = json.loads(item)
            values.setdefault(str(variant), []).append(float(value))
        totals = {variant: (len(found), math.fsum(found)) for variant, found in values.items()}
        rewarded = any(value not in (0.0, 1.0) for found in values.values() for value in found)
        counts = {variant: int(count) for variant, count in assigned.items()}
        return ab_report(endpoint, counts, totals, values if rewarded else None, min_count, baseline)

    def close(self) -> None:
        with contextlib.suppress(StoreFailed):  # what is still in memory is lost with the process
            self.flush()
        self._redis.close()

    def _written(self, key: str) -> str | None:
        """An assignment another replica noted: written within its flush interval (a second), so
        asked again for a little longer than that before it is said to be unknown. Called in a
        worker thread (the API's ``asyncio.to_thread``): the waits hold no event loop."""
        for wait in (0.0, 0.2, 0.4, 0.6):
            time.sleep(wait)
            found = cast(str | None, self._redis.get(key))
            if found is not None:
                return found
        return None

    def _key(self, endpoint: str, what: str) -> str:
        return f"{self._namespace}:ab:{endpoint}:{what}"

    def _assignment_keys(self, endpoint: str, request_id: str) -> list[str]:
        return [f"{self._key(endpoint, 'assigned')}:{request_id}", self._key(endpoint, "assigned")]
