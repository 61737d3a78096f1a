"""The priority of a batcher's instance threads: lower for a model that may
wait (a shadow), so it yields the core to the ones clients wait for."""

from __future__ import annotations

import contextlib
import os
import threading


def lower_priority(niceness: int) -> None:
    """Run this instance thread at a lower CPU priority (Linux schedules
    threads one by one), so a model that may wait (a shadow) yields the core
    to the ones clients wait for.

    At 19, the lowest, the thread also goes under SCHED_IDLE: Linux then runs
    it only on a core nothing else wants and preempts it the moment another
    thread wakes. A nice-19 thread alone still held the core for up to a
    scheduler slice after the event loop woke: a 3 ms shadow copy then
    doubled the primary's p99 at 400 requests/s (BENCHMARKS.md, Shadow traffic).
    Lowering a thread's own policy needs no privilege."""
    if niceness and hasattr(os, "setpriority"):
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + niceness))
    if niceness >= 19 and hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):  # a kernel without it keeps the niceness alone
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: the calling thread
