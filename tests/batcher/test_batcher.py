"""The batcher on a fake row-wise model: who shares a batch and who gets which
rows (shapes, dtypes, max_batch_size, a closed loop of clients, the outputs
and the parameters each request names), its instances, and what the observer
sees. Queue limits, timeouts, failures, cancellation and closing:
test_batcher_lifecycle.py.

Each test runs its own event loop with ``asyncio.run``; a held model (its gate
cleared) keeps the single worker busy so that later requests queue up.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import numpy as np
import pytest

from tests.batcher.batching_fakes import (
    BOTH,
    HOLD_LIMIT,
    RecordingObserver,
    RowModel,
    _release,
    check_own_rows,
    request,
    run,
    running,
    submit_all,
)
from turnout.batcher.planner import BatchLimits
from turnout.batcher.queue import Batcher, BatchResult


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


def test_without_a_batch_axis_a_lone_request_runs_at_once_whatever_the_batching_delay() -> None:
    """A model without a batch axis never waits for companions (the planner
    takes each request alone), so a delay set for it must not keep a lone
    request off the fast path: run on the loop, not queued."""

    async def scenario() -> None:
        model = RowModel()
        async with running([model], BatchLimits(0, max_queue_delay=0.2), inline_below=1.0) as batcher:
            for rid in range(10):
                check_own_rows(x := request(rid), (await batcher.submit(x, BOTH)).outputs)
                await asyncio.sleep(0.002)
        on_loop = [c.thread == threading.main_thread().name for c in model.seen()]
        assert all(on_loop[1:]), on_loop  # the first ran before its cost was known

    run(scenario())


def test_submit_now_answers_only_what_submit_would_run_inline_and_else_changes_nothing() -> None:
    """``submit_now`` (an ensemble's members, without a task each) answers a
    lone request to a cheap model at once, on the loop, with its own rows;
    None while the model's cost is unknown, for an arrival at the same time
    as the last (not lone), and while a request holds the instance, and then
    it has not counted as an arrival (the next one is still lone)."""

    async def scenario() -> None:
        now = [0.0]
        model, observer = RowModel(), RecordingObserver()
        batcher = Batcher([model], BatchLimits(8), 64, observer, clock=lambda: now[0], inline_below=1.0)
        batcher.start()
        try:
            assert batcher.submit_now(request(0), BOTH) is None  # its cost is not known yet
            check_own_rows(request(0), (await batcher.submit(request(0), BOTH)).outputs)  # in a worker
            now[0] = 1.0
            assert batcher.may_answer_now()  # asked alone, it changes nothing either
            answered = batcher.submit_now(x := request(1), BOTH)
            assert answered is not None
            check_own_rows(x, answered.outputs)
            assert batcher.submit_now(request(2), BOTH) is None  # at the same time as request 1: not lone
            assert not batcher.may_answer_now()
            model.hold()
            held = asyncio.create_task(batcher.submit(request(3), BOTH))  # not lone either: to a worker, held
            await model.started()
            now[0] = 2.0
            assert batcher.submit_now(request(4), BOTH) is None  # lone, cheap, but the instance is busy
            model.gate.set()
            check_own_rows(request(3), (await held).outputs)
            await asyncio.sleep(0.05)  # the worker goes back to waiting
            answered = batcher.submit_now(x := request(5), BOTH)  # still lone: request 4 did not arrive
            assert answered is not None
            check_own_rows(x, answered.outputs)
        finally:
            model.gate.set()
            await batcher.close(grace=HOLD_LIMIT)
        threads = {c.ids[0]: c.thread == threading.main_thread().name for c in model.seen()}
        assert threads == {0: False, 1: True, 3: False, 5: True}, threads
        assert [requests for _, requests, _ in observer.batches] == [1, 1, 1, 1]

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


def test_a_lone_client_keeps_the_fast_path_when_a_batching_delay_is_set() -> None:
    """One client, one request at a time, with a long batching delay: the
    first request waits it out (no companion is known yet); after that the
    batcher knows one row is all that comes back, and each request runs at
    once on the loop itself, not queued for the instance's thread, also after
    the wait controller's next probe (which once left the fast path shut for
    good: a probe that the planner answers at once never ends a wait)."""
    delay = 0.2

    async def scenario() -> None:
        model = RowModel()
        async with running([model], BatchLimits(8, max_queue_delay=delay), inline_below=1.0) as batcher:
            loop = asyncio.get_running_loop()
            started = loop.time()
            for rid in range(80):  # ~0.16 s of lone requests: past the controller's 0.05 s first probe
                check_own_rows(x := request(rid), (await batcher.submit(x, BOTH)).outputs)
                await asyncio.sleep(0.002)
            took = loop.time() - started
        calls = model.seen()
        assert [c.rows for c in calls] == [1] * 80
        # one wait (0.2 s) and 80 sleeps (0.16 s at the least) take 0.36 s; a second wait would take 0.56 s
        assert took < 2.5 * delay, f"lone requests waited for companions: {took:.2f} s"
        on_loop = [c.thread == threading.main_thread().name for c in calls]
        assert all(on_loop[-20:]), on_loop

    run(scenario())


class AwaitingRowModel(RowModel):
    """A ``RowModel`` whose lone requests are awaited on the loop, as a worker
    process's round trip is; it counts the calls running on it at once."""

    lone_awaits = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.in_flight = self.most_in_flight = 0
        self._counting = threading.Lock()

    def _enter(self) -> None:
        with self._counting:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._counting:
            self.in_flight -= 1

    def predict(self, inputs: Any, outputs: Any, parameters: Any = None) -> Any:  # a batch, in a thread
        self._enter()
        try:
            return super().predict(inputs, outputs)
        finally:
            self._leave()

    async def predict_lone(self, inputs: Any, outputs: Any, parameters: Any = None) -> Any:
        self._enter()
        try:
            while not self.gate.is_set():
                await asyncio.sleep(0.001)
            return super().predict(inputs, outputs)
        finally:
            self._leave()


class AsyncRowModel(AwaitingRowModel):
    """The same, ``asynchronous``: its batches are awaited on the loop too."""

    asynchronous = True

    async def predict_async(self, inputs: Any, outputs: Any, parameters: Any = None) -> Any:
        return await self.predict_lone(inputs, outputs)


async def lone_running(batcher: Batcher, model: AwaitingRowModel) -> asyncio.Task[BatchResult]:
    """Request 0, alone, once the (held) model has taken it."""
    lone = asyncio.create_task(batcher.submit(request(0), BOTH))
    while not model.in_flight:
        await asyncio.sleep(0.001)
    return lone


@pytest.mark.parametrize("kind", [AwaitingRowModel, AsyncRowModel])
def test_a_lone_request_awaited_on_the_loop_skips_the_queue_and_never_overlaps_a_batch(
    kind: type[AwaitingRowModel],
) -> None:
    """A lone request to an instance that awaits it is run straight away,
    never queued; requests arriving while it runs queue (or wait) for the
    instance, so no two calls ever run on it at once."""

    async def scenario() -> None:
        model = kind().hold()
        observer = RecordingObserver()
        async with running([model], BatchLimits(8), observer=observer) as batcher:
            lone = await lone_running(batcher, model)
            assert observer.depths == [], "the lone request was queued"
            later = submit_all(batcher, [request(rid) for rid in range(1, 6)])
            await asyncio.sleep(0.05)
            assert model.most_in_flight == 1, "a call started while the lone one ran"
            model.gate.set()
            results = await asyncio.gather(lone, *later)
        for rid, result in enumerate(results):
            check_own_rows(request(rid), result.outputs)
        assert model.most_in_flight == 1
        assert len(model.seen()) < 6, "the requests that came meanwhile were not batched"

    run(scenario())


@pytest.mark.parametrize("kind", [AwaitingRowModel, AsyncRowModel])
def test_while_a_lone_request_holds_one_instance_another_takes_the_queue(kind: type[AwaitingRowModel]) -> None:
    """A lone request awaited on instance 0 must not hold back what arrives
    meanwhile: an idle instance takes it (it once queued behind the lone one,
    taken by instance 0's worker, while instance 1 sat idle)."""

    async def scenario() -> None:
        held, free = kind().hold(), kind()
        async with running([held, free], BatchLimits(8)) as batcher:
            lone = await lone_running(batcher, held)
            later = await asyncio.wait_for(batcher.submit(request(1), BOTH), 5)
            check_own_rows(request(1), later.outputs)
            assert not lone.done() and free.seen(), "the second request did not run on the idle instance"
            held.gate.set()
            check_own_rows(request(0), (await lone).outputs)
            await asyncio.wait_for(batcher.submit(request(2), BOTH), 5)  # instance 0's worker is back

    run(scenario())


def test_after_a_batch_of_many_a_lone_looking_request_queues_until_batches_are_single_again() -> None:
    """Under load a lull between batches makes one arrival look lone; run
    straight, it would hold the next batch back behind a round trip of its
    own. So a request skips the queue only while the last batch was a single
    request too."""

    async def scenario() -> None:
        model = AwaitingRowModel().hold()
        observer = RecordingObserver()
        async with running([model], BatchLimits(8), observer=observer) as batcher:
            lone = await lone_running(batcher, model)
            later = submit_all(batcher, [request(rid) for rid in range(1, 6)])
            await asyncio.sleep(0.01)
            model.gate.set()
            await asyncio.gather(lone, *later)  # a batch of five ran: many clients lately
            queued_before = len(observer.depths)
            await asyncio.sleep(0.01)
            await batcher.submit(request(6), BOTH)
            assert len(observer.depths) > queued_before, "a lone-looking request skipped the queue under load"
            queued_before = len(observer.depths)
            await asyncio.sleep(0.01)
            await batcher.submit(request(7), BOTH)  # the last batch was one request: straight again
            assert len(observer.depths) == queued_before, "a lone request was queued"

    run(scenario())
