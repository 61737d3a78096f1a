"""A retry budget: how many extra attempts (retries and hedges) an endpoint
set may send, as a share of the requests it was sent.

Why a share and not a count per request: three retries a request is four
times the load on replicas that are already failing, so retries multiply an
outage. Finagle's RetryBudget and Envoy's retry budget bound them by the
traffic itself, as here: each request deposits ``share`` of an attempt, each
extra attempt withdraws one, both are forgotten after ``window`` seconds, and
a reserve of ``min_per_second`` lets a quiet set retry at all. A hedge spends
from the same budget as a retry: both are load the client did not ask for.

Pure: the caller passes the time (``time.monotonic()``). Counts are kept in
``buckets`` slices of the window, so memory is fixed whatever the traffic.
"""

from __future__ import annotations

import math


class RetryBudget:
    def __init__(self, share: float = 0.2, window: float = 10.0, min_per_second: float = 1.0, buckets: int = 10):
        if not 0.0 <= share <= 1.0 or window <= 0 or min_per_second < 0 or buckets < 1:
            raise ValueError("a retry budget needs 0 <= share <= 1, window > 0, min_per_second >= 0, buckets >= 1")
        self._share = share
        self._reserve = min_per_second * window
        self._width = window / buckets
        self._slots = buckets
        # per slice of the window: which slice it holds (its index since time 0), requests, extra attempts
        self._index = [-1] * buckets
        self._requests = [0] * buckets
        self._spent = [0] * buckets

    def request(self, now: float) -> None:
        """One request sent to the set (its first attempt): ``share`` more attempts may follow."""
        self._requests[self._slot(now)] += 1

    def try_spend(self, now: float, keep: float = 0.0) -> bool:
        """Whether one extra attempt may go now; counted when it may. ``keep``:
        the share of the window's allowance it must leave unspent (a hedge
        leaves half for retries: a failed attempt's retry is an answer, a
        hedge only a faster one, and hedges multiply when every replica slows)."""
        allowance, spent = self._window(now)
        if allowance - spent - keep * allowance < 1.0:
            return False
        self._spent[self._slot(now)] += 1
        return True

    def balance(self, now: float) -> float:
        """Extra attempts the window still allows."""
        allowance, spent = self._window(now)
        return allowance - spent

    def _window(self, now: float) -> tuple[float, int]:
        """(extra attempts the window allows in all, those spent)."""
        current = math.floor(now / self._width)
        requests = spent = 0
        for slot in range(self._slots):
            if current - self._index[slot] < self._slots:  # still inside the window
                requests += self._requests[slot]
                spent += self._spent[slot]
        return self._reserve + self._share * requests, spent

    def _slot(self, now: float) -> int:
        index = math.floor(now / self._width)
        slot = index % self._slots
        if self._index[slot] != index:  # a slice that fell out of the window: start it afresh
            self._index[slot], self._requests[slot], self._spent[slot] = index, 0, 0
        return slot
