"""Which replica an attempt goes to: the power of two choices, by least
outstanding requests.

Two replicas drawn at random, the one with fewer requests in flight taken
(ties: the first drawn). It follows load as well as always taking the least
loaded, without every balancer in a fleet piling on the same replica at once
(Mitzenmacher; Ray Serve's and Linkerd's balancers). A retry or a hedge names
the replicas its request already tried (``tried``): another one is taken
while any is left.

Pure: the randomness is passed in.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence


def pick(
    available: Sequence[str], outstanding: Mapping[str, int], rng: random.Random, tried: Collection[str] = ()
) -> str | None:
    """The replica for the next attempt; None when none is available."""
    fresh = ([name for name in available if name not in tried] or available) if tried else available
    if not fresh:
        return None
    if len(fresh) == 1:
        return fresh[0]
    first, second = rng.sample(fresh, 2)
    return second if outstanding.get(second, 0) < outstanding.get(first, 0) else first
