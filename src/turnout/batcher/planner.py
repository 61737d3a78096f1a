"""Which queued requests run together, and when: a pure function of the queue,
the limits and the time, so every rule is testable without an event loop.

Rules, in order, looking at the oldest request (the head):
1. Only requests whose batch key equals the head's join it, oldest first, while
   their rows fit in ``max_batch_size``. A request that does not fit is left for
   a later batch, and so is everything behind it, to keep arrival order within a key.
2. The batch runs now if it is full, if the head has waited ``max_queue_delay``
   (counted from its arrival, or from when the instance became free if that is
   later), if it holds the ``expected`` rows (see below), or if some of its
   requests, oldest first, make up one of ``preferred_sizes`` rows; with
   preferred sizes, a batch is cut at the largest preferred size its requests
   pass, and the rest wait for the next batch.
3. Otherwise wait for another arrival or until the head's delay runs out.

Why the delay may start when the instance frees: requests that arrived while a
batch ran have already waited; if only part of the clients did (the rest are
still getting their answers from that batch and will be back within a round
trip), running the part at once splits the clients into two cohorts that then
alternate for good, each batch half the size. Giving the returning half the
same delay merges them again. Where waiting does not pay, the batcher's
WaitController stops asking for it.

Why ``expected``: the batcher passes the rows of the instance's last batch plus
those that were queued when it finished: the clients it has heard from
recently. Once that many rows wait, the clients answered by the last batch
are back, and a closed loop of clients (a fixed set, each waiting for its
answer before sending again) sends nothing more, so the rest of the delay
would only leave the model idle (measured, large MLP at 8 concurrent clients
with a 1 ms delay: ~0.7 ms of idle model per batch of 8). New clients, or
requests arriving faster than they are answered, still wait up to the delay.
With ``max_batch_size == 0`` the model takes no batch axis: one request per run.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_batch_size: int
    max_queue_delay: float = 0.0  # seconds
    preferred_sizes: tuple[int, ...] = ()


class Pending(Protocol):
    """What the planner reads of a queued request."""

    @property
    def rows(self) -> int: ...
    @property
    def key(self) -> Hashable: ...
    @property
    def arrived(self) -> float:  # monotonic seconds
        ...


@dataclass(frozen=True, slots=True)
class Take:
    indices: tuple[int, ...]  # positions in the queue, ascending


@dataclass(frozen=True, slots=True)
class Wait:
    until: float | None  # None: until something arrives


Plan = Take | Wait


def plan(
    queue: Sequence[Pending],
    limits: BatchLimits,
    now: float,
    free_since: float = float("-inf"),
    expected: int = 0,
) -> Plan:
    if not queue:
        return Wait(None)
    head = queue[0]
    if limits.max_batch_size == 0:
        return Take((0,))

    chosen: list[int] = []
    totals: list[int] = []  # rows after each chosen request
    total = 0
    blocked = False
    for index, item in enumerate(queue):
        if item.key != head.key:
            continue
        if total + item.rows > limits.max_batch_size:
            blocked = True
            break
        total += item.rows
        chosen.append(index)
        totals.append(total)
        if total == limits.max_batch_size:
            break

    if not chosen:  # the head alone exceeds the limit (validation should have refused it): run it alone
        return Take((0,))
    preferred = _longest_preferred_prefix(totals, limits.preferred_sizes)
    deadline = max(head.arrived, free_since) + limits.max_queue_delay
    if total == limits.max_batch_size or blocked or now >= deadline or 0 < expected <= total:
        return Take(tuple(chosen[:preferred]) if preferred else tuple(chosen))
    if preferred:
        return Take(tuple(chosen[:preferred]))
    return Wait(deadline)


def _longest_preferred_prefix(totals: list[int], preferred: tuple[int, ...]) -> int:
    """How many of the chosen requests make the largest preferred size; 0 if none does."""
    for length in range(len(totals), 0, -1):
        if totals[length - 1] in preferred:
            return length
    return 0
