"""One request's attempts across an endpoint set, driven by callbacks.

The rules (``endpoint_set``'s docstring): a first attempt, a retry on
another replica for each failed one within the budget, one hedge once the
first has waited past the set's recent quantile, the first answer winning
and the others dropped, nothing past the deadline.

Why callbacks and not a coroutine: a gateway's CPU per request is the
product (issue 21's bar: half a replica's). Driven from the connections'
own callbacks and one timer, a request costs no task, no future and no
extra turn of the loop between the replica's answer and the client's; the
coroutine form (``EndpointSet.exchange``) is this with one future around it.

Event-loop only. ``done`` is called exactly once, unless ``cancel`` came first.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

from turnout.errors import DeadlineExceeded, TurnoutError, Unavailable
from turnout.routing.remote.wire import Answer, ReplicaFailed, _Stale

log = logging.getLogger("turnout.remote")

# (answer, error, replica): the answer and the replica that gave it, or why there is none
Done = Callable[[Answer | None, TurnoutError | None, str], None]


class Attempt:
    """One try at one replica; what its connection calls back when it ends (``ended``)."""

    __slots__ = ("connection", "exchange", "pool", "replica", "started", "task")

    def __init__(self, exchange: Exchange, replica: str, started: float) -> None:
        self.exchange = exchange
        self.replica = replica
        self.started = started
        self.pool: Any = None  # its own, kept: the replica may leave the set (DNS) while the attempt runs
        self.connection: Any = None  # a kept connection; None: ``task`` opens a new one
        self.task: asyncio.Task[Answer] | None = None

    def ended(self, answer: Answer | None, error: ReplicaFailed | None) -> None:
        self.exchange._ended(self, answer, error)


class Attempts(Protocol):
    """What an exchange asks of its endpoint set (``EndpointSet``)."""

    name: str

    @property
    def max_attempts(self) -> int: ...

    def clock(self) -> float: ...

    def requested(self, now: float) -> None:
        """A request began (the retry budget's denominator)."""

    def choose(self, now: float, tried: list[str], extra: str | None) -> str | None:
        """The replica for the next attempt; None when none may go (an extra one: nor the budget allows it)."""

    def send(self, attempt: Attempt, path: bytes, headers: bytes, body: bytes, anew: bool = False) -> None:
        """Send the attempt (``anew``: again, on a new connection: the kept one was
        closed before the replica read it); it calls back ``attempt.ended``."""

    def settled(self, attempt: Attempt, answer: Answer | None, error: ReplicaFailed | None) -> bool:
        """Book an attempt that ended; True when its answer is the one to give."""

    def dropped(self, attempt: Attempt) -> None:
        """An attempt given up (a loser, a deadline, a cancel): its connection dropped."""

    def hedge_at(self, started: float) -> float: ...

    def why_none(self) -> str: ...


class Exchange:
    __slots__ = (
        "_body",
        "_deadline",
        "_done",
        "_failures",
        "_headers",
        "_hedge_at",
        "_loop",
        "_over",
        "_path",
        "_running",
        "_set",
        "_timer",
        "_tried",
    )  # fmt: skip

    def __init__(self, attempts: Attempts, path: bytes, headers: bytes, body: bytes, deadline: float, done: Done):
        self._set = attempts
        self._path, self._headers, self._body = path, headers, body
        self._deadline = deadline  # the clock's time
        self._done = done
        self._tried: list[str] = []
        self._running: list[Attempt] = []
        self._failures: list[str] = []
        self._hedge_at = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._over = False
        self._loop = asyncio.get_running_loop()

    def begin(self) -> None:
        """The first attempt; raises ``Unavailable`` (and calls nothing) when no replica may take it."""
        attempts = self._set
        now = attempts.clock()
        attempts.requested(now)
        self._start(now, None)
        if not self._running:
            self._over = True
            raise Unavailable(f"{attempts.name}: no replica is available ({attempts.why_none()})", retry_after=1.0)
        self._hedge_at = attempts.hedge_at(now)
        self._arm(now)

    def cancel(self) -> None:
        """The caller gave up: every attempt dropped, ``done`` never called."""
        if not self._over:
            self._over = True
            self._stop()

    # what moves it on

    def _start(self, now: float, extra: str | None) -> None:
        if extra is not None and (len(self._tried) >= self._set.max_attempts or now >= self._deadline):
            return
        replica = self._set.choose(now, self._tried, extra)
        if replica is None:
            return
        self._tried.append(replica)
        attempt = Attempt(self, replica, now)
        self._running.append(attempt)
        try:
            self._set.send(attempt, self._path, self._headers, self._body)
        except Exception as exc:  # a bug: the attempt failed to go, and counts as failed; the exchange goes on
            log.exception("%s: an attempt to %s could not be sent", self._set.name, replica)
            self._running.remove(attempt)
            self._failures.append(f"{replica}: {exc!r}")

    def _ended(self, attempt: Attempt, answer: Answer | None, error: ReplicaFailed | None) -> None:
        if self._over:
            return  # a loser's end, after the winner's or the deadline (it was dropped then)
        self._running.remove(attempt)
        if isinstance(error, _Stale):  # the replica never read it: the same attempt, on a new connection
            self._running.append(attempt)
            self._set.send(attempt, self._path, self._headers, self._body, anew=True)
            return
        try:
            answered = self._set.settled(attempt, answer, error)
        except Exception:  # a bug in the booking: the answer still goes to the client
            log.exception("%s: booking an attempt failed", self._set.name)
            answered = answer is not None
        if answered:
            self._finish(answer, None, attempt.replica)
            return
        self._failures.append(f"{attempt.replica}: {_failure(answer, error)}")
        self._start(self._set.clock(), "retry")
        if not self._running:
            self._finish(None, Unavailable(f"{self._set.name}: no replica answered ({'; '.join(self._failures)})",
                                           retry_after=1.0), "")  # fmt: skip

    def _arm(self, now: float) -> None:
        self._timer = self._loop.call_later(max(min(self._deadline, self._hedge_at) - now, 0.0), self._timed)

    def _timed(self) -> None:
        self._timer = None
        if self._over:
            return
        now = self._set.clock()
        if now >= self._deadline:
            self._finish(None, DeadlineExceeded(f"{self._set.name}: no answer from {', '.join(self._tried)} in time"),
                         "")  # fmt: skip
            return
        if now >= self._hedge_at:
            self._hedge_at = math.inf  # one hedge a request
            self._start(now, "hedge")  # never raises: a hedge that cannot go leaves the first to run on
        self._arm(now)

    def _finish(self, answer: Answer | None, error: TurnoutError | None, replica: str) -> None:
        self._over = True
        self._stop()
        try:
            self._done(answer, error, replica)
        except Exception:  # a bug in the caller's callback: never the replica connection's to die of
            log.exception("%s: handing out an answer failed", self._set.name)

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        running, self._running = self._running, []
        for attempt in running:  # the losers, or all on a deadline or a cancel
            self._set.dropped(attempt)


def _failure(answer: Answer | None, error: ReplicaFailed | None) -> str:
    if error is not None:
        return str(error) or type(error).__name__
    assert answer is not None
    return f"{answer.status} {answer.body[:120].decode('utf-8', 'replace')}"
