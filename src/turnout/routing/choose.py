"""Which variant serves a request: a pure function of the policy, the
request's assignment key and a random source, so that every rule is tested
without sockets and with a seeded generator.

Sticky assignment hashes the key with BLAKE2b (not Python's ``hash``, which
changes between processes) onto 10,000 buckets laid out in the order of the
variants' weights, so a key lands on the same variant across restarts and
replicas for as long as the weights stay the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from turnout.routing.policy import ABTest, BlueGreen, Canary, Policy, Shadow, Single

BUCKETS = 10_000


class RandomSource(Protocol):
    def random(self) -> float:
        """A float in [0, 1)."""
        ...


@dataclass(frozen=True, slots=True)
class Decision:
    serve: str  # the variant whose answer the client gets
    mirror: str | None = None  # a variant sent a copy, whose answer is only compared


def choose(policy: Policy, key: str | None, rng: RandomSource) -> Decision:
    if isinstance(policy, Single):
        return Decision(policy.variant)
    if isinstance(policy, BlueGreen):
        return Decision(policy.live)
    if isinstance(policy, Canary):
        # random() < 1, so weight 100 always and weight 0 never picks the candidate
        return Decision(policy.candidate if rng.random() * 100.0 < policy.weight else policy.baseline)
    if isinstance(policy, Shadow):
        mirrored = rng.random() * 100.0 < policy.percent
        return Decision(policy.primary, policy.shadow if mirrored else None)
    if isinstance(policy, ABTest):
        point = bucket(key) / BUCKETS if key is not None else rng.random()
        return Decision(_weighted(policy, point * 100.0))
    raise TypeError(f"not a routing policy: {policy!r}")


def bucket(key: str) -> int:
    """The key's place among ``BUCKETS``, the same in every process."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def _weighted(policy: ABTest, point: float) -> str:
    """The variant whose share of [0, 100) holds ``point``; zero-weight ones never."""
    upper = 0.0
    last = None
    for name, weight in policy.weights:
        if weight <= 0:
            continue
        upper += weight
        last = name
        if point < upper:
            return name
    assert last is not None  # the weights sum to 100
    return last  # rounding at the very top


def alternatives(policy: Policy, chosen: str) -> tuple[str, ...]:
    """Who may serve instead when the chosen variant cannot (unloaded or
    failed to load since the policy was set): the policy's other serving
    variants, in order. A shadow never serves, so a primary has none."""
    if isinstance(policy, Shadow):
        return ()
    return tuple(name for name in policy.variants if name != chosen)
