"""The dispatcher of a model that batches nothing itself: each request runs at
once, on the event loop, many at a time (``LoadedModel.concurrent``: a
pipeline, whose steps batch at their own models' batchers).

Bounded like a queue: past ``max_in_flight`` requests running, a new one is
refused with the same 503 a full queue gives. Draining waits for those
running, within the grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from turnout.batcher.queue import BatchObserver, BatchResult
from turnout.errors import DeadlineExceeded, InferenceFailed, Overloaded, TurnoutError, Unavailable
from turnout.model.runtimes.base import NO_PARAMETERS, LoadedModel, Tensors

T = TypeVar("T")


class Passthrough:
    def __init__(
        self, instances: Sequence[LoadedModel], max_in_flight: int, observer: BatchObserver | None = None
    ) -> None:
        self._instances = list(instances)  # one serves; more would only run the same requests the same way
        self._instance = instances[0]
        self._max_in_flight = max_in_flight
        self._observer = observer
        self._in_flight = 0
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        """Nothing to start: requests run in their own tasks."""

    @property
    def queue_depth(self) -> int:
        return self._in_flight

    @property
    def closing(self) -> bool:
        return self._closing

    def flush(self) -> None:
        """Nothing waits for a batch here."""

    async def submit(
        self,
        inputs: Tensors,
        outputs: Sequence[str],
        timeout: float | None = None,
        parameters: Mapping[str, Any] = NO_PARAMETERS,
    ) -> BatchResult:
        """Run one request now, within ``timeout`` seconds (the model's
        ``timeout_ms`` shortened by the client's deadline): past it the request
        is cancelled, and with it whatever it still waits for (a pipeline's
        steps leave their models' queues), and answered with a timeout."""
        started = time.perf_counter()
        try:
            with self._counted():
                deadline = None if timeout is None else time.monotonic() + timeout
                answer = await self._instance.predict_until(inputs, outputs, parameters, deadline)
        except TimeoutError:
            raise DeadlineExceeded(f"no answer within {timeout:.3g} s") from None
        except TurnoutError:
            raise
        except Exception as exc:
            raise InferenceFailed(f"inference failed: {exc}") from None
        took = time.perf_counter() - started
        missing = [name for name in outputs if name not in answer]
        if missing:
            raise InferenceFailed(f"inference failed: the model did not return output(s) {missing}")
        if self._observer is not None:
            self._observer.batch_ran(1, 1, took)
        return BatchResult({name: answer[name] for name in outputs}, 0.0, took, 1)

    async def relay(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call`` (a request passed on unread: serving/forwarding.py) counted
        and bounded as ``submit`` counts and bounds a request, so draining
        waits for it and a flood past ``max_in_flight`` is refused."""
        self.enter()
        try:
            return await call()
        finally:
            self.leave()

    def enter(self) -> None:
        """One request running (until ``leave``): refused while draining or past
        ``max_in_flight``; draining waits for it."""
        if self._closing:
            raise Unavailable("the model is being unloaded", retry_after=1.0)
        if self._in_flight >= self._max_in_flight:
            raise Overloaded(f"{self._max_in_flight} requests are running already", retry_after=1.0)
        self._in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def may_answer_now(self) -> bool:
        return False

    def submit_now(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> BatchResult | None:
        """Never at once: a request here awaits its model (``submit``)."""
        return None

    async def close(self, grace: float = 30.0) -> None:
        """Refuse new requests, let those running finish (within ``grace``), then release the model."""
        self._closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            return  # still running: left to the garbage collector, not closed under them
        for instance in self._instances:
            await instance.aclose()
