"""Whatever the arrivals, sizes, shapes, failures and cancellations: every request
gets its own rows, or the error of the one batch it was in.

The fake model records which request ids (carried in the rows) each predict
call saw, and fails any call holding a poisoned row; that record is the oracle.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.batcher.batching_fakes import Call, RecordingObserver, RowModel, check_own_rows, request, running
from turnout.batcher.planner import BatchLimits
from turnout.batcher.queue import Batcher, BatchResult
from turnout.errors import InferenceFailed

# weighted towards one batch key, so that most requests can share batches
SHAPES = [(3,), (3,), (3,), (2,), (2, 3)]
DTYPES = [np.float64, np.float64, np.float32]
OUTPUTS = [("y",), ("s",), ("s", "y")]


@dataclass(frozen=True)
class Spec:
    rows: int
    inner: tuple[int, ...]
    dtype: Any
    poison: bool
    outputs: tuple[str, ...]
    pause: int  # event-loop turns before submitting
    cancel_after: int | None  # event-loop turns after submitting, then cancel


@dataclass(frozen=True)
class Setup:
    limits: BatchLimits
    instances: int
    specs: list[Spec]
    inline_below: float  # 0: predict always in a thread; 1: on the loop (and the lone-request fast path)


@st.composite
def setups(draw: st.DrawFn) -> Setup:
    max_batch_size = draw(st.integers(0, 6))
    preferred = draw(st.lists(st.integers(1, max(max_batch_size, 1)), max_size=2, unique=True))
    limits = BatchLimits(max_batch_size, draw(st.sampled_from([0.0, 0.001])), tuple(preferred))
    spec = st.builds(
        Spec,
        rows=st.integers(1, max_batch_size or 3),  # validation keeps rows within max_batch_size
        inner=st.sampled_from(SHAPES),
        dtype=st.sampled_from(DTYPES),
        poison=st.integers(0, 5).map(lambda n: n == 0),
        outputs=st.sampled_from(OUTPUTS),
        pause=st.sampled_from([0, 0, 1, 2, 3]),
        cancel_after=st.one_of(st.none(), st.none(), st.none(), st.integers(0, 3)),
    )
    return Setup(
        limits,
        draw(st.integers(1, 2)),
        draw(st.lists(spec, min_size=2, max_size=16)),
        draw(st.sampled_from([0.0, 1.0])),
    )


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)  # yields to the loop: varies the arrival order, synchronises nothing


async def _client(batcher: Batcher, rid: int, spec: Spec) -> BatchResult:
    await _turns(spec.pause)
    inputs = request(rid, spec.rows, spec.inner, spec.dtype, spec.poison)
    task = asyncio.create_task(batcher.submit(inputs, spec.outputs))
    if spec.cancel_after is not None:
        await _turns(spec.cancel_after)
        task.cancel()
    return await task


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setup=setups())
def test_each_request_gets_its_own_rows_or_its_batchs_error(setup: Setup) -> None:
    models = [RowModel() for _ in range(setup.instances)]
    observer = RecordingObserver()

    async def scenario() -> list[BatchResult | BaseException]:
        async with running(
            models, setup.limits, max_queue_size=64, observer=observer, inline_below=setup.inline_below
        ) as batcher:
            clients = (_client(batcher, rid, spec) for rid, spec in enumerate(setup.specs))
            return await asyncio.gather(*clients, return_exceptions=True)

    results = asyncio.run(asyncio.wait_for(scenario(), 30))
    calls = [call for model in models for call in model.seen()]
    specs = setup.specs
    max_batch_size = setup.limits.max_batch_size

    def batch_rows(call: Call) -> int:
        # without a batch axis the first dimension is not rows: each request counts as one
        return call.rows if max_batch_size else len(call.ids)

    ran = Counter(rid for call in calls for rid in call.ids)
    batch_of = {rid: call for call in calls for rid in call.ids}
    for rid, spec in enumerate(specs):
        # each request runs once at most, and exactly once unless it was cancelled
        assert ran[rid] == 1 or (ran[rid] == 0 and spec.cancel_after is not None), rid

    for call in calls:
        members = [specs[rid] for rid in call.ids]
        assert call.rows == sum(s.rows for s in members)
        if max_batch_size == 0:
            assert len(call.ids) == 1
        else:
            assert call.rows <= max_batch_size
        # one batch key per call: the same inner shape and dtype for everyone in it
        assert all(s.inner == call.inner and np.dtype(s.dtype) == call.dtype for s in members)
        assert call.outputs == tuple(sorted({name for s in members for name in s.outputs}))
        assert call.failed == any(s.poison for s in members)
        if len(call.ids) > 1:
            event("a poisoned batch with several requests" if call.failed else "a batch of several requests")

    for rid, (spec, result) in enumerate(zip(specs, results, strict=True)):
        if isinstance(result, asyncio.CancelledError):
            assert spec.cancel_after is not None
            event("cancelled while running" if rid in batch_of else "cancelled while queued")
            continue
        call = batch_of[rid]
        if call.failed:
            assert isinstance(result, InferenceFailed), (rid, result)
        else:
            assert isinstance(result, BatchResult), (rid, result)
            check_own_rows(request(rid, spec.rows, spec.inner, spec.dtype, spec.poison), result.outputs, spec.outputs)
            assert result.batch_rows == batch_rows(call)

    succeeded = [(batch_rows(call), len(call.ids)) for call in calls if not call.failed]
    assert sorted((rows, n) for rows, n, _ in observer.batches) == sorted(succeeded)
    assert observer.depths[-1:] in ([], [0])  # empty if every request was cancelled before queueing
    assert all(0 <= depth <= len(specs) for depth in observer.depths)
