"""Admission control: shed inference at the door while requests queue.

Why not only the model's queue. turnout answers every request on one event
loop. Under overload (issue 15: an open loop at 3x and 5x the closed-loop
capacity) the model's bounded queue never filled while 83-87% of requests
timed out: they waited in kernel socket buffers, a queue no server-side
counter sees, because the loop itself was the bottleneck. And when the model
is the bottleneck instead (on one core, its thread starved by a loop busy
reading requests), the model's queue does fill, but only after each request
was read and decoded, and 1,024 queued requests are seconds of waiting.

What the door measures, once per window of ``interval`` (100 ms):

- event-loop lag (``turnout.overload.lag``): how late a timer that asks to run
  every ``period`` runs. Timers run at the start of a loop turn, so on a
  saturated loop each sample is a turn's length, and a request arriving in a
  socket buffer waits about one turn before its head is read: lag is the
  delay of the hidden queue, for one timer callback per turn. The window's
  *minimum* is kept (CoDel's test for a standing queue): a single long turn (a
  garbage collection, measured at 50-260 ms here; a long batch) is no queue.
- time in flight of admitted inference requests (enter to leave), again its
  window minimum, less a *service floor*: the least time a request takes when
  nothing queues (the lowest window minimum seen, rising slowly, over
  ``FLOOR_RISE`` windows, towards higher minima while the door is open). A
  slow model is not a queue; a 64-client closed loop's steady batch queue
  becomes part of the floor within seconds, so a closed loop at capacity is
  never shed; an open loop's growing queue is not learnt that fast.

Their sum is the queueing delay. Measured on breast_cancer (one core, 64
clients in a closed loop at capacity): lag p50 0.5 ms; the delay per window
p50 1 ms, p99 5-7 ms, at most 8 ms, so ``target`` (20 ms) leaves a margin for
slower machines. In an open loop at 3x capacity without the door: turns of
140-650 ms and over a thousand requests in flight.

How much to admit: an in-flight limit on inference (as Netflix's
concurrency-limits and Envoy's adaptive concurrency filter have), since the
number in flight is what makes both the loop's turns and the model's queue
long, and a limit is self-clocking (a place is given back as a request ends):

- the door is open (no limit) until the delay has been above ``target`` for
  ``STANDING`` windows in a row; it then limits to what is in flight scaled by
  ``target / delay`` (at least ``min_limit``): the count at which the delay
  would be on target if the delay grows in proportion to it (Little's law);
- while limiting, each window moves the limit a ``smoothing`` share of the
  way towards ``limit * gradient + sqrt(limit)``, the gradient being
  ``target / delay`` kept within [0.5, 1] (Netflix's Gradient2): above target
  it shrinks by up to an eighth a window, on target it grows by a quarter of
  its square root, but only if requests were shed (the limit is what holds
  them back). Small steps: a cut shows only once what was admitted before it
  has drained, and steps sized to the delay then overshoot, which measured as
  a limit swinging between 15 and 160 and admitted p99 over 300 ms. It settles
  where the delay is on target, whatever the machine and the model;
- after ``reopen_after`` windows in a row with nothing shed the door opens.

A shed request is answered at once (HTTP 503 with Retry-After, gRPC
RESOURCE_EXHAUSTED), before its body is read; what that costs is the
transport's (a head parsed, a small answer written), and it bounds what any
door can do: a loop that spends all its time refusing has none left to serve.
Health, metadata, metrics and admin requests are never counted or shed
(``FREE``): an overloaded server still says it is alive, and operators still
reach it.

Concurrency: event-loop only, no lock. ``enter`` is on every request's path: a
string test, a compare, a clock read and a small object. The law is pure: the
time comes in with each sample, and the gate's clock is injected, so it is
tested without a loop or sleeping; the probe is the only I/O.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from turnout.overload.gate import FREE, Gate, OpenGate, Pass
from turnout.overload.lag import LagProbe

log = logging.getLogger("turnout.overload")

GRPC_MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"

# Windows in a row above target before an open door starts limiting: one long
# window is a burst; two are a standing queue.
STANDING = 2
# How slowly the service floor rises towards a higher window minimum, in windows
# (64 windows of 100 ms: a time constant of 6.4 s).
FLOOR_RISE = 64


def sheddable(path: str) -> bool:
    """Inference only: REST ``.../infer`` (any model, any version) and gRPC ModelInfer."""
    return path.endswith("/infer") or path == GRPC_MODEL_INFER


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    enabled: bool = True
    target: float = 0.020  # seconds of queueing (loop lag + time in flight over the floor) the door allows
    interval: float = 0.100  # the window over which minima are taken
    period: float = 0.005  # how often the lag probe asks to run
    min_limit: int = 8  # inference requests in flight that are never refused
    smoothing: float = 0.25  # how far the limit moves, per window, towards where the gradient points
    reopen_after: int = 10  # windows in a row with nothing shed before the limit is lifted
    retry_after: int = 1  # seconds a shed client is told to wait (Retry-After)

    def __post_init__(self) -> None:
        if not (self.target > 0 and self.interval > 0 and self.period > 0):
            raise ValueError("admission target, interval and period must be positive")
        if self.min_limit < 1:
            raise ValueError(f"admission min_limit must be at least 1, got {self.min_limit}")
        if not 0 < self.smoothing <= 1:
            raise ValueError(f"admission smoothing must be in (0, 1], got {self.smoothing}")
        if self.reopen_after < 1:
            raise ValueError(f"admission reopen_after must be at least 1, got {self.reopen_after}")
        if self.retry_after < 1:
            raise ValueError(f"Retry-After must be at least 1 s, got {self.retry_after}")


_new = object.__new__


class _Ticket:
    """One admitted inference request; ``leave`` gives its place back once.

    Made and given back on every inference request's path, so neither calls
    further: the gate fills the slots itself (no ``__init__``) and ``leave``
    does the gate's accounting in place."""

    __slots__ = ("_entered", "_gate")

    _gate: AdmissionGate | None
    _entered: float

    def leave(self) -> None:
        gate = self._gate
        if gate is not None:
            self._gate = None
            gate._in_flight -= 1
            gate._done += 1
            sojourn = gate._clock() - self._entered
            if sojourn < gate._sojourn_min:
                gate._sojourn_min = sojourn


class AdmissionGate:
    """The door: ``enter`` for each request, ``observe`` for each lag sample."""

    __slots__ = (
        "_clock",
        "_done",
        "_floor",
        "_in_flight",
        "_lag_min",
        "_limit",
        "_over",
        "_quiet",
        "_settings",
        "_shed",
        "_shed_seen",
        "_sojourn_min",
        "_window_start",
        "delay",
        "retry_after",
    )

    def __init__(self, settings: AdmissionSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self.retry_after = settings.retry_after
        self._in_flight = 0
        self._limit = math.inf  # open
        self._shed = 0
        self.delay = 0.0  # the last window's queueing delay, seconds
        self._floor = math.inf  # the service floor, seconds; unknown until a request ends
        self._over = 0  # windows in a row above target
        self._quiet = 0  # windows in a row with nothing shed
        # the current window
        self._window_start = clock()
        self._lag_min = math.inf
        self._sojourn_min = math.inf
        self._done = 0
        self._shed_seen = 0  # the shed count when it began

    def enter(self, path: str) -> Pass | None:
        if not (path.endswith("/infer") or path == GRPC_MODEL_INFER):
            return FREE
        if self._in_flight >= self._limit:
            self._shed += 1
            return None
        self._in_flight += 1
        ticket = _new(_Ticket)
        ticket._gate = self
        ticket._entered = self._clock()
        return ticket

    def observe(self, now: float, lag: float) -> None:
        """One lag sample taken at ``now`` (seconds, the gate's clock); the law runs once a window."""
        if lag < self._lag_min:
            self._lag_min = lag
        if now - self._window_start < self._settings.interval:
            return
        excess = 0.0  # no request ended in the window: its time in flight is unknown, lag alone speaks
        if self._done:
            least = self._sojourn_min
            if least < self._floor:
                self._floor = least
            elif self._limit == math.inf:  # frozen while limiting: a held queue must not become the floor
                self._floor += (least - self._floor) / FLOOR_RISE
            excess = least - self._floor
        self.delay = max(self._lag_min, 0.0) + excess
        shed = self._shed != self._shed_seen
        self._window_start, self._lag_min, self._sojourn_min, self._done = now, math.inf, math.inf, 0
        self._shed_seen = self._shed
        self._decide(shed)

    def _decide(self, shed: bool) -> None:
        s = self._settings
        over = self.delay > s.target
        self._over = self._over + 1 if over else 0
        self._quiet = 0 if shed else self._quiet + 1
        limit = self._limit
        if limit == math.inf:
            if self._over >= STANDING:
                self._limit = max(float(s.min_limit), math.floor(self._in_flight * s.target / self.delay))
                log.warning(
                    "overloaded: requests queue for %.0f ms; admitting at most %d inference requests at once",
                    self.delay * 1e3, self._limit,
                )  # fmt: skip
        elif self._quiet >= s.reopen_after and not over:
            self._limit = math.inf
            log.warning("no longer overloaded: admitting every inference request")
        elif over:
            aim = limit * max(0.5, s.target / self.delay)
            self._limit = max(float(s.min_limit), limit + s.smoothing * (aim - limit))
        elif shed:
            self._limit = limit + s.smoothing * math.sqrt(limit)

    @property
    def limit(self) -> float:
        """Inference requests admitted at once; ``math.inf`` while the door is open."""
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def shed(self) -> int:
        """Requests refused since the start."""
        return self._shed


class Admission:
    """What the composition root holds: the gate the transports call and the
    probe that drives it. ``start()`` once the loop runs (the first sample
    comes ``period`` later), ``close()`` at shutdown; with ``enabled`` off,
    ``gate`` admits everything and nothing runs."""

    def __init__(
        self,
        settings: AdmissionSettings,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.gate: Gate
        self._probe: LagProbe | None = None
        if settings.enabled:
            gate = AdmissionGate(settings, clock)
            self.gate = gate
            self._probe = LagProbe(loop, settings.period, gate.observe, clock)
        else:
            self.gate = OpenGate()

    def start(self) -> None:
        if self._probe is not None:
            self._probe.start()

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
