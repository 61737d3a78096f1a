"""Outlier ejection (circuit breaking per replica): a replica that keeps
failing is taken out of its endpoint set for a while, longer each time, and
comes back when that time is up or when a health probe passes.

As Envoy's outlier detection: ``consecutive_failures`` in a row eject (a
success in between resets the count); the ejection lasts ``base_ejection``
times the number of times the replica was ejected, at most
``max_ejection``; at most ``max_ejected_share`` of the set is out at once,
but at least one replica may be, however small the set, so that a set of
two can still shed a dead replica. A replica back in is judged afresh.

Pure: the caller passes the time (``time.monotonic()``) and says what each
attempt came to.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class _Replica:
    failures: int = 0  # consecutive
    ejections: int = 0  # times ejected so far
    out_until: float = -math.inf


class Outliers:
    def __init__(
        self,
        replicas: Iterable[str],
        consecutive_failures: int = 5,
        base_ejection: float = 30.0,
        max_ejection: float = 300.0,
        max_ejected_share: float = 0.5,
    ) -> None:
        self._replicas = {name: _Replica() for name in replicas}
        if not self._replicas or consecutive_failures < 1 or base_ejection <= 0 or not 0 <= max_ejected_share <= 1:
            raise ValueError("outlier ejection needs replicas, consecutive_failures >= 1, base_ejection > 0 "
                             "and 0 <= max_ejected_share <= 1")  # fmt: skip
        self._threshold = consecutive_failures
        self._base, self._max = base_ejection, max(max_ejection, base_ejection)
        self._share = max_ejected_share
        self._most_out = max(1, math.floor(max_ejected_share * len(self._replicas)))

    def replace(self, replicas: Iterable[str]) -> None:
        """The set is now ``replicas`` (a DNS answer changed): those staying keep their state."""
        kept = {name: self._replicas.get(name, _Replica()) for name in replicas}
        if not kept:
            raise ValueError("an endpoint set needs replicas")
        self._replicas = kept
        self._most_out = max(1, math.floor(self._share * len(kept)))

    def succeeded(self, replica: str) -> None:
        state = self._replicas.get(replica)
        if state is not None:  # not one that left the set meanwhile
            state.failures = 0

    def failed(self, replica: str, now: float) -> bool:
        """Count a failed attempt; True when it ejects the replica."""
        state = self._replicas.get(replica)
        if state is None:
            return False
        if state.out_until > now:  # an attempt sent before it went out: it is judged afresh when back
            return False
        state.failures += 1
        if state.failures < self._threshold or self._out(now) >= self._most_out:
            return False
        state.ejections += 1
        state.out_until = now + min(self._base * state.ejections, self._max)
        state.failures = 0
        return True

    def probe_passed(self, replica: str, now: float) -> None:
        """An active health check found the replica answering: back in now."""
        state = self._replicas.get(replica)
        if state is None:
            return
        state.out_until = min(state.out_until, now)
        state.failures = 0

    def available(self, now: float) -> list[str]:
        """The replicas in the set now, in the order given."""
        return [name for name, state in self._replicas.items() if state.out_until <= now]

    def back_at(self, now: float) -> float:
        """When the first replica out now comes back (infinity: none is out)."""
        return min((state.out_until for state in self._replicas.values() if state.out_until > now), default=math.inf)

    def ejected(self, now: float) -> list[str]:
        return [name for name, state in self._replicas.items() if state.out_until > now]

    def _out(self, now: float) -> int:
        return sum(1 for state in self._replicas.values() if state.out_until > now)
