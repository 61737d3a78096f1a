"""How busy the process is, from its CPU time: for work that should only use
what the service leaves spare (shadow copies).

Requests in flight say little in a one-loop server: a fast model answers
inline, so with eight clients back to back the loop holds one request at a
time while the next seven wait in socket buffers, unseen. CPU time does not
miss them: the share of the last period the event loop's thread spent on the
CPU, and the share of the process's cores the whole process did. Either
above ``limit``: busy.

``busy`` is called on the request path, so it reads the clocks at most once
per ``period`` and otherwise answers from the last reading. Call it from the
event loop's thread only (the thread clock is that thread's).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Pressure:
    __slots__ = ("_busy", "_clock", "_cores", "_limit", "_period", "_process", "_process_at", "_since", "_thread",
                 "_thread_at")  # fmt: skip

    def __init__(
        self,
        limit: float = 0.75,
        period: float = 0.1,
        cores: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        thread_clock: Callable[[], float] = time.thread_time,
        process_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self._limit = limit
        self._period = period
        self._cores = cores or _cores()
        self._clock, self._thread, self._process = clock, thread_clock, process_clock
        self._since = clock()
        self._thread_at = thread_clock()
        self._process_at = process_clock()
        self._busy = False

    def busy(self) -> bool:
        now = self._clock()
        wall = now - self._since
        if wall < self._period:
            return self._busy
        thread, process = self._thread(), self._process()
        loop_share = (thread - self._thread_at) / wall
        process_share = (process - self._process_at) / (wall * self._cores)
        self._busy = loop_share > self._limit or process_share > self._limit
        self._since, self._thread_at, self._process_at = now, thread, process
        return self._busy
