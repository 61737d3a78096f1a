"""Mirroring requests to a shadow variant, off the primary's path.

Under a shadow policy the primary variant answers the client; a copy of the
request goes to the shadow variant later, and the two outputs are compared
(``compare``) and counted (``ShadowStats``) per (endpoint, shadow variant).

The primary must not pay for the shadow: ``offer`` is O(1), never waits and
never raises, and the shadow's share of the machine is bounded: at most
``workers`` copies in flight (the budget), more waiting in a bounded queue,
and none at all while the server is busy: the caller asks ``admits`` before
making the copy. A copy past the queue, or skipped, is dropped and counted
by reason, because a shadow that cannot keep up should lose samples, not
take the core from the service or grow memory. A shadow that fails is
counted as an error.

A copy belongs to its policy: when the endpoint stops mirroring to a shadow
(the policy cleared or changed), ``stop`` drops its queued copies and cancels
those running, at once, counted as ``cancelled``.

Sampled disagreements go to a JSON Lines file, written from a thread so that
the event loop never waits on the disk.

Concurrency: everything here runs on one event loop (offer, the copies'
tasks, stop, snapshot and the metrics scrape), so the counters need no lock.
The mirror knows only jobs: how a shadow variant is run is the ``run``
callable's concern.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from turnout.routing.compare import Outputs, RequestComparison, ShadowStats, Tolerance, compare
from turnout.routing.shadow_log import JsonLines

log = logging.getLogger("turnout.shadow")

LOGGED_ELEMENTS = 20  # of each output, in a logged disagreement: enough to see it, small enough to keep
ERROR_WARNING_EVERY = 100  # one warning per key in this many failed shadow runs; the rest at debug
DEFAULT_TOLERANCE = Tolerance()

# why a copy was never compared (the reason label of turnout_shadow_dropped_total)
BUSY = "busy"  # the server was busy: skipped, never made
FULL = "full"  # the budget was spent and the queue was full
CANCELLED = "cancelled"  # the endpoint stopped mirroring to the shadow: queued or running, dropped at once
CLOSED = "closed"  # offered after close, or still unfinished when close ran out of time
DROP_REASONS = (BUSY, FULL, CANCELLED, CLOSED)


@dataclass(frozen=True, slots=True)
class ShadowJob:
    """One request to mirror: how to run the shadow, and what the primary answered."""

    endpoint: str
    shadow: str  # the shadow variant's name
    request_id: str
    run: Callable[[], Awaitable[Outputs]]  # runs the shadow on the request's inputs; may raise
    primary: Outputs
    primary_seconds: float


@dataclass(frozen=True, slots=True)
class ShadowReport:
    """One (endpoint, shadow) pair's totals at the time of the snapshot."""

    endpoint: str
    shadow: str
    requests: int  # compared
    agreeing: int
    disagreements: int
    errors: int  # shadow runs that raised (or could not be compared)
    dropped: int  # copies never compared: see dropped_by
    agreement_rate: float  # nan when nothing was compared
    mean_latency_difference_seconds: float  # shadow minus primary; nan when nothing was compared
    max_abs: dict[str, float]  # numeric outputs only
    mean_abs: dict[str, float]
    queued: int  # copies waiting in the mirror's queue, all keys together
    output_agreement: dict[str, float] = field(default_factory=dict)  # per output; labels: classification agreement
    max_rel: dict[str, float] = field(default_factory=dict)  # numeric outputs: the largest relative difference
    dropped_by: dict[str, int] = field(default_factory=dict)  # reason -> copies
    in_flight: int = 0  # copies running now, all keys together

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: nan and infinities become None (JSON has no such numbers)."""
        return {
            "endpoint": self.endpoint,
            "shadow": self.shadow,
            "requests": self.requests,
            "agreeing": self.agreeing,
            "disagreements": self.disagreements,
            "errors": self.errors,
            "dropped": self.dropped,
            "dropped_by": dict(self.dropped_by),
            "agreement_rate": _finite(self.agreement_rate),
            "mean_latency_difference_seconds": _finite(self.mean_latency_difference_seconds),
            "max_abs": {name: _finite(value) for name, value in self.max_abs.items()},
            "mean_abs": {name: _finite(value) for name, value in self.mean_abs.items()},
            "queued": self.queued,
            "in_flight": self.in_flight,
            "output_agreement": {name: _finite(value) for name, value in self.output_agreement.items()},
            "max_rel": {name: _finite(value) for name, value in self.max_rel.items()},
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(slots=True)
class _Tally:
    stats: ShadowStats
    errors: int = 0
    dropped_by: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: str) -> None:
        self.stats.dropped += 1
        self.dropped_by[reason] += 1


class ShadowMirror:
    """Runs shadow copies in the background, at most ``workers`` at once, and
    keeps their comparison per (endpoint, shadow)."""

    def __init__(
        self,
        capacity: int = 1000,
        workers: int = 2,
        tolerance: Tolerance = DEFAULT_TOLERANCE,
        sample_every: int = 100,
        log_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        if capacity < 1 or workers < 1 or sample_every < 1:
            raise ValueError("the shadow mirror's capacity, workers and sample_every must each be at least 1")
        self._waiting: deque[ShadowJob] = deque()
        self._capacity = capacity
        self._budget = workers  # copies in flight at most
        self._running: dict[asyncio.Task[None], ShadowJob] = {}
        self._cancelled: dict[asyncio.Task[None], str] = {}  # running copies this mirror cancelled, and why
        self._tolerance = tolerance
        self._sample_every = sample_every
        self._log = JsonLines(log_path) if log_path is not None else None
        self._clock = clock
        self._busy = busy
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._started = False
        self._idle = asyncio.Event()  # nothing queued or running: what close waits for
        self._idle.set()
        self._closed = False
        self._closing: asyncio.Task[None] | None = None

    def offer(self, job: ShadowJob) -> bool:
        """Run a copy for the shadow now, or queue it, or drop it (counted); True unless dropped.

        Event loop only. Never waits and never raises, so the primary's latency
        does not depend on the shadow.
        """
        tally = self._tally(job.endpoint, job.shadow)
        if self._closed:
            tally.drop(CLOSED)
            return False
        if self._started and len(self._running) < self._budget:
            self._run(job)
            return True
        if len(self._waiting) >= self._capacity:
            tally.drop(FULL)
            return False
        self._waiting.append(job)
        self._idle.clear()
        return True

    def admits(self, endpoint: str, shadow: str, in_flight: int) -> bool:
        """Whether to make a copy of a request now, ``in_flight`` requests being
        served (this one included); False, counted as dropped (busy), when more
        than the budget of copies are in flight besides it, or the process is
        busy (``busy``: its CPU time, say). Asked before the copy is made, so a
        busy server spends nothing on it."""
        if in_flight > self._budget + 1 or self._busy():
            self._tally(endpoint, shadow).drop(BUSY)
            return False
        return True

    @property
    def budget(self) -> int:
        """Copies in flight at most."""
        return self._budget

    def start(self) -> None:
        """Run what was offered before (and the log writer) on the running loop; a second call does nothing."""
        if self._started or self._closed:
            return
        self._started = True
        if self._log is not None:
            self._log.start()
        self._next()

    def stop(self, endpoint: str, keep: Collection[str] = ()) -> int:
        """``endpoint`` no longer mirrors to any shadow but those in ``keep``:
        drop the others' queued copies and cancel their running ones, now.
        Returns how many copies were stopped."""
        stopped = 0
        if any(job.endpoint == endpoint and job.shadow not in keep for job in self._waiting):
            kept: deque[ShadowJob] = deque()
            for job in self._waiting:
                if job.endpoint == endpoint and job.shadow not in keep:
                    self._tally(job.endpoint, job.shadow).drop(CANCELLED)
                    stopped += 1
                else:
                    kept.append(job)
            self._waiting = kept
        for task, job in list(self._running.items()):
            if job.endpoint == endpoint and job.shadow not in keep and self._cancel(task, job, CANCELLED):
                stopped += 1
        self._next()  # nothing starts (the cancelled still hold their places until done); idle if empty
        return stopped

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def agreement(self, endpoint: str, shadow: str) -> tuple[int, int]:
        """(compared, agreeing) so far for the pair: a rollout guard's running count."""
        tally = self._tallies.get((endpoint, shadow))
        return (0, 0) if tally is None else (tally.stats.requests, tally.stats.agreeing)

    def snapshot(self, endpoint: str | None = None) -> list[ShadowReport]:
        """Every (endpoint, shadow) pair seen so far, or one endpoint's, sorted by name."""
        queued, running = self.queued, self.in_flight
        return [
            _report(key, tally, queued, running)
            for key, tally in sorted(self._tallies.items())
            if endpoint is None or key[0] == endpoint
        ]

    async def close(self, timeout: float) -> None:
        """Stop accepting copies, let those queued and running finish within ``timeout``
        seconds, then cancel what is left (counted as dropped). Safe to call more than once;
        later calls wait for the first to finish."""
        self._closed = True
        if self._closing is None:
            self._closing = asyncio.create_task(self._shut_down(timeout))
        await asyncio.shield(self._closing)

    async def _shut_down(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        if self._started:
            try:
                async with asyncio.timeout_at(deadline):
                    await self._idle.wait()
            except TimeoutError:
                pass
        while self._waiting:  # never started, or out of time
            job = self._waiting.popleft()
            self._tally(job.endpoint, job.shadow).drop(CLOSED)
        running = list(self._running.items())
        for task, job in running:
            self._cancel(task, job, CLOSED)
        await asyncio.gather(*(task for task, _ in running), return_exceptions=True)
        if self._log is not None:
            await self._log.close(deadline)

    def _tally(self, endpoint: str, shadow: str) -> _Tally:
        key = (endpoint, shadow)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally(ShadowStats(sample_every=self._sample_every))
        return tally

    def _run(self, job: ShadowJob) -> None:
        task = asyncio.create_task(self._mirror(job), name=f"shadow-{job.endpoint}-{job.shadow}")
        self._running[task] = job
        self._idle.clear()
        task.add_done_callback(self._finished)

    def _cancel(self, task: asyncio.Task[None], job: ShadowJob, reason: str) -> bool:
        """Cancel a running copy, counted as dropped at once; False if it was already done or cancelled."""
        if task in self._cancelled or not task.cancel():
            return False
        self._cancelled[task] = reason
        self._tally(job.endpoint, job.shadow).drop(reason)
        return True

    def _finished(self, task: asyncio.Task[None]) -> None:
        job = self._running.pop(task, None)
        counted = self._cancelled.pop(task, None) is not None
        if task.cancelled() and not counted and job is not None:  # cancelled from outside the mirror
            self._tally(job.endpoint, job.shadow).drop(CLOSED)
        self._next()

    def _next(self) -> None:
        """Start queued copies while the budget allows."""
        while self._waiting and len(self._running) < self._budget:
            self._run(self._waiting.popleft())
        if not self._waiting and not self._running:
            self._idle.set()

    async def _mirror(self, job: ShadowJob) -> None:
        tally = self._tally(job.endpoint, job.shadow)
        started = self._clock()
        try:
            outputs = await job.run()
            shadow_seconds = self._clock() - started
            result = compare(job.primary, outputs, self._tolerance)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this task was cancelled: by the mirror (stop, close: counted) or the loop's shutdown
            self._failed(job, tally, exc)  # the shadow's own work was cancelled
            return
        except Exception as exc:
            self._failed(job, tally, exc)
            return
        try:
            if tally.stats.record(result, job.primary_seconds, shadow_seconds) and self._log is not None:
                self._log.write(_disagreement(job, result, outputs, shadow_seconds))
        except Exception:  # a bug here must not go unseen, nor stop the mirror
            log.exception("the shadow mirror failed on request %s of %s", job.request_id, job.endpoint)

    def _failed(self, job: ShadowJob, tally: _Tally, exc: BaseException) -> None:
        tally.errors += 1
        # A broken shadow fails on every copy; one line per many keeps the log readable.
        level = logging.WARNING if (tally.errors - 1) % ERROR_WARNING_EVERY == 0 else logging.DEBUG
        log.log(
            level,
            "shadow %s of %s failed on request %s (%s: %s); %d failures so far, one in %d logged as a warning",
            job.shadow,
            job.endpoint,
            job.request_id,
            type(exc).__name__,
            exc,
            tally.errors,
            ERROR_WARNING_EVERY,
        )


def _report(key: tuple[str, str], tally: _Tally, queued: int, in_flight: int) -> ShadowReport:
    stats = tally.stats
    return ShadowReport(
        endpoint=key[0],
        shadow=key[1],
        requests=stats.requests,
        agreeing=stats.agreeing,
        disagreements=stats.disagreements,
        errors=tally.errors,
        dropped=stats.dropped,
        agreement_rate=stats.agreement_rate,
        mean_latency_difference_seconds=stats.mean_latency_difference,
        max_abs=dict(stats.max_abs),
        mean_abs={name: stats.mean_abs(name) for name in stats.sum_abs},
        queued=queued,
        output_agreement={name: stats.output_agreement(name) for name in stats.output_compared},
        max_rel=dict(stats.max_rel),
        dropped_by=dict(tally.dropped_by),
        in_flight=in_flight,
    )


def _disagreement(job: ShadowJob, result: RequestComparison, shadow: Outputs, shadow_seconds: float) -> dict[str, Any]:
    """One log line. Outputs are flattened and cut to their first elements."""
    return {
        "time": datetime.now(UTC).isoformat(),
        "endpoint": job.endpoint,
        "shadow": job.shadow,
        "request_id": job.request_id,
        "differences": [
            {
                "name": o.name,
                "kind": o.kind,
                "max_abs": o.max_abs,
                "max_rel": o.max_rel,
                "mismatched": o.mismatched,
                "size": o.size,
            }
            for o in result.outputs
        ],
        "missing": list(result.missing),
        "primary_latency_ms": job.primary_seconds * 1000.0,
        "shadow_latency_ms": shadow_seconds * 1000.0,
        "primary_outputs": _head(job.primary),
        "shadow_outputs": _head(shadow),
    }


def _head(outputs: Outputs) -> dict[str, list[Any]]:
    # .flat[:n] copies n elements; ravel() could copy the whole array.
    return {name: np.asarray(value).flat[:LOGGED_ELEMENTS].tolist() for name, value in outputs.items()}
