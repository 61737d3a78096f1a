"""Whether waiting for a batch to fill still pays.

A configured ``max_queue_delay`` is an upper bound, not a promise to wait: a
lone client (concurrency 1) would otherwise pay the whole delay on every
request for a batch that never comes. The controller watches what waiting
brings: while waits gather more requests it keeps waiting; after a wait that
gathered nothing it dispatches at once, and probes again after an interval
that doubles while probes keep finding nothing (up to ``probe_max``), and
falls back to the shortest one as soon as a wait pays again.

Pure: the batcher passes the time in.
"""

from __future__ import annotations


class WaitController:
    def __init__(self, probe_min: float = 0.05, probe_max: float = 1.0) -> None:
        self._probe_min = probe_min
        self._probe_max = probe_max
        self._interval = probe_min
        self._pays = True  # optimistic: the first wait tells
        self._next_probe = 0.0

    def should_wait(self, now: float) -> bool:
        return self._pays or now >= self._next_probe

    def waited(self, gained: int, now: float) -> None:
        """A wait ended with ``gained`` more requests in the batch than when it began."""
        if gained > 0:
            self._pays = True
            self._interval = self._probe_min
        else:
            self._pays = False
            self._next_probe = now + self._interval
            self._interval = min(self._interval * 2, self._probe_max)
