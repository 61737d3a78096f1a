"""The batcher on a fake row-wise model: who shares a batch, who gets which rows,
and how queue limits, timeouts, failures, cancellation and closing behave.

Each test runs its own event loop with ``asyncio.run``; a held model (its gate
cleared) keeps the single worker busy so that later requests queue up.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from tests.batcher.batching_fakes import (
    HOLD_LIMIT,
    RecordingObserver,
    RowModel,
    check_own_rows,
    request,
    running,
)
from turnout.batcher.planner import BatchLimits
from turnout.batcher.queue import Batcher, BatchResult
from turnout.errors import Code, DeadlineExceeded, InferenceFailed, Overloaded, Unavailable

BOTH = ("y", "s")


def run(scenario: Coroutine[Any, Any, None]) -> None:
    """Run one test's scenario; a hang fails the test instead of stalling the suite."""
    asyncio.run(asyncio.wait_for(scenario, 2 * HOLD_LIMIT))


def submit_all(batcher: Batcher, inputs: list[dict[str, np.ndarray]]) -> list[asyncio.Task[BatchResult]]:
    return [asyncio.create_task(batcher.submit(x, BOTH)) for x in inputs]


def test_concurrent_requests_get_exactly_their_own_rows() -> None:
    async def scenario() -> None:
        model = RowModel()
        sizes = [1, 3, 2, 4, 1, 1, 2, 3, 4, 1, 2, 2, 1, 3, 1, 4]
        inputs = [request(rid, n) for rid, n in enumerate(sizes)]
        async with running([model], BatchLimits(8, max_queue_delay=0.001)) as batcher:
            results = await asyncio.gather(*(batcher.submit(x, BOTH) for x in inputs))
        for x, result in zip(inputs, results, strict=True):
            check_own_rows(x, result.outputs)
        calls = model.seen()
        assert sorted(rid for call in calls for rid in call.ids) == list(range(len(sizes)))
        assert len(calls) < len(sizes), "requests arriving together should share batches"

    run(scenario())


def test_requests_queued_behind_a_busy_worker_run_as_one_batch() -> None:
    async def scenario() -> None:
        model = RowModel().hold()
        async with running([model], BatchLimits(8)) as batcher:
            first = asyncio.create_task(batcher.submit(request(0, 2), BOTH))
            await model.started()
            inputs = [request(rid, 1) for rid in range(1, 6)]
            results = await asyncio.gather(*(batcher.submit(x, BOTH) for x in inputs), _release(model))
            check_own_rows(request(0, 2), (await first).outputs)
        for x, result in zip(inputs, results[:-1], strict=True):
            assert isinstance(result, BatchResult)
            check_own_rows(x, result.outputs)
            assert result.batch_rows == 5
        assert [(c.ids, c.rows) for c in model.seen()] == [((0,), 2), ((1, 2, 3, 4, 5), 5)]

    run(scenario())


async def _release(model: RowModel) -> None:
    """Let the held predict go once the requests submitted alongside are queued.

    ``gather`` starts its coroutines in order, so by the time this runs, every
    submit before it has put its request in the queue.
    """
    model.gate.set()


def test_a_closed_loop_of_clients_does_not_wait_out_the_delay_once_all_are_back() -> None:
    """Four clients, each sending its next request when answered, after a
    think time that staggers them (as network round trips do): waiting pays,
    since the batch grows while it waits. After the first batch the batcher
    knows four rows will come back, and runs them as soon as the last is
    back instead of when the (long) batching delay runs out."""
    delay, stagger = 0.4, 0.02

    async def client(batcher: Batcher, rid: int) -> None:
        for turn in range(3):
            await asyncio.sleep(rid * stagger)
            check_own_rows(x := request(10 * rid + turn), (await batcher.submit(x, BOTH)).outputs)

    async def scenario() -> None:
        model = RowModel()
        async with running([model], BatchLimits(8, max_queue_delay=delay)) as batcher:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.gather(*(client(batcher, rid) for rid in range(4)))
            took = loop.time() - started
        assert [c.rows for c in model.seen()] == [4, 4, 4]
        # the first batch waits out the delay (nothing is expected yet); the next two
        # run once the last client is back (~3 staggers), not a delay later each
        assert delay <= took < 2 * delay, took

    run(scenario())


def test_requests_with_different_shapes_or_dtypes_never_share_a_batch() -> None:
    async def scenario() -> None:
        model = RowModel().hold()
        kinds = [((3,), np.float64), ((4,), np.float64), ((3,), np.float32), ((2, 2), np.float64)]
        inputs = [request(rid, 1 + rid % 2, *kinds[rid % 4]) for rid in range(1, 17)]
        async with running([model], BatchLimits(64)) as batcher:
            first = asyncio.create_task(batcher.submit(request(0), BOTH))
            await model.started()
            results = await asyncio.gather(*(batcher.submit(x, BOTH) for x in inputs), _release(model))
            await first
        for x, result in zip(inputs, results[:-1], strict=True):
            assert isinstance(result, BatchResult)
            check_own_rows(x, result.outputs)
        kind_of = {rid: (x["x"].shape[1:], x["x"].dtype) for rid, x in enumerate(inputs, start=1)}
        batched = model.seen()[1:]
        assert len(batched) == 4  # one batch per kind: all were queued when the worker came back
        for call in batched:
            assert {kind_of[rid] for rid in call.ids} == {(call.inner, call.dtype)}

    run(scenario())


def test_max_batch_size_is_respected() -> None:
    async def scenario() -> None:
        model = RowModel().hold()
        sizes = [3, 1, 2, 2, 3, 1, 1, 1, 3, 2]
        inputs = [request(rid, n) for rid, n in enumerate(sizes, start=1)]
        async with running([model], BatchLimits(4)) as batcher:
            first = asyncio.create_task(batcher.submit(request(0, 4), BOTH))
            await model.started()
            results = await asyncio.gather(*(batcher.submit(x, BOTH) for x in inputs), _release(model))
            await first
        for x, result in zip(inputs, results[:-1], strict=True):
            assert isinstance(result, BatchResult)
            check_own_rows(x, result.outputs)
        calls = model.seen()
        assert all(call.rows <= 4 for call in calls)
        # in arrival order, each batch stops where the next request would overflow it
        assert [c.ids for c in calls] == [(0,), (1, 2), (3, 4), (5, 6), (7, 8), (9,), (10,)]

    run(scenario())


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


def test_instances_run_batches_at_the_same_time() -> None:
    async def scenario() -> None:
        both_inside = threading.Barrier(2, timeout=HOLD_LIMIT)

        def meet() -> None:
            both_inside.wait()  # raises BrokenBarrierError unless the other instance is in predict too

        models = [RowModel(before=meet), RowModel(before=meet)]
        async with running(models, BatchLimits(1)) as batcher:
            results = await asyncio.gather(*submit_all(batcher, [request(0), request(1)]))
        for rid, result in enumerate(results):
            check_own_rows(request(rid), result.outputs)
        calls = [model.seen() for model in models]
        assert [len(c) for c in calls] == [1, 1]
        assert calls[0][0].thread != calls[1][0].thread

    run(scenario())


def test_the_observer_sees_queue_depths_and_batches() -> None:
    async def scenario() -> None:
        model = RowModel().hold()
        observer = RecordingObserver()
        async with running([model], BatchLimits(8), observer=observer) as batcher:
            first = asyncio.create_task(batcher.submit(request(0, 2), BOTH))
            await model.started()
            assert observer.depths == [1, 0]
            queued = submit_all(batcher, [request(1, 3), request(2, 1)])
            await observer.depth(2)
            model.gate.set()
            await asyncio.gather(first, *queued)
        assert observer.depths == [1, 0, 1, 2, 0]
        assert [(rows, requests) for rows, requests, _ in observer.batches] == [(2, 1), (4, 2)]
        assert all(seconds >= 0 for _, _, seconds in observer.batches)
        # the held batch took at least as long as it took to queue the next two
        assert observer.batches[0][2] > 0

    run(scenario())


def test_each_request_gets_only_the_outputs_it_named() -> None:
    async def scenario() -> None:
        model = RowModel().hold()
        wants = [("y",), ("s",), ("s", "y"), ("y",)]
        async with running([model], BatchLimits(8)) as batcher:
            first = asyncio.create_task(batcher.submit(request(0), ("s",)))
            await model.started()
            results = await asyncio.gather(
                *(batcher.submit(request(rid), w) for rid, w in enumerate(wants, start=1)), _release(model)
            )
            check_own_rows(request(0), (await first).outputs, ("s",))
        for rid, (result, names) in enumerate(zip(results[:-1], wants, strict=True), start=1):
            assert isinstance(result, BatchResult)
            check_own_rows(request(rid), result.outputs, names)
        calls = model.seen()
        assert [(c.ids, c.outputs) for c in calls] == [((0,), ("s",)), ((1, 2, 3, 4), ("s", "y"))]

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


def test_without_a_batch_axis_each_request_runs_alone() -> None:
    async def scenario() -> None:
        model = RowModel().hold()
        async with running([model], BatchLimits(0)) as batcher:
            first = asyncio.create_task(batcher.submit(request(0, 2), BOTH))
            await model.started()
            results = await asyncio.gather(*(batcher.submit(request(rid, 3), BOTH) for rid in (1, 2)), _release(model))
            check_own_rows(request(0, 2), (await first).outputs)
        for rid, result in zip((1, 2), results[:-1], strict=True):
            assert isinstance(result, BatchResult)
            check_own_rows(request(rid, 3), result.outputs)
        assert [c.ids for c in model.seen()] == [(0,), (1,), (2,)]

    run(scenario())


def test_a_batcher_needs_an_instance() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Batcher([], BatchLimits(8), 16)


def test_a_niced_batcher_runs_its_model_at_a_lower_cpu_priority() -> None:
    priorities: list[int] = []

    def record() -> None:  # in the instance thread, as the model runs
        priorities.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    async def scenario() -> None:
        for niceness in (0, 7):
            model = RowModel(before=record)
            batcher = Batcher([model], BatchLimits(4), 16, inline_below=0.0, niceness=niceness)
            batcher.start()
            await batcher.submit(request(1, 1), BOTH)
            await batcher.close(grace=HOLD_LIMIT)

    run(scenario())
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert priorities == [own, min(19, own + 7)]


class TaggedModel(RowModel):
    """Reads the request parameter ``tag``; records what each predict was given."""

    parameters = frozenset({"tag"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.given: list[dict[str, Any]] = []

    def predict(self, inputs: Any, outputs: Any, parameters: Any = None) -> Any:
        self.given.append(dict(parameters or {}))
        return super().predict(inputs, outputs, parameters)


def test_only_requests_agreeing_on_the_parameters_the_model_reads_share_a_batch() -> None:
    async def scenario() -> None:
        model = TaggedModel().hold()
        tags = ["a", "b", "a", "b", "a", None]
        async with running([model], BatchLimits(64)) as batcher:
            first = asyncio.create_task(batcher.submit(request(0), BOTH, None, {"tag": "a"}))
            await model.started()
            submits = [
                batcher.submit(request(rid), BOTH, None, {"user": f"u{rid}"} | ({"tag": tag} if tag else {}))
                for rid, tag in enumerate(tags, start=1)
            ]
            results = await asyncio.gather(*submits, _release(model))
            await first
        for rid, result in enumerate(results[:-1], start=1):
            assert isinstance(result, BatchResult)
            check_own_rows(request(rid), result.outputs)
        batched = list(zip(model.seen()[1:], model.given[1:], strict=True))
        by_tag = {given.get("tag"): call.ids for call, given in batched}
        assert by_tag == {"a": (1, 3, 5), "b": (2, 4), None: (6,)}
        assert all(set(given) <= {"tag"} for _, given in batched)  # "user" never reaches the model

    run(scenario())
