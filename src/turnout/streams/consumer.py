"""One model's request stream, consumed by this process as one member of the
deployment's consumer group.

Delivery is at-least-once: an entry is acknowledged (XACK) only after its
result, its error or its dead letter is written. Entries another consumer
left pending (it died, or gave up on them) are claimed after ``claim_idle``
(XAUTOCLAIM); one delivered more than ``max_deliveries`` times goes to the
dead-letter stream. A result may therefore be written twice; its ``id`` and
``entry`` let a reader deduplicate.

Back-pressure: at most ``prefetch`` entries are in this process's hands
(read, being answered, or waiting to be written) at any time; the reader asks
Redis only for as many as are free, so a saturated model stops the reading
and nothing is buffered without bound.

This module reads, claims and writes; what to write for each entry is
decided in ``answers.py``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from turnout.observability.metrics import Metrics
from turnout.observability.tracing import Tracer
from turnout.streams.answers import Answer, EntryAnswers, Write
from turnout.streams.envelope import (
    Fields,
    dead_letter_fields,
)
from turnout.streams.group import StreamOptions, busy, group_gone, report_group, text
from turnout.streams.health import Backoff, RedisHealth

log = logging.getLogger("turnout.streams")

UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
WRITE_BATCH = 256  # results written (and acknowledged) per round trip at most
LAG_REPORT_SECONDS = 1.0


@dataclass(slots=True)
class _Slots:
    """Entries this process may still take: the back-pressure bound. Slots are
    reserved before a read or a claim is sent, so the reader and the claimer
    together never take more than the bound."""

    free: int
    _freed: asyncio.Event = field(default_factory=asyncio.Event)

    def reserve(self) -> int:
        taken, self.free = self.free, 0
        return taken

    def give(self, count: int = 1) -> None:
        if count:
            self.free += count
            self._freed.set()

    async def wait_free(self) -> None:
        while self.free <= 0:
            self._freed.clear()
            await self._freed.wait()


class ModelStream:
    def __init__(
        self,
        redis: Redis,
        model: str,
        options: StreamOptions,
        answer: Answer,
        metrics: Metrics,
        health: RedisHealth,
        tracer: Tracer | None = None,
    ) -> None:
        self.model = model
        self.options = options
        self._redis = redis
        self._answers = EntryAnswers(model, options, answer, metrics, tracer)
        self._metrics = metrics
        self._health = health
        self._slots = _Slots(options.prefetch)
        self._in_hand: dict[str, asyncio.Task[None]] = {}
        self._writes: asyncio.Queue[Write] = asyncio.Queue()
        self._loops: list[asyncio.Task[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._writer = self._supervised(self._write_loop, "writer", through_stop=True)
        self._loops = [self._supervised(self._read_loop, "reader"), self._supervised(self._claim_loop, "claimer")]

    def _supervised(
        self, loop: Callable[[], Coroutine[Any, Any, None]], role: str, through_stop: bool = False
    ) -> asyncio.Task[None]:
        """A loop that is started again if it ever fails: a consumer that stops
        reading and says nothing is the failure this guards against. The
        writer (``through_stop``) keeps going while a stop lets it flush."""

        async def run() -> None:
            while through_stop or not self._stopping:
                try:
                    await loop()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    if self._stopping and not through_stop:  # a cancelled Redis call may surface as another error
                        return
                    log.exception("the stream %s of %s failed; starting it again in 1 s", role, self.options.stream)
                    await asyncio.sleep(1.0)

        return asyncio.get_running_loop().create_task(run(), name=f"stream-{role}-{self.model}")

    async def stop(self, grace: float) -> None:
        """Stop reading; finish the entries in hand for up to ``grace`` seconds.
        Entries not written by then stay pending in Redis for another consumer."""
        self._stopping = True
        # bounded waits throughout: a Redis call interrupted by a cancellation
        # may not end promptly, and stopping must never hang on one
        await _cancel(self._loops)
        deadline = time.monotonic() + grace
        while (self._in_hand or not self._writes.empty()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await _cancel(list(self._in_hand.values()))
        if self._writer is not None:
            await _cancel([self._writer])

    # --- reading -----------------------------------------------------------------

    async def _read_loop(self) -> None:
        """Claim what waits too long in the group, then read new entries, with the
        same free slots. One loop does both: a reader that reserved every slot
        for its blocking read left a separate claimer none, so an idle or lightly
        loaded consumer never took over a dead one's entries (issue 16)."""
        backoff = Backoff()
        options = self.options
        claim_every = self._claim_every()
        # a claim is due at once: a restarted consumer takes over what the dead one held first
        claimed_at = -math.inf
        block = max(1, int(min(options.block_seconds, claim_every) * 1000))  # never sleeps past a due claim
        await self._ensure_group(backoff)
        while not self._stopping:
            await self._slots.wait_free()
            reserved = 0
            try:
                if time.monotonic() - claimed_at >= claim_every:
                    claimed_at = time.monotonic()
                    await self._claim()
                    if self._slots.free <= 0:
                        continue
                reserved = self._slots.reserve()
                reply = await self._redis.xreadgroup(
                    options.group,
                    options.consumer,
                    {options.stream: ">"},
                    count=reserved,
                    block=block,
                )
            except ResponseError as exc:
                self._slots.give(reserved)
                if group_gone(exc):
                    await self._ensure_group(backoff)
                else:  # MISCONF, READONLY after a failover, NOPERM, OOM...: Redis says no, for now
                    log.error("reading %s failed: %s; retrying with back-off", options.stream, exc)
                    await backoff.wait()
                continue
            except UNREACHABLE as exc:
                self._slots.give(reserved)
                self._health.failed(exc)
                await backoff.wait()
                continue
            except BaseException:
                self._slots.give(reserved)
                raise
            self._health.answered()
            backoff.reset()
            answered: Any = reply  # [[stream, [(id, fields), ...]]]
            entries = [entry for _stream, batch in answered or () for entry in batch]
            self._slots.give(reserved - len(entries))
            for raw_id, fields in entries:
                self._take(raw_id.decode(), fields, deliveries=1)

    async def _ensure_group(self, backoff: Backoff) -> None:
        """The consumer group, created with the stream if need be; from entry 0,
        so requests written before the first deployment are answered too."""
        options = self.options
        while True:
            try:
                length = await self._redis.xlen(options.stream)
                await self._redis.xgroup_create(options.stream, options.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" in str(exc):
                    break
                log.error("cannot create the group %r on %s: %s; retrying with back-off", options.group,
                          options.stream, exc)  # fmt: skip
                await backoff.wait()
                continue
            except UNREACHABLE as exc:
                self._health.failed(exc)
                await backoff.wait()
                continue
            if length:  # the group was lost while the stream was kept: at least once means all again
                log.warning("created the group %r on %s, which holds %d entries: they are all answered (again)",
                            options.group, options.stream, length)  # fmt: skip
            break
        self._health.answered()

    def _claim_every(self) -> float:
        return min(max(self.options.claim_idle_seconds / 3, 0.05), 5.0)

    async def _claim_loop(self) -> None:
        """Keep the entries in hand ours (the reader claims entries left pending too
        long), report the stream's lag and consumers, and forget consumers long gone."""
        backoff = Backoff()
        claim_every = self._claim_every()
        tick = min(claim_every, LAG_REPORT_SECONDS)
        refreshed_at = time.monotonic()
        while not self._stopping:
            await asyncio.sleep(tick)
            try:
                if time.monotonic() - refreshed_at >= claim_every:
                    refreshed_at = time.monotonic()
                    await self._refresh_in_hand()
                await report_group(self._redis, self.model, self.options, self._metrics)
            except ResponseError as exc:
                if not group_gone(exc):  # a lost group: the reader creates it again
                    log.error("claiming pending entries of %s failed: %s", self.options.stream, exc)
                await backoff.wait()
                continue
            except UNREACHABLE as exc:
                self._health.failed(exc)
                await backoff.wait()
                continue
            backoff.reset()

    async def _refresh_in_hand(self) -> None:
        """Entries still being answered here would look idle to the other
        consumers (and to this one's claimer) past ``claim_idle``: claiming them
        again with JUSTID resets their idle time without counting a delivery."""
        if self._in_hand:
            await self._redis.xclaim(self.options.stream, self.options.group, self.options.consumer, 0,
                                     list(self._in_hand), justid=True)  # fmt: skip

    async def _claim(self) -> None:
        options = self.options
        cursor: bytes | str = "0-0"
        while self._slots.free > 0:
            reserved = self._slots.reserve()
            try:
                claim: Any = await self._redis.xautoclaim(
                    options.stream,
                    options.group,
                    options.consumer,
                    min_idle_time=int(options.claim_idle_seconds * 1000),
                    start_id=cursor,
                    count=min(reserved, 100),
                )
                next_cursor, entries = claim[0], claim[1]  # and, on Redis 7, the ids of deleted entries
                claimed = [(raw_id.decode(), fields) for raw_id, fields in entries if fields is not None]
                deliveries = await self._deliveries([entry_id for entry_id, _ in claimed])
            except BaseException:
                self._slots.give(reserved)
                raise
            self._slots.give(reserved - len(claimed))
            for entry_id, fields in claimed:
                self._take(entry_id, fields, deliveries.get(entry_id, 1))
            if next_cursor in (b"0-0", "0-0"):
                return
            cursor = next_cursor

    async def _deliveries(self, entry_ids: list[str]) -> dict[str, int]:
        """How many times each entry has been delivered, this claim included."""
        if not entry_ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.xpending_range(self.options.stream, self.options.group, entry_id, entry_id, 1)
            found: list[Any] = await pipe.execute()
        return {text(item["message_id"]): int(item["times_delivered"]) for items in found for item in items}

    # --- answering ---------------------------------------------------------------

    def _take(self, entry_id: str, fields: Fields, deliveries: int) -> None:
        """Answer an entry, in the slot reserved for it. One already in hand (Redis
        delivered it again: a failover, a restore, a claim) is not answered twice here."""
        if entry_id in self._in_hand:
            self._slots.give()
            return
        task = asyncio.get_running_loop().create_task(self._handle(entry_id, fields, deliveries))
        self._in_hand[entry_id] = task

    async def _handle(self, entry_id: str, fields: Fields, deliveries: int) -> None:
        written = False
        try:
            write = await self._answers.outcome(entry_id, fields, deliveries)
            if write is not None:
                self._writes.put_nowait(write)
                written = True
        except Exception:  # a bug: the entry stays pending and is redelivered
            log.exception("answering entry %s of %s failed", entry_id, self.options.stream)
            self._answers.remember_failure(entry_id, "internal error in the stream consumer")
        finally:
            if not written:  # left pending: the slot is free again now; a written one frees it once written
                self._release(entry_id)

    def _release(self, entry_id: str) -> None:
        if self._in_hand.pop(entry_id, None) is not None:
            self._slots.give()

    # --- writing -----------------------------------------------------------------

    async def _write_loop(self) -> None:
        backoff = Backoff()
        while True:
            batch = [await self._writes.get()]
            while len(batch) < WRITE_BATCH and not self._writes.empty():
                batch.append(self._writes.get_nowait())
            while True:
                try:
                    await self._write(batch)
                except UNREACHABLE as exc:  # kept in hand and written once Redis answers
                    self._health.failed(exc)
                    await backoff.wait()
                    continue
                except ResponseError as exc:
                    if not busy(exc):
                        raise
                    log.error("Redis refuses the results of %s for now (%s): retrying with back-off",
                              self.options.stream, exc)  # fmt: skip
                    await backoff.wait()
                    continue
                except RedisError as exc:  # not acknowledged: redelivered, so still answered at least once
                    log.error("writing %d results of %s failed, their entries stay pending: %s", len(batch),
                              self.options.stream, exc)  # fmt: skip
                    for write in batch:
                        self._release(write.entry_id)
                break
            self._health.answered()
            backoff.reset()

    async def _write(self, batch: list[Write]) -> None:
        """XADD every result, then XACK the entries whose results were all written.
        Two round trips for the whole batch; a repeat after a lost connection
        may write a result twice, never acknowledge one unwritten."""
        options = self.options
        async with self._redis.pipeline(transaction=False) as pipe:
            for write in batch:
                for stream, fields in write.adds:
                    pipe.xadd(stream, fields)  # type: ignore[arg-type]
            results = await pipe.execute(raise_on_error=False)
        position, done, refused = 0, [], []
        for write in batch:
            outcomes = results[position : position + len(write.adds)]
            position += len(write.adds)
            failure = next((r for r in outcomes if isinstance(r, Exception)), None)
            if failure is None:
                done.append(write)
            elif isinstance(failure, UNREACHABLE) or busy(failure):
                raise failure  # the whole batch again, later: a result may be written twice, none lost
            elif write.outcome == "dead_letter" and not isinstance(outcomes[0], Exception):
                log.error("entry %s of %s is in the dead-letter stream; telling its producer failed: %s",
                          write.entry_id, options.stream, failure)  # fmt: skip
                done.append(write)
            else:
                refused.append((write, failure))
        for write, failure in refused:  # e.g. reply_to names a key that is not a stream
            reason = f"its result could not be written: {failure}"
            letter = dead_letter_fields(write.entry_id, write.original, options.stream, reason, 0)
            log.error("entry %s of %s: %s", write.entry_id, options.stream, reason)
            await self._redis.xadd(options.dead_letter, letter)  # type: ignore[arg-type]
            done.append(Write(write.entry_id, [], "dead_letter", write.original))
        if done:
            await self._redis.xack(options.stream, options.group, *(w.entry_id for w in done))
        for write in done:
            self._metrics.stream_entries(self.model, write.outcome).inc()
            self._answers.forget(write.entry_id)
            self._release(write.entry_id)


async def _cancel(tasks: list[asyncio.Task[None]], patience: float = 2.0) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=patience)
