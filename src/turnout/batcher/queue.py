"""The dynamic batcher of one model version: a bounded queue and one worker per
model instance.

Concurrency: everything but ``predict`` runs on the event loop, so the queue
needs no lock. Workers sleep on an ``asyncio.Event`` that each arrival sets and
wake early only for the head's delay deadline; there is no polling. Each batch
runs in the batcher's thread pool (one thread per instance), where joining,
``predict`` and splitting happen off the loop. A failure in one batch fails
only that batch's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from turnout.batcher.adaptive import WaitController
from turnout.batcher.calls import INLINE_BELOW_SECONDS, LONE_AFTER_SECONDS, BatchCost, as_error, predict, predict_async
from turnout.batcher.planner import BatchLimits, Take, plan
from turnout.batcher.priority import lower_priority
from turnout.errors import DeadlineExceeded, InvalidRequest, Overloaded, TurnoutError, Unavailable
from turnout.model.runtimes import merge
from turnout.model.runtimes.base import NO_PARAMETERS, LoadedModel, Outputs, Tensors


class BatchObserver(Protocol):
    def queue_depth(self, depth: int) -> None: ...
    def batch_ran(self, rows: int, requests: int, seconds: float) -> None: ...


class _NoObserver:
    def queue_depth(self, depth: int) -> None:
        pass

    def batch_ran(self, rows: int, requests: int, seconds: float) -> None:
        pass


@dataclass(frozen=True, slots=True)
class BatchResult:
    outputs: Outputs
    queue_seconds: float
    compute_seconds: float
    batch_rows: int


@dataclass(slots=True, eq=False)
class _Item:
    inputs: Tensors
    outputs: tuple[str, ...]
    rows: int
    key: Hashable
    arrived: float
    future: asyncio.Future[BatchResult]
    parameters: Mapping[str, Any]  # those the model reads; equal within a batch
    timer: asyncio.TimerHandle | None = None


class Batcher:
    def __init__(
        self,
        instances: Sequence[LoadedModel],
        limits: BatchLimits,
        max_queue_size: int,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        inline_below: float = INLINE_BELOW_SECONDS,
        niceness: int = 0,
    ) -> None:
        if not instances:
            raise ValueError("a batcher needs at least one model instance")
        self._instances = list(instances)
        self._reads = instances[0].parameters  # the request parameters the model reads
        self._limits = limits
        self._max_queue_size = max_queue_size
        self._observer = observer or _NoObserver()
        self._clock = clock
        self._queue: deque[_Item] = deque()
        self._arrival = asyncio.Event()
        self._closing = False
        self._flushing = False
        self._dispatch_now = False  # one plan ignores the batching delay (a request's timeout came due)
        self._idle_workers = 0  # workers waiting for arrivals or for a batching delay to pass
        self._workers: list[asyncio.Task[None]] = []
        # a lone request awaited straight on an instance (_run_now_async) and a batch never overlap on it
        self._running = [asyncio.Lock() for _ in instances]
        self._awaits_lone = instances[0].asynchronous or instances[0].lone_awaits
        self._executor = ThreadPoolExecutor(
            len(instances), thread_name_prefix="turnout-infer", initializer=lower_priority, initargs=(niceness,)
        )
        self._cost = BatchCost(inline_below)
        self._waits = WaitController()
        self._no_wait = dataclasses.replace(limits, max_queue_delay=0.0)
        self._waiting_since: int | None = None  # queued requests when a batching wait began
        self._last_arrival = -math.inf
        # the planner's `expected` after the batch that ended last, whichever instance ran it
        self._expected = 0

    def start(self) -> None:
        """Start one worker per instance on the running loop."""
        self._workers = [
            asyncio.create_task(self._work(instance, running))
            for instance, running in zip(self._instances, self._running, strict=True)
        ]

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def closing(self) -> bool:
        """Draining or closed: what is queued runs, nothing new is taken."""
        return self._closing

    async def submit(
        self,
        inputs: Tensors,
        outputs: Sequence[str],
        timeout: float | None = None,
        parameters: Mapping[str, Any] = NO_PARAMETERS,
    ) -> BatchResult:
        """Queue one request and wait for its own rows of the outputs.

        ``timeout`` bounds the time spent waiting in the queue; once a batch has
        started it runs to completion. ``parameters``: the request's, of which
        the model receives those it reads (``LoadedModel.parameters``); only
        requests that agree on those share a batch.
        """
        if self._closing:
            raise Unavailable("the model is being unloaded", retry_after=1.0)
        if len(self._queue) >= self._max_queue_size:
            raise Overloaded(f"the queue is full ({self._max_queue_size} requests waiting)", retry_after=1.0)
        rows = merge.rows(inputs) if self._limits.max_batch_size else 1
        parameters = self._read(parameters)
        arrived = self._clock()
        lone = arrived - self._last_arrival >= LONE_AFTER_SECONDS
        self._last_arrival = arrived
        if lone and self._cost.cheap() and not self._awaits_lone and self._may_run_now(arrived, rows):
            return self._run_at_once(inputs, tuple(outputs), rows, parameters, arrived)
        key = merge.batch_key(inputs)
        if parameters:
            key = (key, repr(sorted(parameters.items())))
        item = _Item(inputs, tuple(outputs), rows, key, arrived, asyncio.get_running_loop().create_future(), parameters)
        if lone and self._awaits_lone and self._expected <= rows and self._may_run_now(arrived, rows):
            # only while batches have been single requests too: under load, a lull
            # between two batches makes an arrival look lone, and running it alone
            # delays the next batch behind one more round trip (xgb in a worker, REST
            # c=64: 3,000-4,500 requests shed in 4 s, and 7% fewer answered)
            return await self._run_now_async(item)
        if timeout is not None:
            item.timer = asyncio.get_running_loop().call_later(timeout, self._expire, item, timeout)
        self._queue.append(item)
        self._observer.queue_depth(len(self._queue))
        self._arrival.set()
        try:
            return await item.future
        except asyncio.CancelledError:
            self._discard(item)
            raise

    def submit_now(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> BatchResult | None:
        """The answer at once, without awaiting, when ``submit`` would run
        this request inline (lone, a cheap model, every instance idle); None,
        having changed nothing, when it would not: then ``submit`` it. For
        callers that would make a task per request (an ensemble's members)."""
        if not self.may_answer_now():
            return None
        arrived = self._clock()
        rows = merge.rows(inputs) if self._limits.max_batch_size else 1
        if not self._may_run_now(arrived, rows):
            return None
        self._last_arrival = arrived
        return self._run_at_once(inputs, tuple(outputs), rows, self._read(parameters), arrived)

    def may_answer_now(self) -> bool:
        """Whether ``submit_now`` may answer a request arriving now (lone, to
        a cheap model); it may still decline (the instance busy). Changes
        nothing: asked first, it spares a caller's preparing a request that
        will queue anyway (under load, every one)."""
        return (
            not self._closing
            and not self._awaits_lone
            and self._cost.cheap()
            and self._clock() - self._last_arrival >= LONE_AFTER_SECONDS
        )

    def _read(self, parameters: Mapping[str, Any]) -> Mapping[str, Any]:
        """The request parameters the model reads: only requests that agree on them share a batch."""
        if self._reads and parameters:
            return {name: value for name, value in parameters.items() if name in self._reads}
        return NO_PARAMETERS

    def flush(self) -> None:
        """From now on run queued requests at once, without batching delays.

        For shutdown: requests already accepted are answered as soon as an
        instance is free, while new ones are still taken until ``close``.
        """
        self._flushing = True
        self._arrival.set()

    async def close(self, grace: float = 30.0) -> None:
        """Refuse new requests, run those queued (within ``grace``), stop the workers."""
        self._closing = True
        self._arrival.set()
        late: set[asyncio.Task[None]] = set()
        if self._workers:
            _, late = await asyncio.wait(self._workers, timeout=grace)
            for task in late:
                task.cancel()
            # let the cancelled workers fail their running batches before returning
            await asyncio.gather(*late, return_exceptions=True)
        while self._queue:
            item = self._queue.popleft()
            self._fail(item, Unavailable("the model was unloaded before this request ran"))
        self._executor.shutdown(wait=False, cancel_futures=True)
        # An instance whose worker ran out of grace may still be inside predict
        # on its thread: it is left to the garbage collector, not closed under it.
        running = {i for i, worker in enumerate(self._workers) if worker in late}
        for index, instance in enumerate(self._instances):
            if index not in running:
                await instance.aclose()  # on the loop: what it opened there (a pipeline's connections) closes here

    def _expire(self, item: _Item, timeout: float) -> None:
        if self._idle_workers and item in self._queue:
            # A worker is only waiting out the batching delay: run now rather
            # than fail a request that an idle model can answer.
            self._dispatch_now = True
            self._arrival.set()
            return
        if self._discard(item):
            self._fail(item, DeadlineExceeded(f"the request waited {timeout:.3g} s in the queue and timed out"))

    def _discard(self, item: _Item) -> bool:
        """Take ``item`` out of the queue if it is still there (not yet batched)."""
        try:
            self._queue.remove(item)
        except ValueError:
            return False
        if item.timer is not None:
            item.timer.cancel()
        self._observer.queue_depth(len(self._queue))
        return True

    @staticmethod
    def _fail(item: _Item, error: TurnoutError) -> None:
        if item.timer is not None:
            item.timer.cancel()
        if not item.future.done():
            item.future.set_exception(error)

    async def _next_batch(self, free_since: float, expected: int, running: asyncio.Lock) -> list[_Item] | None:
        while True:
            self._arrival.clear()
            if self._closing and not self._queue:
                return None
            if running.locked():  # a lone request runs here (_run_now_async): an idle instance takes these
                await self._arrival.wait()
                continue
            hurry = self._closing or self._flushing or self._dispatch_now
            now = math.inf if hurry else self._clock()
            limits = self._limits if self._waits.should_wait(now) else self._no_wait
            decision = plan(self._queue, limits, now, free_since, expected)
            if isinstance(decision, Take):
                self._dispatch_now = False
                if self._waiting_since is not None:
                    self._waits.waited(len(decision.indices) - self._waiting_since, self._clock())
                    self._waiting_since = None
                return self._take(decision.indices)
            if decision.until is not None and self._waiting_since is None:
                self._waiting_since = len(self._queue)  # a batching wait begins
            self._idle_workers += 1
            try:
                if decision.until is None:
                    await self._arrival.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._arrival.wait(), max(0.0, decision.until - self._clock()))
            finally:
                self._idle_workers -= 1

    def _queued_rows(self) -> int:
        return sum(item.rows for item in self._queue)

    def _take(self, indices: tuple[int, ...]) -> list[_Item]:
        if indices[-1] == len(indices) - 1:  # a prefix: the common case
            batch = [self._queue.popleft() for _ in indices]
        else:
            wanted = set(indices)
            batch = [item for i, item in enumerate(self._queue) if i in wanted]
            self._queue = deque(item for i, item in enumerate(self._queue) if i not in wanted)
        for item in batch:
            if item.timer is not None:
                item.timer.cancel()
        self._observer.queue_depth(len(self._queue))
        return batch

    async def _work(self, instance: LoadedModel, running: asyncio.Lock) -> None:
        loop = asyncio.get_running_loop()
        free_since = -math.inf  # when this instance finished its last batch
        expected = 0  # rows of its last batch plus those queued when it finished (see planner)
        while (batch := await self._next_batch(free_since, expected, running)) is not None:
            batch = [item for item in batch if not item.future.done()]
            if not batch:
                continue
            started = self._clock()
            names = tuple(sorted({name for item in batch for name in item.outputs}))
            try:
                # Joining and splitting hold the GIL whatever thread runs them,
                # so they stay on the loop; only the model may move to a thread.
                # A batch's model call always goes to the instance's thread, even
                # for a fast model: the loop meanwhile reads and decodes the next
                # requests (measured, diabetes REST c=64: 6,299 req/s this way,
                # 5,043 running it on the loop). Lone requests take the fast path
                # in submit() instead.
                inputs = instance.collate([item.inputs for item in batch])
                async with running:
                    outputs, took = await self._run(instance, inputs, names, batch[0].parameters, loop)
                self._cost.observe(took)
                parts = instance.split(outputs, [item.rows for item in batch])
            except asyncio.CancelledError:  # close() ran out of grace: this batch's results will never arrive
                for item in batch:
                    self._fail(item, Unavailable("the model was unloaded while this request ran"))
                raise
            except InvalidRequest as exc:
                # The model found a request it cannot take (a pipeline's unknown
                # entity): only the request at fault may fail, so each runs alone.
                if len(batch) > 1:
                    await self._each_alone(instance, running, batch, loop)
                else:
                    self._fail_batch(batch, exc)
                free_since, expected = self._clock(), 0
                continue
            except Exception as exc:  # the model's failure is reported to this batch only
                self._fail_batch(batch, exc)
                free_since, expected = self._clock(), 0
                continue
            self._deliver(batch, parts, started)
            free_since = self._clock()
            expected = min(sum(item.rows for item in batch) + self._queued_rows(), self._limits.max_batch_size)
            self._expected = expected

    async def _run(
        self,
        instance: LoadedModel,
        inputs: Tensors,
        names: tuple[str, ...],
        parameters: Mapping[str, Any],
        loop: asyncio.AbstractEventLoop,
    ) -> tuple[Outputs, float]:
        if instance.asynchronous:
            return await predict_async(instance, inputs, names, parameters)
        if instance.inline:
            return predict(instance, inputs, names, parameters)
        return await loop.run_in_executor(self._executor, predict, instance, inputs, names, parameters)

    async def _each_alone(
        self, instance: LoadedModel, running: asyncio.Lock, batch: list[_Item], loop: asyncio.AbstractEventLoop
    ) -> None:
        for item in batch:
            if item.future.done():
                continue
            started = self._clock()
            try:
                async with running:
                    outputs, _ = await self._run(instance, item.inputs, item.outputs, item.parameters, loop)
            except Exception as exc:
                self._fail_batch([item], exc)
            else:
                self._deliver([item], [outputs], started)

    def _fail_batch(self, batch: list[_Item], exc: Exception) -> None:
        error = as_error(exc)
        for item in batch:
            self._fail(item, error)

    def _deliver(self, batch: list[_Item], parts: list[Outputs], started: float) -> None:
        finished = self._clock()
        rows = sum(item.rows for item in batch)
        self._observer.batch_ran(rows, len(batch), finished - started)
        for item, part in zip(batch, parts, strict=True):
            if not item.future.done():
                mine = {name: part[name] for name in item.outputs}
                item.future.set_result(BatchResult(mine, started - item.arrived, finished - started, rows))

    def _may_run_now(self, arrived: float, rows: int) -> bool:
        """Whether a lone request may skip the queue: every instance idle, the
        queue empty and no batching wait to be made for it."""
        return (
            self._idle_workers == len(self._workers) > 0
            and not self._running[0].locked()  # a lone request awaited on it (_run_now_async)
            and not self._queue
            and not self._closing
            and (
                self._limits.max_queue_delay == 0
                or self._limits.max_batch_size == 0  # no batch axis: never a wait (planner.py)
                or not self._waits.should_wait(arrived)
                # the planner would take it at once: the clients heard from lately are all here
                or 0 < self._expected <= rows
            )
        )

    def _run_at_once(
        self, inputs: Tensors, outputs: tuple[str, ...], rows: int, parameters: Mapping[str, Any], arrived: float
    ) -> BatchResult:
        """The fast path for a lone request to a cheap model: run it here, on
        the loop, without queueing it and waking a worker (two turns of the
        loop saved), nor making it an item with a future to wait on. No await
        happens in between, so no worker can take the instance meanwhile."""
        try:
            produced, took = predict(self._instances[0], inputs, outputs, parameters)
        except TurnoutError:
            raise
        except Exception as exc:
            raise as_error(exc) from exc
        self._cost.observe(took)
        finished = self._clock()
        self._observer.batch_ran(rows, 1, finished - arrived)
        # `_expected` stays the last queued batch's: were a run here to set it to
        # one row, one lone-looking arrival under load would keep the next ones
        # out of the queue, and batches at one row
        return BatchResult({name: produced[name] for name in outputs}, 0.0, finished - arrived, rows)

    async def _run_now_async(self, item: _Item) -> BatchResult:
        """The fast path for a lone request to a model that awaits it (a worker
        process's round trip): awaited here, whatever its cost, not queued. Other
        instances take the queue meanwhile; this one's worker waits (``_running``)."""
        instance, running = self._instances[0], self._running[0]
        try:
            async with running:
                outputs, took = await predict_async(instance, item.inputs, item.outputs, item.parameters, lone=True)
        except Exception as exc:
            self._fail_batch([item], exc)
        else:
            self._cost.observe(took)
            self._deliver([item], [outputs], item.arrived)
        finally:
            if self._queue:  # even cancelled: this instance's worker takes what came meanwhile and no other did
                self._arrival.set()
        return await item.future
