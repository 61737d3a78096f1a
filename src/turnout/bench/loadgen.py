"""Closed- and open-loop load over any V2 transport.

A *sender* sends one pre-built request and says how it went: ``None`` for a
success, or an error kind (``http_503``, ``grpc_UNAVAILABLE``, ``connection``).
Latencies are taken with ``perf_counter_ns``; in open loop they are measured
from the time a request was due, not sent, so a slow server cannot hide its
queueing (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

Send = Callable[[], Awaitable[str | None]]
SenderFactory = Callable[[], Awaitable[Send]]
Progress = Callable[[int, int], None]  # (successes so far, errors so far), about once a second


@dataclass(slots=True)
class Recorder:
    latencies_ns: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    recording: bool = False

    def record(self, started_ns: int, outcome: str | None) -> None:
        if not self.recording:
            return
        if outcome is None:
            self.latencies_ns.append(time.perf_counter_ns() - started_ns)
        else:
            self.errors[outcome] += 1


@dataclass(frozen=True, slots=True)
class Result:
    mode: str  # "closed" or "open"
    concurrency: int | None
    rate: float | None
    duration: float
    requests: int
    throughput: float
    latency_ms: dict[str, float]
    errors: dict[str, int]
    client_cpu_percent: float

    def as_json(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "duration": round(self.duration, 3),
            "requests": self.requests,
            "throughput": round(self.throughput, 1),
            "latency_ms": self.latency_ms,
            "errors": self.errors,
            "client_cpu_percent": round(self.client_cpu_percent, 1),
        }


PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}


def summarise(
    recorder: Recorder, mode: str, concurrency: int | None, rate: float | None, wall: float, cpu: float
) -> Result:
    latencies = np.asarray(recorder.latencies_ns, dtype=np.float64) / 1e6
    quantiles = (
        {name: round(float(np.percentile(latencies, q)), 4) for name, q in PERCENTILES.items()}
        if latencies.size
        else {name: float("nan") for name in PERCENTILES}
    )
    if latencies.size:
        quantiles["mean"] = round(float(latencies.mean()), 4)
    return Result(
        mode,
        concurrency,
        rate,
        wall,
        int(latencies.size),
        latencies.size / wall if wall > 0 else 0.0,
        quantiles,
        dict(recorder.errors),
        100.0 * cpu / wall if wall > 0 else 0.0,
    )


async def closed_loop(
    factory: SenderFactory,
    concurrency: int,
    duration: float,
    warmup: float,
    progress: Progress | None = None,
    busy_poll: bool = False,
) -> Result:
    """``concurrency`` clients, each sending its next request when the last is answered.

    ``busy_poll``: keep the event loop turning instead of sleeping in the
    kernel while requests are out. On a virtual machine, waking an idle core
    takes tens of microseconds, which would be counted in every latency; at
    concurrency 1 that is a large share of what is measured. It costs the
    generator its whole core (the CPU column then reads ~100%).
    """
    recorder = Recorder()
    senders = [await factory() for _ in range(concurrency)]
    stop = asyncio.Event()

    async def client(send: Send) -> None:
        while not stop.is_set():
            started = time.perf_counter_ns()
            recorder.record(started, await _outcome(send))

    async def spin() -> None:
        while not stop.is_set():
            await asyncio.sleep(0)  # a ready task: the loop polls for I/O without blocking

    tasks = [asyncio.create_task(client(s)) for s in senders]
    if busy_poll:
        tasks.append(asyncio.create_task(spin()))
    return await _measure(recorder, tasks, stop, "closed", concurrency, None, duration, warmup, progress)


async def open_loop(
    factory: SenderFactory,
    rate: float,
    duration: float,
    warmup: float,
    max_in_flight: int = 1024,
    progress: Progress | None = None,
) -> Result:
    """Requests due at a fixed rate, whatever the server does; senders are
    reused when free and opened when none is, up to ``max_in_flight``."""
    recorder = Recorder()
    stop = asyncio.Event()
    idle: list[Send] = []
    in_flight = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(due_ns: int) -> None:
        nonlocal in_flight
        send = idle.pop() if idle else await factory()
        recorder.record(due_ns, await _outcome(send))
        idle.append(send)
        in_flight -= 1

    async def schedule() -> None:
        nonlocal in_flight
        interval_ns = int(1e9 / rate)
        due = time.perf_counter_ns()
        while not stop.is_set():
            if in_flight < max_in_flight:
                in_flight += 1
                task = asyncio.create_task(one(due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            else:
                recorder.record(due, "client_overloaded")
            due += interval_ns
            delay = (due - time.perf_counter_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule itself: sending at the rate is the point

    scheduler = asyncio.create_task(schedule())
    result = await _measure(recorder, [scheduler], stop, "open", None, rate, duration, warmup, progress)
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    return result


async def _outcome(send: Send) -> str | None:
    try:
        return await send()
    except (ConnectionError, OSError):
        return "connection"


async def _measure(
    recorder: Recorder,
    tasks: list[asyncio.Task[None]],
    stop: asyncio.Event,
    mode: str,
    concurrency: int | None,
    rate: float | None,
    duration: float,
    warmup: float,
    progress: Progress | None,
) -> Result:
    await asyncio.sleep(warmup)
    recorder.recording = True
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    end = wall_start + duration
    while (left := end - time.perf_counter()) > 0:
        await asyncio.sleep(min(1.0, left))
        if progress is not None:
            progress(len(recorder.latencies_ns), sum(recorder.errors.values()))
    recorder.recording = False
    wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
    stop.set()
    await asyncio.wait(tasks, timeout=30)
    return summarise(recorder, mode, concurrency, rate, wall, cpu)
