"""A small row-wise model, a recording observer, and the steps that run a
scenario against a batcher, for the batcher's tests.

Each request's rows carry its id (first element of every row) and a poison
flag (second element), so the fake can tell which requests shared a batch and
fail exactly the batches holding a poisoned row.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from turnout.batcher.planner import BatchLimits
from turnout.batcher.queue import Batcher, BatchResult
from turnout.model.runtimes.base import NO_PARAMETERS, LoadedModel, Tensors
from turnout.model.signature import Signature, TensorSpec

Array = np.ndarray[Any, Any]
POISON = 1.0
HOLD_LIMIT = 10.0  # seconds a held predict waits for its gate before failing the test


def request(
    rid: int, rows: int = 1, inner: tuple[int, ...] = (3,), dtype: Any = np.float64, poison: bool = False
) -> dict[str, Array]:
    """Input ``x`` of ``rows`` rows, each tagged with the request id ``rid``."""
    size = int(np.prod(inner))
    assert size >= 2, "a row needs room for the id and the poison flag"
    flat = np.arange(rows * size, dtype=np.float64).reshape(rows, size) / 8.0 + 0.5
    flat[:, 0] = rid
    flat[:, 1] = POISON if poison else 0.0
    return {"x": flat.reshape((rows, *inner)).astype(dtype)}


def expected(inputs: Mapping[str, Array]) -> dict[str, Array]:
    """The fake's function applied to one request alone."""
    x = inputs["x"]
    flat = x.reshape(len(x), -1)
    return {"y": x * 2 + 1, "s": flat.sum(axis=1, keepdims=True)}


def ids_of(x: Array) -> tuple[int, ...]:
    """Request ids of a (batched) input, in row order, each once."""
    return tuple(dict.fromkeys(int(v) for v in x.reshape(len(x), -1)[:, 0]))


@dataclass(frozen=True, slots=True)
class Call:
    ids: tuple[int, ...]
    rows: int
    dtype: np.dtype[Any]
    inner: tuple[int, ...]
    outputs: tuple[str, ...]
    failed: bool
    thread: str


@dataclass(eq=False)
class RowModel(LoadedModel):
    """y = 2x + 1 and s = the sum of each row, computed row by row.

    ``gate``: every predict waits for it (set by default); ``entered`` is set
    once a predict has begun. Fails the whole batch if any row is poisoned,
    or when ``before`` raises.
    """

    gate: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)
    before: Callable[[], None] | None = None
    drop: frozenset[str] = frozenset()  # outputs this model "forgets" to return
    calls: list[Call] = field(default_factory=list)
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.gate.set()

    def hold(self) -> RowModel:
        """Make the next predicts wait for ``gate``; ``started()`` then waits for the next one."""
        self.gate.clear()
        self.entered.clear()
        return self

    @property
    def signature(self) -> Signature | None:
        return Signature(
            (TensorSpec("x", "FP64", (-1, -1)),),
            (TensorSpec("y", "FP64", (-1, -1)), TensorSpec("s", "FP64", (-1, 1))),
        )

    def predict(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> dict[str, Array]:
        x = inputs["x"]
        flat = x.reshape(len(x), -1)
        poisoned = bool((flat[:, 1] == POISON).any())
        call = Call(
            ids_of(x),
            len(x),
            x.dtype,
            x.shape[1:],
            tuple(outputs),
            poisoned,
            threading.current_thread().name,
        )
        with self._lock:
            self.calls.append(call)
        self.entered.set()
        if not self.gate.wait(HOLD_LIMIT):
            raise RuntimeError("the test never released this predict")
        if self.before is not None:
            self.before()
        if poisoned:
            raise RuntimeError("poisoned row")
        full = {"y": x * 2 + 1, "s": flat.sum(axis=1, keepdims=True)}
        return {name: full[name] for name in outputs if name not in self.drop}

    def close(self) -> None:
        self.closed = True

    def seen(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    async def started(self) -> None:
        """Wait until a predict has begun (the worker holds a batch)."""
        assert await asyncio.to_thread(self.entered.wait, HOLD_LIMIT), "no predict started"


class RecordingObserver:
    """Records what the batcher reports; ``depth(n)`` waits for the queue to reach ``n``."""

    def __init__(self) -> None:
        self.depths: list[int] = []
        self.batches: list[tuple[int, int, float]] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def queue_depth(self, depth: int) -> None:
        self.depths.append(depth)
        for wanted, waiter in self._waiters:
            if wanted == depth and not waiter.done():
                waiter.set_result(None)

    def batch_ran(self, rows: int, requests: int, seconds: float) -> None:
        self.batches.append((rows, requests, seconds))

    async def depth(self, wanted: int) -> None:
        if self.depths and self.depths[-1] == wanted:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((wanted, waiter))
        await asyncio.wait_for(waiter, HOLD_LIMIT)


@contextlib.asynccontextmanager
async def running(
    models: Sequence[RowModel],
    limits: BatchLimits,
    max_queue_size: int = 64,
    observer: RecordingObserver | None = None,
    inline_below: float = 0.0,
) -> AsyncIterator[Batcher]:
    """A started batcher, closed on the way out (releasing held models first if a test failed).

    ``inline_below`` is 0 by default: tests that hold a model inside predict
    need predict in a thread, or holding it would hold the event loop too.
    """
    batcher = Batcher(models, limits, max_queue_size, observer, inline_below=inline_below)
    batcher.start()
    try:
        yield batcher
    finally:
        for model in models:
            model.gate.set()
        await batcher.close(grace=HOLD_LIMIT)


def check_own_rows(
    inputs: Mapping[str, Array], outputs: Mapping[str, Array], names: Sequence[str] = ("y", "s")
) -> None:
    """``outputs`` are exactly the named outputs of this request's own rows."""
    want = expected(inputs)
    assert set(outputs) == set(names)
    for name in names:
        assert outputs[name].shape == want[name].shape, name
        assert outputs[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(outputs[name], want[name], err_msg=name)


BOTH = ("y", "s")


def run(scenario: Coroutine[Any, Any, None]) -> None:
    """Run one test's scenario; a hang fails the test instead of stalling the suite."""
    asyncio.run(asyncio.wait_for(scenario, 2 * HOLD_LIMIT))


def submit_all(batcher: Batcher, inputs: list[dict[str, np.ndarray]]) -> list[asyncio.Task[BatchResult]]:
    return [asyncio.create_task(batcher.submit(x, BOTH)) for x in inputs]


async def _release(model: RowModel) -> None:
    """Let the held predict go once the requests submitted alongside are queued.

    ``gather`` starts its coroutines in order, so by the time this runs, every
    submit before it has put its request in the queue.
    """
    model.gate.set()
