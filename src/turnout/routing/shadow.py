"""Mirroring requests to a shadow variant, off the primary's path.

Under a shadow policy the primary variant answers the client; a copy of the
request goes to the shadow variant later, and the two outputs are compared
(``compare``) and counted (``ShadowStats``) per (endpoint, shadow variant).

The primary must not pay for the shadow: ``offer`` is O(1), never waits and
never raises. Copies wait in one bounded queue; when it is full the copy is
dropped and counted, because a shadow that cannot keep up should lose samples,
not slow the service or grow memory. A few worker tasks run the copies; a
shadow that fails is counted as an error and never takes a worker down.

Sampled disagreements go to a JSON Lines file, written from a thread so that
the event loop never waits on the disk.

Concurrency: everything here runs on one event loop (offer, the workers,
snapshot and the metrics scrape), so the counters need no lock. The mirror
knows only jobs: how a shadow variant is run is the ``run`` callable's concern.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from turnout.routing.compare import Outputs, RequestComparison, ShadowStats, Tolerance, compare

log = logging.getLogger("turnout.shadow")

LOGGED_ELEMENTS = 20  # of each output, in a logged disagreement: enough to see it, small enough to keep
ERROR_WARNING_EVERY = 100  # one warning per key in this many failed shadow runs; the rest at debug
DEFAULT_TOLERANCE = Tolerance()
LOG_BACKLOG = 1000  # disagreement lines waiting for the disk; beyond, lines are lost (and counted)


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
    dropped: int  # copies never run: the queue was full, or the mirror closed
    agreement_rate: float  # nan when nothing was compared
    mean_latency_difference_seconds: float  # shadow minus primary; nan when nothing was compared
    max_abs: dict[str, float]  # numeric outputs only
    mean_abs: dict[str, float]
    queued: int  # copies waiting in the mirror's queue, all keys together
    output_agreement: dict[str, float] = field(default_factory=dict)  # per output; labels: classification agreement
    max_rel: dict[str, float] = field(default_factory=dict)  # numeric outputs: the largest relative difference

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
            "agreement_rate": _finite(self.agreement_rate),
            "mean_latency_difference_seconds": _finite(self.mean_latency_difference_seconds),
            "max_abs": {name: _finite(value) for name, value in self.max_abs.items()},
            "mean_abs": {name: _finite(value) for name, value in self.mean_abs.items()},
            "queued": self.queued,
            "output_agreement": {name: _finite(value) for name, value in self.output_agreement.items()},
            "max_rel": {name: _finite(value) for name, value in self.max_rel.items()},
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(slots=True)
class _Tally:
    stats: ShadowStats
    errors: int = 0


class ShadowMirror:
    """Runs shadow copies in the background and keeps their comparison per (endpoint, shadow)."""

    def __init__(
        self,
        capacity: int = 1000,
        workers: int = 2,
        tolerance: Tolerance = DEFAULT_TOLERANCE,
        sample_every: int = 100,
        log_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # asyncio.Queue(0) would be unbounded: exactly what the mirror must never be.
        if capacity < 1 or workers < 1 or sample_every < 1:
            raise ValueError("the shadow mirror's capacity, workers and sample_every must each be at least 1")
        self._queue: asyncio.Queue[ShadowJob] = asyncio.Queue(capacity)
        self._workers = workers
        self._tolerance = tolerance
        self._sample_every = sample_every
        self._log = _JsonLines(log_path) if log_path is not None else None
        self._clock = clock
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._closing: asyncio.Task[None] | None = None

    def offer(self, job: ShadowJob) -> bool:
        """Queue a copy for the shadow; False (and counted as dropped) when full or closed.

        Event loop only. Never waits and never raises, so the primary's latency
        does not depend on the shadow.
        """
        tally = self._tally(job.endpoint, job.shadow)
        if self._closed:
            tally.stats.dropped += 1
            return False
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            tally.stats.dropped += 1
            return False
        return True

    def start(self) -> None:
        """Start the workers (and the log writer) on the running loop; a second call does nothing."""
        if self._tasks or self._closed:
            return
        self._tasks = [asyncio.create_task(self._work(), name=f"shadow-worker-{i}") for i in range(self._workers)]
        if self._log is not None:
            self._log.start()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def agreement(self, endpoint: str, shadow: str) -> tuple[int, int]:
        """(compared, agreeing) so far for the pair: a rollout guard's running count."""
        tally = self._tallies.get((endpoint, shadow))
        return (0, 0) if tally is None else (tally.stats.requests, tally.stats.agreeing)

    def snapshot(self, endpoint: str | None = None) -> list[ShadowReport]:
        """Every (endpoint, shadow) pair seen so far, or one endpoint's, sorted by name."""
        queued = self.queued
        return [
            _report(key, tally, queued)
            for key, tally in sorted(self._tallies.items())
            if endpoint is None or key[0] == endpoint
        ]

    async def close(self, timeout: float) -> None:
        """Stop accepting copies, let the workers finish the queued ones within ``timeout``
        seconds, then cancel what is left (counted as dropped). Safe to call more than once;
        later calls wait for the first to finish."""
        self._closed = True
        if self._closing is None:
            self._closing = asyncio.create_task(self._shut_down(timeout))
        await asyncio.shield(self._closing)

    async def _shut_down(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        if self._tasks:
            try:
                async with asyncio.timeout_at(deadline):
                    await self._queue.join()
            except TimeoutError:
                pass
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._queue.empty():  # never started, or out of time
            job = self._queue.get_nowait()
            self._tally(job.endpoint, job.shadow).stats.dropped += 1
        if self._log is not None:
            await self._log.close(deadline)

    def _tally(self, endpoint: str, shadow: str) -> _Tally:
        key = (endpoint, shadow)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally(ShadowStats(sample_every=self._sample_every))
        return tally

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._mirror(job)
            except asyncio.CancelledError:
                self._tally(job.endpoint, job.shadow).stats.dropped += 1  # close() ran out of time
                raise
            except Exception:  # a bug here must not stop the mirror: keep the worker
                log.exception("the shadow mirror failed on request %s of %s", job.request_id, job.endpoint)
            finally:
                self._queue.task_done()

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
                raise  # close() is stopping this worker
            self._failed(job, tally, exc)  # the shadow's own work was cancelled, not this worker
            return
        except Exception as exc:
            self._failed(job, tally, exc)
            return
        if tally.stats.record(result, job.primary_seconds, shadow_seconds) and self._log is not None:
            self._log.write(_disagreement(job, result, outputs, shadow_seconds))

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


def _report(key: tuple[str, str], tally: _Tally, queued: int) -> ShadowReport:
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


def _json_default(value: object) -> str:
    """orjson's fallback: text outputs arrive as bytes; anything else odd is written as its str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


@dataclass(slots=True)
class _JsonLines:
    """Appends JSON lines to a file from a thread, batching whatever queued up meanwhile.

    Lines are serialised on the loop (cheap: sampled and truncated) and appended
    by one writer task, so their order is kept. orjson writes nan and infinities
    as null. A disk that cannot keep up loses lines past ``LOG_BACKLOG`` (counted
    in ``lost``) rather than holding memory; a failing disk is logged, not raised.
    """

    path: Path
    lost: int = 0
    _pending: list[bytes] = field(default_factory=list)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _closing: bool = False
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="shadow-log-writer")

    def write(self, record: Mapping[str, Any]) -> None:
        if len(self._pending) >= LOG_BACKLOG:
            self.lost += 1
            return
        self._pending.append(orjson.dumps(record, default=_json_default) + b"\n")
        self._wake.set()

    async def close(self, deadline: float) -> None:
        """Write what is pending, until ``deadline`` (loop time)."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending:
                lines, self._pending = self._pending, []
                try:
                    await asyncio.to_thread(_append, self.path, b"".join(lines))
                except OSError as exc:
                    log.warning("cannot write the shadow disagreement log %s: %s", self.path, exc)
            if self._closing and not self._pending:
                return


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as file:
        file.write(data)
