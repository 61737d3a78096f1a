"""The shadow mirror on real numpy outputs whose differences are known: what it
counts, what it drops, what it logs, how it closes, and what Prometheus sees.

Each test runs its own event loop with ``asyncio.run``; shadows that must stay
busy wait on an ``asyncio.Event``, and a fake clock makes latencies exact.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from turnout.routing.compare import Outputs
from turnout.routing.shadow import ShadowJob, ShadowMirror
from turnout.routing.shadow_metrics import register_shadow_metrics

LIMIT = 2.0  # seconds; a hang fails the test instead of stalling the suite
DIFFERENT = {2, 5, 7}  # of ten jobs, those whose shadow labels differ from the primary's
PRIMARY_SECONDS = 0.1
SHADOW_SECONDS = 0.25


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, LIMIT))


class Clock:
    """Time moves only when a shadow runs, by exactly SHADOW_SECONDS."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def answering(
    i: int, primary: Outputs, shadow_outputs: Outputs, clock: Clock | None = None, endpoint: str = "iris"
) -> ShadowJob:
    """Request ``r{i}``, whose shadow answers ``shadow_outputs`` in SHADOW_SECONDS."""

    async def shadow() -> Outputs:
        if clock is not None:
            clock.now += SHADOW_SECONDS
        await asyncio.sleep(0)  # a real shadow yields to the loop
        return shadow_outputs

    return ShadowJob(endpoint, "v2", f"r{i}", shadow, primary, PRIMARY_SECONDS)


def labels_job(i: int, clock: Clock | None = None, size: int = 10) -> ShadowJob:
    """Job ``i``: the shadow's labels differ on one element when ``i`` is in DIFFERENT;
    those shadows also return an output the primary did not."""
    primary = {"label": np.arange(size)}
    shadow: dict[str, np.ndarray[Any, Any]] = {"label": np.arange(size)}
    if i in DIFFERENT:
        shadow["label"][0] = -1
        shadow["extra"] = np.zeros(3)
    return answering(i, primary, shadow, clock)


def failing(i: int, error: BaseException) -> ShadowJob:
    async def shadow() -> Outputs:
        raise error

    return ShadowJob("iris", "v2", f"r{i}", shadow, {"label": np.arange(3)}, PRIMARY_SECONDS)


def blocked(i: int, gate: asyncio.Event, started: asyncio.Event | None = None) -> ShadowJob:
    async def shadow() -> Outputs:
        if started is not None:
            started.set()
        await gate.wait()
        return {"label": np.arange(3)}

    return ShadowJob("iris", "v2", f"r{i}", shadow, {"label": np.arange(3)}, PRIMARY_SECONDS)


def test_agreements_and_disagreements_are_counted_per_request() -> None:
    async def scenario() -> None:
        mirror = ShadowMirror(workers=2)
        mirror.start()
        assert all(mirror.offer(labels_job(i)) for i in range(10))
        await mirror.close(timeout=1.0)
        (report,) = mirror.snapshot()
        assert (report.endpoint, report.shadow) == ("iris", "v2")
        assert (report.requests, report.agreeing, report.disagreements) == (10, 7, 3)
        assert (report.errors, report.dropped, report.queued) == (0, 0, 0)
        assert report.agreement_rate == pytest.approx(0.7)

    run(scenario())


def test_a_full_queue_drops_the_copy_at_once_and_counts_it() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        mirror = ShadowMirror(capacity=2, workers=1)
        mirror.start()
        began = time.perf_counter()
        accepted = [mirror.offer(blocked(i, gate)) for i in range(5)]
        assert time.perf_counter() - began < 0.05, "offer must not wait for the shadow"
        assert accepted == [True, True, True, False, False]  # one running, two queued
        (report,) = mirror.snapshot()
        assert (report.dropped, report.queued, report.in_flight) == (2, 2, 1)
        assert report.dropped_by == {"full": 2}
        gate.set()
        await mirror.close(timeout=1.0)
        (report,) = mirror.snapshot()
        assert (report.requests, report.agreeing, report.dropped) == (3, 3, 2)

    run(scenario())


def test_a_failing_shadow_counts_an_error_and_the_worker_keeps_going(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="turnout.shadow")

    async def scenario() -> None:
        mirror = ShadowMirror(workers=1)  # one worker: the jobs after a failure prove it survived
        mirror.start()
        jobs = [
            labels_job(0),
            failing(1, RuntimeError("shadow down")),
            labels_job(3),
            failing(4, asyncio.CancelledError()),  # the shadow's own work cancelled, not the worker
            failing(6, ValueError("bad tensor")),
            labels_job(8),
        ]
        assert all(mirror.offer(job) for job in jobs)
        await mirror.close(timeout=1.0)
        (report,) = mirror.snapshot()
        assert (report.errors, report.requests, report.agreeing, report.dropped) == (3, 3, 3, 0)

    run(scenario())
    failures = [r for r in caplog.records if r.name == "turnout.shadow"]
    assert [r.levelno for r in failures] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert "RuntimeError: shadow down" in failures[0].getMessage()
    assert all(r.exc_info is None for r in failures), "failures are logged without tracebacks"


@pytest.mark.parametrize(("sample_every", "logged"), [(1, ["r2", "r5", "r7"]), (2, ["r2", "r7"])])
def test_sampled_disagreements_are_logged_one_json_line_each(
    tmp_path: Path, sample_every: int, logged: list[str]
) -> None:
    log_path = tmp_path / "not-yet" / "shadow.jsonl"  # the parent is created on the first line

    async def scenario() -> None:
        clock = Clock()
        mirror = ShadowMirror(workers=1, sample_every=sample_every, log_path=log_path, clock=clock)
        mirror.start()
        for i in range(10):
            mirror.offer(labels_job(i, clock, size=50))
        await mirror.close(timeout=1.0)

    run(scenario())
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [line["request_id"] for line in lines] == logged
    first = lines[0]
    assert set(first) == {
        "time",
        "endpoint",
        "shadow",
        "request_id",
        "differences",
        "missing",
        "primary_latency_ms",
        "shadow_latency_ms",
        "primary_outputs",
        "shadow_outputs",
    }
    assert datetime.fromisoformat(first["time"]).utcoffset() == UTC.utcoffset(None)
    assert (first["endpoint"], first["shadow"]) == ("iris", "v2")
    assert first["differences"] == [
        {"name": "label", "kind": "label", "max_abs": 0.0, "max_rel": 0.0, "mismatched": 1, "size": 50}
    ]
    assert first["missing"] == ["extra"]
    assert first["primary_latency_ms"] == pytest.approx(PRIMARY_SECONDS * 1000)
    assert first["shadow_latency_ms"] == pytest.approx(SHADOW_SECONDS * 1000)
    assert first["primary_outputs"] == {"label": list(range(20))}
    assert first["shadow_outputs"] == {"label": [-1, *range(1, 20)], "extra": [0.0, 0.0, 0.0]}


def test_close_drains_the_queue_then_refuses_copies() -> None:
    async def scenario() -> None:
        mirror = ShadowMirror(capacity=10, workers=1)
        mirror.start()
        for i in range(6):
            mirror.offer(labels_job(i))
        await mirror.close(timeout=1.0)
        (report,) = mirror.snapshot()
        assert (report.requests, report.queued, report.dropped) == (6, 0, 0)
        assert not mirror.offer(labels_job(0))
        await mirror.close(timeout=1.0)  # again: nothing left to do
        (report,) = mirror.snapshot()
        assert (report.requests, report.dropped) == (6, 1)

    run(scenario())


def test_close_cancels_what_it_cannot_finish_in_time_and_counts_it_dropped() -> None:
    async def scenario() -> None:
        gate, started = asyncio.Event(), asyncio.Event()  # the gate never opens
        mirror = ShadowMirror(workers=1)
        mirror.start()
        for i in range(3):
            mirror.offer(blocked(i, gate, started))
        await started.wait()
        began = time.perf_counter()
        await mirror.close(timeout=0.05)
        assert time.perf_counter() - began < 0.5
        (report,) = mirror.snapshot()
        assert (report.requests, report.errors, report.dropped, report.queued) == (0, 0, 3, 0)

    run(scenario())


def test_snapshot_filters_by_endpoint_and_reports_are_json_safe() -> None:
    async def scenario() -> None:
        mirror = ShadowMirror()
        mirror.start()
        mirror.offer(failing(0, RuntimeError("down")))  # nothing compared: the rates are nan
        mirror.offer(answering(1, {"label": np.arange(3)}, {"label": np.arange(3)}, endpoint="mnist"))
        await mirror.close(timeout=1.0)
        assert [(r.endpoint, r.requests) for r in mirror.snapshot()] == [("iris", 0), ("mnist", 1)]
        (iris,) = mirror.snapshot("iris")
        assert math.isnan(iris.agreement_rate) and iris.errors == 1
        document = iris.as_dict()
        json.dumps(document, allow_nan=False)
        assert document["agreement_rate"] is None and document["mean_latency_difference_seconds"] is None
        assert mirror.snapshot("nobody") == []

    run(scenario())


def test_a_mirror_without_bounds_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ShadowMirror(capacity=0)


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }


def test_the_collector_exports_the_mirror_at_scrape_time() -> None:
    pair = (("endpoint", "iris"), ("shadow", "v2"))

    def outcome(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return "turnout_shadow_requests_total", tuple(sorted((*pair, ("outcome", name))))

    def output(name: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((*pair, ("output", name))))

    async def scenario() -> None:
        clock = Clock()
        mirror = ShadowMirror(workers=1, clock=clock)
        registry = CollectorRegistry()
        register_shadow_metrics(registry, mirror)

        primary = {"p": np.array([0.2, 0.8], dtype=np.float32)}
        far = {"p": np.array([0.5, 0.5], dtype=np.float32)}  # differs by 0.3
        jobs = [answering(i, primary, far if i == 3 else primary, clock) for i in range(4)]
        for job in [*jobs, failing(4, RuntimeError("down"))]:
            mirror.offer(job)
        before = scrape(registry)  # not started: all queued, nothing compared yet
        assert before[("turnout_shadow_queue_length", ())] == 5
        assert ("turnout_shadow_agreement_ratio", pair) not in before

        mirror.start()
        await mirror.close(timeout=1.0)
        mirror.offer(jobs[0])  # after close: dropped, twice (not once, as the error)
        mirror.offer(jobs[1])
        after = scrape(registry)
        assert after[outcome("agree")] == 3
        assert after[outcome("disagree")] == 1
        assert after[outcome("error")] == 1
        assert after[outcome("dropped")] == 2
        assert after[("turnout_shadow_agreement_ratio", pair)] == pytest.approx(0.75)
        assert after[("turnout_shadow_max_abs_difference", output("p"))] == pytest.approx(0.3)
        assert after[("turnout_shadow_mean_abs_difference", output("p"))] == pytest.approx(0.3 / 4)
        assert after[("turnout_shadow_latency_difference_seconds", pair)] == pytest.approx(
            SHADOW_SECONDS - PRIMARY_SECONDS
        )
        assert after[("turnout_shadow_queue_length", ())] == 0

    run(scenario())


def held(endpoint: str, shadow: str, gate: asyncio.Event, seen: dict[str, int]) -> ShadowJob:
    """A copy that runs until ``gate`` opens; ``seen`` counts its starts, finishes and cancellations."""

    async def shadow_run() -> Outputs:
        seen["started"] += 1
        seen["running"] += 1
        seen["most"] = max(seen["most"], seen["running"])
        try:
            await gate.wait()
        except asyncio.CancelledError:
            seen["cancelled"] += 1
            raise
        finally:
            seen["running"] -= 1
        seen["finished"] += 1
        return {"label": np.arange(3)}

    return ShadowJob(endpoint, shadow, "r", shadow_run, {"label": np.arange(3)}, PRIMARY_SECONDS)


def counts() -> dict[str, int]:
    return dict.fromkeys(("started", "running", "most", "cancelled", "finished"), 0)


def test_stopping_an_endpoint_drops_its_queued_copies_and_cancels_its_running_ones_at_once() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        stopped, kept = counts(), counts()
        mirror = ShadowMirror(capacity=10, workers=2)
        mirror.start()
        for _ in range(4):
            mirror.offer(held("iris", "v2", gate, stopped))  # two run, two wait
        mirror.offer(held("iris", "v3", gate, kept))  # still mirrored after the change: kept
        mirror.offer(held("mnist", "v2", gate, kept))  # another endpoint: kept
        await asyncio.sleep(0)
        assert (stopped["started"], mirror.in_flight, mirror.queued) == (2, 2, 4)
        assert mirror.stop("iris", keep={"v3"}) == 4
        await asyncio.sleep(0)  # one turn of the loop: the cancelled copies are gone
        assert stopped["cancelled"] == 2 and stopped["running"] == 0
        report = {r.shadow: r for r in mirror.snapshot("iris")}
        assert report["v2"].dropped_by == {"cancelled": 4}
        await asyncio.sleep(0)  # and the next turn, their places in the budget are taken
        assert mirror.queued == 0 and mirror.in_flight == 2  # the kept copies took the freed budget
        gate.set()
        await mirror.close(timeout=1.0)
        assert kept["finished"] == 2 and stopped["finished"] == 0
        assert [(r.endpoint, r.shadow, r.requests) for r in mirror.snapshot()] == [
            ("iris", "v2", 0),
            ("iris", "v3", 1),
            ("mnist", "v2", 1),
        ]

    run(scenario())


def test_a_busy_server_makes_no_copies_and_counts_them() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        seen = counts()
        pressed = False
        mirror = ShadowMirror(capacity=10, workers=1, busy=lambda: pressed)
        mirror.start()
        assert mirror.admits("iris", "v2", in_flight=2)  # this request and one more: within the budget of 1
        assert not mirror.admits("iris", "v2", in_flight=3)  # two more: busy
        pressed = True
        assert not mirror.admits("iris", "v2", in_flight=1)  # the CPU says busy
        pressed = False
        assert mirror.offer(held("iris", "v2", gate, seen))
        (report,) = mirror.snapshot()
        assert (report.dropped_by, report.queued, report.in_flight) == ({"busy": 2}, 0, 1)
        gate.set()
        await mirror.close(timeout=1.0)
        (report,) = mirror.snapshot()
        assert (report.requests, report.dropped) == (1, 2)

    run(scenario())


def test_copies_in_flight_never_exceed_the_budget() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        seen = counts()
        mirror = ShadowMirror(capacity=100, workers=3)
        mirror.start()
        for _ in range(50):
            mirror.offer(held("iris", "v2", gate, seen))
        for _ in range(5):
            await asyncio.sleep(0)
        assert seen["most"] == 3
        gate.set()
        await mirror.close(timeout=1.0)
        assert seen["finished"] == 50 and seen["most"] == 3

    run(scenario())


def test_dropped_copies_are_exported_by_reason() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        seen = counts()
        mirror = ShadowMirror(capacity=1, workers=1)
        registry = CollectorRegistry()
        register_shadow_metrics(registry, mirror)
        mirror.start()
        mirror.offer(held("iris", "v2", gate, seen))  # runs
        assert not mirror.admits("iris", "v2", in_flight=9)  # busy
        mirror.offer(held("iris", "v2", gate, seen))  # queued
        mirror.offer(held("iris", "v2", gate, seen))  # full
        scraped = scrape(registry)
        assert scraped[("turnout_shadow_in_flight", ())] == 1
        mirror.stop("iris")  # the running and the queued one
        await asyncio.sleep(0)
        await mirror.close(timeout=1.0)
        mirror.offer(held("iris", "v2", gate, seen))  # closed
        scraped = scrape(registry)
        pair = (("endpoint", "iris"), ("shadow", "v2"))
        dropped = {
            reason: scraped[("turnout_shadow_dropped_total", tuple(sorted((*pair, ("reason", reason)))))]
            for reason in ("busy", "full", "cancelled", "closed")
        }
        assert dropped == {"busy": 1, "full": 1, "cancelled": 2, "closed": 1}
        assert scraped[("turnout_shadow_in_flight", ())] == 0

    run(scenario())


def test_a_copy_cancelled_from_outside_the_mirror_is_counted_once() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        seen = counts()
        mirror = ShadowMirror(workers=1)
        mirror.start()
        mirror.offer(held("iris", "v2", gate, seen))
        await asyncio.sleep(0)
        (task,) = [t for t in asyncio.all_tasks() if t.get_name() == "shadow-iris-v2"]
        task.cancel()  # the loop shutting down, say: not the shadow's failure
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
        (report,) = mirror.snapshot()
        assert (report.errors, report.dropped_by, report.in_flight) == (0, {"closed": 1}, 0)
        await mirror.close(timeout=1.0)

    run(scenario())
