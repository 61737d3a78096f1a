"""One remote endpoint set at work: a request's attempts across the replicas.

Each request is one or more attempts, never more than ``max_attempts``:

- the first goes to the replica ``balance.pick`` chooses (the power of two
  choices by least outstanding attempts) among those neither ejected
  (``ejection.Outliers``) nor failing their health probe;
- a failed attempt (no answer: refused, reset, closed early, a broken
  answer; or 502, 503, 504) is counted against its replica and retried on
  another, if the retry budget (``budget.RetryBudget``) allows;
- once the first has waited past the set's recent p95
  (``latency.RecentLatency``), a hedge goes to another replica, from the
  same budget; the first answer wins and the other attempt is cancelled (its
  connection dropped, so the replica stops writing to it);
- nothing outlives the request's deadline, which the caller passes on to
  the replica as well (the ``timeout`` parameter).

Any other answer (200, a 4xx, a model's 500) is the answer: retrying a
request the replica understood and refused would only repeat it.

A request's attempts are driven by callbacks (``exchange.py``): an attempt
on a kept connection is called back by that connection's protocol, with no
task or future per attempt on the common path (a task costs about as much
as the rest of a gateway's bookkeeping for a request).

Health probes and DNS refreshes run in one task per set, started with the
first request (a version loads in a worker thread, with no loop to start it
on) and stopped by ``close``.

Event-loop only.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from turnout.errors import TurnoutError
from turnout.routing.remote.balance import pick
from turnout.routing.remote.budget import RetryBudget
from turnout.routing.remote.ejection import Outliers
from turnout.routing.remote.exchange import Attempt, Done, Exchange
from turnout.routing.remote.latency import RecentLatency
from turnout.routing.remote.settings import RemoteSettings, split_address
from turnout.routing.remote.wire import Answer, ConnectFailed, Pool, ReplicaFailed, request_head

log = logging.getLogger("turnout.remote")

HEDGES_LEAVE = 0.5  # of the retry budget, kept for retries: hedges never take the last half of it
FAILED_STATUSES = frozenset({502, 503, 504})  # the replica could not take it: another may


class RemoteObserver(Protocol):
    def attempted(self, replica: str, outcome: str, seconds: float) -> None:
        """An attempt ended: ``answered``, ``failed`` or ``cancelled`` (a hedge's loser, a deadline)."""

    def extra(self, kind: str) -> None:
        """An extra attempt went: ``retry`` or ``hedge``; or ``refused``: the budget allowed none."""

    def ejected(self, replica: str) -> None: ...

    def left(self, replica: str) -> None:
        """The replica is no longer in the set (DNS): its series go, so pods that come and go do not pile up."""


class NoRemoteObserver:
    def attempted(self, replica: str, outcome: str, seconds: float) -> None:
        pass

    def extra(self, kind: str) -> None:
        pass

    def ejected(self, replica: str) -> None:
        pass

    def left(self, replica: str) -> None:
        pass


class EndpointSet:
    def __init__(
        self,
        name: str,
        target: str,
        settings: RemoteSettings,
        observer: RemoteObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name  # for messages: the model and version it serves
        self._target = target  # the model at the replicas: /v2/models/NAME[/versions/V]
        self._settings = settings
        self._observer = observer or NoRemoteObserver()
        self._clock = clock
        self._rng = rng or random.Random()
        self._pools: dict[str, Pool] = {}
        self._outstanding: dict[str, int] = {}
        self._unhealthy: set[str] = set()
        self._available: list[str] = []
        self._available_until = -math.inf  # until when ``_available`` holds (a replica ejected comes back)
        ejection = settings.ejection
        self._outliers: Outliers | None = None
        self._ejection = (ejection.consecutive_failures, ejection.base_seconds, ejection.max_seconds,
                          ejection.max_ejected_percent / 100)  # fmt: skip
        retries = settings.retries
        self._budget = RetryBudget(retries.budget_percent / 100, retries.window_seconds, retries.min_per_second)
        self._latency = RecentLatency(settings.hedging.quantile)
        self._no_replicas_why = "no replica is known yet"
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False
        if settings.replicas:
            self.set_replicas(settings.replicas)

    # the replicas

    def replicas(self) -> list[str]:
        return list(self._pools)

    def set_replicas(self, addresses: Sequence[str]) -> None:
        """The set is now ``addresses`` (``host:port``): those staying keep their connections and record."""
        wanted = list(dict.fromkeys(addresses))
        self._changed()
        for gone in set(self._pools) - set(wanted):
            self._pools.pop(gone).close()
            self._unhealthy.discard(gone)
            self._outstanding.pop(gone, None)
            self._observer.left(gone)
        settings = self._settings
        for address in wanted:
            if address not in self._pools:
                host, port = split_address(address)
                self._pools[address] = Pool(host, port, settings.max_idle_connections, settings.max_answer_bytes)
                self._outstanding.setdefault(address, 0)
        if not wanted:
            self._outliers = None
        elif self._outliers is None:
            self._outliers = Outliers(wanted, *self._ejection)
        else:
            self._outliers.replace(wanted)

    def available(self, now: float) -> list[str]:
        """The replicas an attempt may go to now: not ejected, and not failing
        their health probe, unless every one is (then a probe, not a replica, may be wrong)."""
        if now < self._available_until:  # nothing changed since it was found: every request asks
            return self._available
        if self._outliers is None:
            self._available, self._available_until = [], math.inf
            return []
        inside = self._outliers.available(now)
        healthy = [name for name in inside if name not in self._unhealthy]
        self._available, self._available_until = healthy or inside, self._outliers.back_at(now)
        return self._available

    def _changed(self) -> None:
        """Membership, health or ejection changed: ``available`` looks again."""
        self._available_until = -math.inf

    # a request

    def can_start(self) -> bool:
        """Whether ``start`` may be called: the set knows its replicas (a DNS name resolves
        with the first request, which ``exchange`` awaits)."""
        return self._watcher is not None

    def start(self, path: bytes, headers: bytes, body: bytes, deadline: float, done: Done) -> Exchange:
        """One request's exchange, driven by callbacks (``exchange.py``): ``done`` gets the
        answer, or why there is none, by ``deadline`` (the clock's time); raises
        ``Unavailable`` at once when no replica may take it."""
        exchange = Exchange(self, path, headers, body, deadline, done)
        exchange.begin()
        return exchange

    async def exchange(self, path: bytes, headers: bytes, body: bytes, deadline: float) -> tuple[Answer, str]:
        """The answer to one request (and the replica that gave it), by
        ``deadline`` (``time.monotonic()``): raises ``Unavailable`` when no
        attempt got an answer, ``DeadlineExceeded`` when time ran out."""
        if self._watcher is None and not self._closed:
            if self._settings.dns is not None and not self._pools:
                await self.resolve()  # the first request: the replicas are not known until the name resolves
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        future: asyncio.Future[tuple[Answer, str]] = asyncio.get_running_loop().create_future()

        def done(answer: Answer | None, error: TurnoutError | None, replica: str) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result((answer, replica))  # type: ignore[arg-type]  # one of the two is given

        exchange = self.start(path, headers, body, deadline, done)
        try:
            return await future
        finally:
            exchange.cancel()  # cancelled (or done: then a no-op)

    # what an exchange asks (exchange.Attempts)

    @property
    def max_attempts(self) -> int:
        return self._settings.retries.max_attempts

    def clock(self) -> float:
        return self._clock()

    def requested(self, now: float) -> None:
        self._budget.request(now)

    def choose(self, now: float, tried: list[str], extra: str | None) -> str | None:
        available = self.available(now)
        fresh = [name for name in available if name not in tried] if tried else available
        if extra is not None:
            if not fresh:
                return None
            if not self._budget.try_spend(now, keep=HEDGES_LEAVE if extra == "hedge" else 0.0):
                self._observer.extra("refused")
                return None
            self._observer.extra(extra)
        return pick(fresh or available, self._outstanding, self._rng)

    def send(self, attempt: Attempt, path: bytes, headers: bytes, body: bytes, anew: bool = False) -> None:
        replica = attempt.replica
        if not anew:
            attempt.pool = self._pools[replica]
        pool = attempt.pool
        head = request_head(b"POST", path, pool.host_header, len(body), headers)
        connection = None if anew else pool.idle_connection()
        attempt.connection = connection
        if connection is not None:
            connection.send(head, body, True, attempt.ended)
        else:
            task = attempt.task = asyncio.get_running_loop().create_task(self._opened(pool, head, body))
            task.add_done_callback(lambda done: _task_ended(done, attempt))
        if not anew:  # counted once sent: an attempt that never went never ends to be uncounted
            self._outstanding[replica] = self._outstanding.get(replica, 0) + 1

    async def _opened(self, pool: Pool, head: bytes, body: bytes) -> Answer:
        """An exchange on a new connection, opened within the connect timeout."""
        try:
            connection = await asyncio.wait_for(pool.open(), self._settings.connect_timeout_ms / 1000)
        except TimeoutError:
            raise ConnectFailed(f"no connection to {pool.host}:{pool.port} within the connect timeout") from None
        try:
            answer = await connection.exchange(head, body, reused=False)
        except BaseException:
            connection.abort()
            raise
        pool.give_back(connection)
        return answer

    def settled(self, attempt: Attempt, answer: Answer | None, error: ReplicaFailed | None) -> bool:
        replica = attempt.replica
        self._finished(replica)
        now = self._clock()
        took = now - attempt.started
        if answer is not None:
            if attempt.connection is not None:
                attempt.pool.give_back(attempt.connection)  # closed instead if the pool has been
            if answer.status not in FAILED_STATUSES:
                self._observer.attempted(replica, "answered", took)
                self._latency.observe(took)
                if self._outliers is not None:
                    self._outliers.succeeded(replica)
                return True
        self._observer.attempted(replica, "failed", took)
        if self._outliers is not None and self._outliers.failed(replica, now):
            self._changed()
            self._observer.ejected(replica)
        if isinstance(error, ConnectFailed) and replica in self._pools:
            # down, not slow: left out at once, as a failed probe would leave it, until a probe passes
            # (ejection needs failures in a row, and may not eject more than its share: a rolling
            # restart takes a replica down while the one before may still be out)
            self._unhealthy.add(replica)
            self._changed()
        return False

    def _finished(self, replica: str) -> None:
        if replica in self._outstanding:  # not one that left the set meanwhile
            self._outstanding[replica] = max(self._outstanding[replica] - 1, 0)

    def dropped(self, attempt: Attempt) -> None:
        self._finished(attempt.replica)
        if attempt.connection is not None:
            attempt.connection.abort()  # the replica stops writing to it; never kept
        if attempt.task is not None and not attempt.task.done():
            attempt.task.cancel()
        self._observer.attempted(attempt.replica, "cancelled", self._clock() - attempt.started)

    def hedge_at(self, started: float) -> float:
        hedging = self._settings.hedging
        recent = self._latency.value() if hedging.enabled else None
        if recent is None:
            return math.inf
        return started + max(recent, hedging.min_delay_ms / 1000)

    def why_none(self) -> str:
        if not self._pools:
            return self._no_replicas_why
        ejected = self._outliers.ejected(self._clock()) if self._outliers is not None else []
        return f"{len(ejected)} of {len(self._pools)} ejected after failing"

    # probes and DNS

    async def _watch(self) -> None:
        settings = self._settings
        next_dns = self._clock() + settings.dns_refresh_seconds if self._pools else 0.0
        while not self._closed:
            now = self._clock()
            try:
                if settings.dns is not None and now >= next_dns:
                    await self.resolve()
                    next_dns = now + settings.dns_refresh_seconds
                await self.probe()
            except Exception:  # membership and health must go on being watched whatever one round met
                log.exception("%s: watching the replicas failed", self.name)
            await asyncio.sleep(settings.health.interval_seconds)

    async def resolve(self) -> None:
        """The replicas from DNS: every address the name has now."""
        assert self._settings.dns is not None
        host, port = split_address(self._settings.dns)
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            self._no_replicas_why = f"{host} does not resolve: {exc}"
            return  # the set stays as it was: a DNS hiccup is not every replica gone
        hosts = {str(a[4][0]) for a in found}
        addresses = sorted(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in hosts)
        self.set_replicas(addresses)

    async def probe(self) -> None:
        """Ask every replica whether the model is ready; those that are not are left out until they are."""
        await asyncio.gather(*(self._probe(replica) for replica in list(self._pools)))

    async def _probe(self, replica: str) -> None:
        pool = self._pools.get(replica)
        if pool is None:
            return
        settings = self._settings
        head = b"GET %s/ready HTTP/1.1\r\nhost: %s\r\n\r\n" % (self._target.encode(), pool.host_header)
        try:
            answer = await asyncio.wait_for(pool.exchange(head, b""), settings.health.timeout_seconds)
            ready = answer.status == 200
        except (ReplicaFailed, TimeoutError):
            ready = False
        if replica not in self._pools:  # it left the set while it was asked
            return
        if ready:
            self._unhealthy.discard(replica)
            if self._outliers is not None:
                self._outliers.probe_passed(replica, self._clock())
        else:
            self._unhealthy.add(replica)
        self._changed()

    async def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        for pool in self._pools.values():
            pool.close()


def _task_ended(task: asyncio.Task[Answer], attempt: Attempt) -> None:
    """An attempt on a new connection ended: its answer, or why there is none, to its exchange."""
    if task.cancelled():
        return  # dropped by its exchange, which is over
    error = task.exception()
    if error is None:
        attempt.ended(task.result(), None)
    elif isinstance(error, ReplicaFailed):
        attempt.ended(None, error)
    else:  # not the replica's doing (a bug): the attempt failed all the same, and is logged
        log.error("%s: an attempt failed: %r", attempt.exchange, error)
        attempt.ended(None, ReplicaFailed(f"the attempt failed: {error!r}"))
