"""The batcher on a fake row-wise model when requests cannot simply run: a full
queue refuses, requests time out in the queue, failing batches (and a model
missing an output) fail only their own requests, cancelled requests leave,
and closing runs or fails what is queued. Who shares a batch: test_batcher.py.

Each test runs its own event loop with ``asyncio.run``; a held model (its gate
cleared) keeps the single worker busy so that later requests queue up.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.batcher.batching_fakes import (
    BOTH,
    HOLD_LIMIT,
    POISON,
    Call,
    RecordingObserver,
    RowModel,
    _release,
    check_own_rows,
    ids_of,
    request,
    run,
    running,
    submit_all,
)
from turnout.batcher.planner import BatchLimits
from turnout.batcher.queue import Batcher, BatchResult
from turnout.errors import Code, DeadlineExceeded, InferenceFailed, InvalidRequest, Overloaded, Unavailable
from turnout.model.runtimes.base import NO_PARAMETERS


def test_a_full_queue_refuses_with_retry_after() -> None:
    async def scenario() -> None:
        model = RowModel().hold()
        observer = RecordingObserver()
        async with running([model], BatchLimits(8), max_queue_size=2, observer=observer) as batcher:
            first = asyncio.create_task(batcher.submit(request(0), BOTH))
            await model.started()
            queued = submit_all(batcher, [request(1), request(2)])
            await observer.depth(2)
            with pytest.raises(Overloaded) as refused:
                await batcher.submit(request(3), BOTH)
            assert refused.value.code is Code.OVERLOADED
            assert refused.value.retry_after is not None and refused.value.retry_after > 0
            assert batcher.queue_depth == 2
            model.gate.set()
            await first
            await asyncio.gather(*queued)
            # room again once the queue drained
            check_own_rows(request(4), (await batcher.submit(request(4), BOTH)).outputs)
        assert 3 not in {rid for call in model.seen() for rid in call.ids}
        assert max(observer.depths) == 2

    run(scenario())


def test_a_request_times_out_in_the_queue_and_never_runs() -> None:
    async def scenario() -> None:
        model = RowModel().hold()
        observer = RecordingObserver()
        async with running([model], BatchLimits(8), observer=observer) as batcher:
            # the running request's own timeout no longer applies once its batch has started
            first = asyncio.create_task(batcher.submit(request(0), BOTH, timeout=0.05))
            await model.started()
            with pytest.raises(DeadlineExceeded) as late:
                await batcher.submit(request(1), BOTH, timeout=0.05)
            assert late.value.code is Code.TIMEOUT
            assert batcher.queue_depth == 0
            assert observer.depths[-1] == 0
            model.gate.set()
            check_own_rows(request(0), (await first).outputs)
            # a generous timeout does not fire once the request is answered
            check_own_rows(request(2), (await batcher.submit(request(2), BOTH, timeout=HOLD_LIMIT)).outputs)
        assert [c.ids for c in model.seen()] == [(0,), (2,)]

    run(scenario())


def test_a_timeout_shorter_than_the_batching_delay_runs_the_batch_instead_of_failing() -> None:
    """An idle model waiting out its batching delay answers a request whose
    timeout comes due first; timeouts are for queues behind busy instances."""

    async def scenario() -> None:
        model = RowModel()
        async with running([model], BatchLimits(8, max_queue_delay=HOLD_LIMIT)) as batcher:
            started = asyncio.get_running_loop().time()
            result = await batcher.submit(request(0), BOTH, timeout=0.05)
            check_own_rows(request(0), result.outputs)
            assert asyncio.get_running_loop().time() - started < HOLD_LIMIT / 2

    run(scenario())


def test_a_failing_batch_fails_only_its_own_requests() -> None:
    async def scenario() -> None:
        model = RowModel()
        async with running([model], BatchLimits(8)) as batcher:
            check_own_rows(request(0), (await batcher.submit(request(0), BOTH)).outputs)
            with pytest.raises(InferenceFailed, match="poisoned row") as failed:
                await batcher.submit(request(1, poison=True), BOTH)
            assert failed.value.code is Code.INTERNAL

            # a poisoned request fails the requests batched with it, and no others:
            # not the batch before it, nor the requests queued while it ran
            model.hold()
            held = asyncio.create_task(batcher.submit(request(2), BOTH))
            await model.started()
            batch = [request(3), request(4, poison=True), request(5)]
            results = await asyncio.gather(
                *(batcher.submit(x, BOTH) for x in batch), _release(model), return_exceptions=True
            )
            check_own_rows(request(2), (await held).outputs)
            assert [type(r) for r in results[:-1]] == [InferenceFailed] * 3

            model.hold()
            failing = submit_all(batcher, [request(6), request(7, poison=True)])
            await model.started()
            after = await asyncio.gather(batcher.submit(request(8), BOTH), _release(model))
            check_own_rows(request(8), after[0].outputs)
            for task in failing:
                with pytest.raises(InferenceFailed):
                    await task

            check_own_rows(request(9), (await batcher.submit(request(9), BOTH)).outputs)
        assert [c.ids for c in model.seen()] == [(0,), (1,), (2,), (3, 4, 5), (6, 7), (8,), (9,)]

    run(scenario())


def test_close_runs_the_queued_requests_then_refuses() -> None:
    async def scenario() -> None:
        model = RowModel()
        observer = RecordingObserver()
        # the delay is far longer than the test: only close() can make these run
        batcher = Batcher([model], BatchLimits(8, max_queue_delay=3600.0), 16, observer)
        batcher.start()
        inputs = [request(rid, 2) for rid in range(3)]
        queued = submit_all(batcher, inputs)
        await observer.depth(3)
        assert model.seen() == []
        closing = asyncio.create_task(batcher.close())
        await observer.depth(0)  # close() made the worker take the queued batch
        with pytest.raises(Unavailable) as refused:
            await batcher.submit(request(9), BOTH)
        assert refused.value.code is Code.UNAVAILABLE
        await closing
        for x, task in zip(inputs, queued, strict=True):
            check_own_rows(x, (await task).outputs)
        with pytest.raises(Unavailable):
            await batcher.submit(request(10), BOTH)
        assert [c.ids for c in model.seen()] == [(0, 1, 2)]
        assert model.closed

    run(scenario())


def test_close_past_its_grace_fails_the_running_and_queued_requests() -> None:
    async def scenario() -> None:
        model = RowModel().hold()
        batcher = Batcher([model], BatchLimits(1), 16)
        batcher.start()
        try:
            in_flight = asyncio.create_task(batcher.submit(request(0), BOTH))
            await model.started()
            queued = asyncio.create_task(batcher.submit(request(1), BOTH))
            await batcher.close(grace=0.05)
            with pytest.raises(Unavailable):
                await queued
            # the batch still running when the grace ran out will never be answered
            with pytest.raises(Unavailable):
                await asyncio.wait_for(in_flight, HOLD_LIMIT / 2)
        finally:
            model.gate.set()
        assert [c.ids for c in model.seen()] == [(0,)]

    run(scenario())


def test_cancelling_a_waiting_request_takes_it_out_of_the_queue() -> None:
    async def scenario() -> None:
        model = RowModel().hold()
        observer = RecordingObserver()
        async with running([model], BatchLimits(8), observer=observer) as batcher:
            first = asyncio.create_task(batcher.submit(request(0), BOTH))
            await model.started()
            doomed = asyncio.create_task(batcher.submit(request(1), BOTH))
            kept = asyncio.create_task(batcher.submit(request(2), BOTH))
            await observer.depth(2)
            doomed.cancel()
            with pytest.raises(asyncio.CancelledError):
                await doomed
            assert batcher.queue_depth == 1
            assert observer.depths[-1] == 1
            model.gate.set()
            await first
            check_own_rows(request(2), (await kept).outputs)
        assert [c.ids for c in model.seen()] == [(0,), (2,)]

    run(scenario())


def test_cancelling_a_in_flightrequest_leaves_its_batch_mates_alone() -> None:
    async def scenario() -> None:
        model = RowModel().hold()
        async with running([model], BatchLimits(8)) as batcher:
            tasks = submit_all(batcher, [request(0), request(1), request(2)])
            await model.started()
            tasks[1].cancel()
            with pytest.raises(asyncio.CancelledError):
                await tasks[1]
            model.gate.set()
            check_own_rows(request(0), (await tasks[0]).outputs)
            check_own_rows(request(2), (await tasks[2]).outputs)
        assert [c.ids for c in model.seen()] == [(0, 1, 2)]

    run(scenario())


def test_a_model_missing_a_requested_output_fails_that_batch_only() -> None:
    async def scenario() -> None:
        model = RowModel(drop=frozenset({"s"}))
        async with running([model], BatchLimits(8)) as batcher:
            with pytest.raises(InferenceFailed, match="'s'"):
                await asyncio.wait_for(batcher.submit(request(0), BOTH), HOLD_LIMIT / 2)
            # the worker lives on
            check_own_rows(request(1), (await batcher.submit(request(1), ("y",))).outputs, ("y",))
            with pytest.raises(InferenceFailed):
                await batcher.submit(request(2), ("s",))

    run(scenario())


class Picky(RowModel):
    """Refuses a batch holding a poisoned row as a bad request (a pipeline's unknown entity)."""

    def predict(self, inputs, outputs, parameters=NO_PARAMETERS):  # type: ignore[no-untyped-def]
        if (inputs["x"].reshape(len(inputs["x"]), -1)[:, 1] == POISON).any():
            with self._lock:
                self.calls.append(Call(ids_of(inputs["x"]), len(inputs["x"]), inputs["x"].dtype, (), (), True, ""))
            raise InvalidRequest("no features for entity 'poison'")
        return super().predict(inputs, outputs, parameters)


def test_a_bad_request_in_a_batch_fails_alone_and_the_others_are_answered() -> None:
    async def scenario() -> None:
        model = Picky()
        model.gate.clear()  # the first request holds the instance while the others queue
        async with running([model], BatchLimits(16)) as batcher:
            first = asyncio.create_task(batcher.submit(request(0), ("y",)))
            await asyncio.to_thread(model.entered.wait, 5)
            queued = [asyncio.create_task(batcher.submit(request(i, poison=i == 3), ("y",))) for i in range(1, 6)]
            await asyncio.sleep(0.05)
            model.gate.set()
            results = await asyncio.gather(first, *queued, return_exceptions=True)
        refused = [i for i, r in enumerate(results) if isinstance(r, InvalidRequest)]
        assert refused == [3], results
        assert all(isinstance(r, BatchResult) for i, r in enumerate(results) if i != 3)
        assert results[3].code is Code.INVALID  # type: ignore[union-attr]
        together = [call.ids for call in model.calls if len(call.ids) > 1]
        assert together == [(1, 2, 3, 4, 5)]  # they were batched, then each ran alone

    asyncio.run(scenario())
