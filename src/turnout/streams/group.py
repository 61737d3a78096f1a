"""What a stream's consumer needs to know of its group beyond its own
entries: the options it runs with, the group's lag and pending entries as
metrics, consumers long gone removed, and how to read Redis's refusals."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from turnout.observability.metrics import Metrics
from turnout.protocol.limits import InputLimits

log = logging.getLogger("turnout.streams")

TRY_AGAIN_LATER = {"OOM", "READONLY", "MISCONF", "LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN"}


@dataclass(frozen=True, slots=True)
class StreamOptions:
    stream: str
    dead_letter: str
    group: str
    consumer: str
    prefetch: int
    max_deliveries: int
    claim_idle_seconds: float
    block_seconds: float
    limits: InputLimits
    max_request_bytes: int  # --max-body-bytes, as over HTTP


async def report_group(redis: Redis, model: str, options: StreamOptions, metrics: Metrics) -> None:
    """The group's lag, pending entries and consumers as metrics; consumers long gone removed."""
    summary = await redis.xpending(options.stream, options.group)
    metrics.stream_pending(model, options.stream).set(int(summary["pending"]))
    oldest: Any = summary.get("min")
    age = 0.0
    if summary["pending"] and oldest:
        age = max(0.0, time.time() - int(text(oldest).split("-")[0]) / 1000)
    metrics.stream_oldest_pending(model, options.stream).set(age)
    for group in await redis.xinfo_groups(options.stream):
        if text(group["name"]) == options.group and group.get("lag") is not None:
            metrics.stream_lag(model, options.stream).set(int(group["lag"]))
    consumers: Any = await redis.xinfo_consumers(options.stream, options.group)
    metrics.stream_consumers(model, options.stream, {text(c["name"]): int(c["pending"]) for c in consumers})
    await forget_gone_consumers(redis, options, consumers)


async def forget_gone_consumers(redis: Redis, options: StreamOptions, consumers: list[dict[str, Any]]) -> None:
    """Remove from the group the consumers (of an XINFO CONSUMERS reply) that hold
    nothing and have not been seen for ``forget_after``: a dead consumer's entries
    are claimed first (they are idle past ``claim_idle`` long before), so nothing
    is lost; a live one that is merely quiet is added again by Redis at its next read."""
    forget_after_ms = int(forget_after(options.claim_idle_seconds) * 1000)
    for consumer in consumers:
        name = text(consumer["name"])
        if name == options.consumer or int(consumer["pending"]) or int(consumer["idle"]) < forget_after_ms:
            continue
        # DELCONSUMER drops the consumer's pending entries: only if it still holds none
        pending: Any = await redis.xpending_range(options.stream, options.group, "-", "+", 1,
                                                        consumername=name)  # fmt: skip
        if not pending:
            await redis.xgroup_delconsumer(options.stream, options.group, name)
            log.info("removed consumer %r from the group %r of %s: idle for %.0f s, holding nothing",
                     name, options.group, options.stream, int(consumer["idle"]) / 1000)  # fmt: skip


def forget_after(claim_idle_seconds: float) -> float:
    """How long a consumer holding nothing may stay silent before it is removed
    from the group: ten claim periods (5 minutes by default), at least 5 s.
    Removing one that holds nothing loses nothing, so this only needs to be
    long enough not to churn a live one whose Redis counts idle time from its
    last delivery (before 7.2) rather than its last read."""
    return max(5.0, 10 * claim_idle_seconds)


def group_gone(error: ResponseError) -> bool:
    """The group, or the stream itself, is gone (Redis restarted empty, FLUSHDB, DEL)."""
    text = str(error)
    return text.startswith("NOGROUP") or text.startswith("UNBLOCKED")


def busy(error: BaseException) -> bool:
    """Redis refused a write for now (out of memory, a replica after failover,
    a failed save, still loading): worth retrying, not a reason to give up an entry."""
    return isinstance(error, ResponseError) and str(error).split(" ", 1)[0] in TRY_AGAIN_LATER


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
