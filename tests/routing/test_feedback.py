"""A/B feedback on real SQLite files; the report's numbers against scipy's."""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from scipy import stats

from turnout.routing.feedback import (
    DuplicateFeedback,
    FeedbackError,
    FeedbackStore,
    format_report,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeedbackStore]:
    store = FeedbackStore(tmp_path / "feedback" / "ab.db")  # the folder does not exist yet
    yield store
    store.close()


def _rows(path: Path, table: str) -> list[tuple[object, ...]]:
    """What another process reading the file sees."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()


def _fill(store: FeedbackStore, outcomes: dict[str, list[float]], endpoint: str = "ep") -> None:
    for variant, values in outcomes.items():
        for i, value in enumerate(values):
            store.remember(endpoint, f"{variant}-{i}", variant)
            store.record(endpoint, f"{variant}-{i}", value)


def test_record_returns_the_remembered_variant(store: FeedbackStore) -> None:
    store.remember("ep", "r1", "a")
    store.remember("ep", "r2", "b")
    assert store.record("ep", "r2", True) == "b"
    assert store.record("ep", "r1", 0.5) == "a"
    assert [row[:5] for row in _rows(store.path, "outcomes")] == [
        ("ep", "r2", "b", 1.0, "conversion"),
        ("ep", "r1", "a", 0.5, "reward"),
    ]


def test_an_unknown_id_is_refused(store: FeedbackStore) -> None:
    store.remember("other", "r1", "a")  # the same id on another endpoint does not count
    message = (
        "no A/B assignment for request id 'r1' on 'ep'; feedback is accepted only for ids returned by an"
        " A/B-routed response"
    )
    with pytest.raises(FeedbackError, match=re.escape(message)) as caught:
        store.record("ep", "r1", 1)
    assert not isinstance(caught.value, DuplicateFeedback)
    assert _rows(store.path, "outcomes") == []


@pytest.mark.parametrize("outcome", [math.nan, math.inf, -math.inf, "1", None, [1]])
def test_an_outcome_must_be_a_finite_number(store: FeedbackStore, outcome: object) -> None:
    store.remember("ep", "r1", "a")
    with pytest.raises(FeedbackError, match="finite number or a boolean"):
        store.record("ep", "r1", outcome)
    assert store.record("ep", "r1", 1) == "a"  # the refusal stored nothing


def test_the_first_feedback_wins(store: FeedbackStore) -> None:
    store.remember("ep", "r1", "a")
    store.record("ep", "r1", 0)
    with pytest.raises(DuplicateFeedback, match="duplicate feedback for request id 'r1' on 'ep'"):
        store.record("ep", "r1", 1)
    assert issubclass(DuplicateFeedback, ValueError)
    assert [row[3] for row in _rows(store.path, "outcomes")] == [0.0]


def test_remember_stays_in_memory_until_flush(store: FeedbackStore) -> None:
    store.remember("ep", "r1", "a")
    store.remember("ep", "r2", "b")
    store.remember("ep", "r1", "b")  # a reused id keeps its first assignment
    assert _rows(store.path, "assignments") == []
    assert store.flush() == 2
    assert store.flush() == 0
    assert [row[:3] for row in _rows(store.path, "assignments")] == [("r1", "ep", "a"), ("r2", "ep", "b")]
    assert store.record("ep", "r1", 1) == "a"


def test_recording_writes_its_assignment_before_the_flush(store: FeedbackStore) -> None:
    store.remember("ep", "r1", "a")
    store.record("ep", "r1", 1)
    # a crash now would lose the buffer, but not the assignment this outcome belongs to
    assert [row[:3] for row in _rows(store.path, "assignments")] == [("r1", "ep", "a")]


def test_assignments_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ab.db"
    first = FeedbackStore(path)
    first.remember("ep", "flushed", "a")
    first.flush()
    first.remember("ep", "at-close", "b")
    first.close()
    first.close()
    with pytest.raises(RuntimeError, match="closed"):
        first.flush()

    reopened = FeedbackStore(path)  # an empty memory: everything comes from disk
    assert reopened.record("ep", "flushed", 1) == "a"
    assert reopened.record("ep", "at-close", 0) == "b"
    with pytest.raises(DuplicateFeedback):
        reopened.record("ep", "flushed", 0)
    reopened.close()


def test_the_recent_map_is_bounded_and_evicted_ids_come_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "ab.db"
    store = FeedbackStore(path, recent_limit=2)
    for request_id, variant in (("r1", "a"), ("r2", "b"), ("r3", "a"), ("r4", "b")):
        store.remember("ep", request_id, variant)
    assert store.flush() == 4  # r1 and r2 left the recent map, not the buffer
    assert store.record("ep", "r1", 1) == "a"  # from disk

    # delete the rows behind the store's back: only the two latest ids are still in memory
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("DELETE FROM assignments WHERE request_id IN ('r2', 'r3', 'r4')")
    with pytest.raises(FeedbackError, match="no A/B assignment for request id 'r2'"):
        store.record("ep", "r2", 0)
    assert store.record("ep", "r3", 0) == "a"
    assert store.record("ep", "r4", 0) == "b"
    store.close()


def test_a_reused_id_keeps_its_first_assignment_after_leaving_the_recent_map(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "ab.db", recent_limit=1)
    store.remember("ep", "r1", "a")
    store.remember("ep", "r2", "b")  # r1 leaves the recent map, still buffered
    store.remember("ep", "r1", "b")
    store.flush()
    store.remember("ep", "r2", "a")  # already on disk
    store.flush()
    assert [row[:3] for row in _rows(store.path, "assignments")] == [("r1", "ep", "a"), ("r2", "ep", "b")]
    store.close()


def test_remember_from_many_threads_while_flushing(store: FeedbackStore) -> None:
    written = []
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            written.append(store.flush())

    def worker(name: str) -> None:
        for i in range(500):
            store.remember("ep", f"{name}-{i}", name)

    flushing = threading.Thread(target=flusher)
    flushing.start()
    workers = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    stop.set()
    flushing.join()
    written.append(store.flush())
    assert sum(written) == 2000
    assert len(_rows(store.path, "assignments")) == 2000


def test_conversion_report_matches_scipy(store: FeedbackStore) -> None:
    rng = random.Random(7)
    outcomes = {
        "control": [float(rng.random() < 0.12) for _ in range(400)],
        "treatment": [float(rng.random() < 0.18) for _ in range(350)],
    }
    _fill(store, outcomes)
    for i in range(5):  # assigned, never answered
        store.remember("ep", f"silent-{i}", "treatment")

    report = store.report("ep", baseline="control")
    assert report.conversion and report.enough and report.baseline == "control"
    assert [(v.variant, v.assigned, v.outcomes) for v in report.variants] == [
        ("control", 400, 400),
        ("treatment", 355, 350),
    ]
    sa, na, sb, nb = sum(outcomes["control"]), 400, sum(outcomes["treatment"]), 350
    result = report.comparisons["treatment"]
    assert result.test == "two-proportion z-test"
    assert result.difference == pytest.approx(sb / nb - sa / na)
    pooled = (sa + sb) / (na + nb)
    z = (sb / nb - sa / na) / math.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-6)
    se = math.sqrt(sa / na * (1 - sa / na) / na + sb / nb * (1 - sb / nb) / nb)
    margin = stats.norm.ppf(0.975) * se
    assert result.ci_low == pytest.approx(result.difference - margin, rel=1e-9)
    assert result.ci_high == pytest.approx(result.difference + margin, rel=1e-9)
    assert report.variants[1].mean == pytest.approx(sb / nb)


def test_a_numeric_reward_switches_the_report_to_welch(store: FeedbackStore) -> None:
    rng = random.Random(3)
    outcomes = {
        "a": [float(rng.random() < 0.5) for _ in range(60)],  # 0/1 values...
        "b": [rng.gauss(0.6, 0.3) for _ in range(80)],  # ...and one arm of numbers: all are rewards
    }
    _fill(store, outcomes)
    report = store.report("ep")
    assert not report.conversion
    result = report.comparisons["b"]
    reference = stats.ttest_ind(outcomes["b"], outcomes["a"], equal_var=False)
    assert result.test == "Welch's t-test"
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-6)
    low, high = reference.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == (pytest.approx(low, rel=1e-6), pytest.approx(high, rel=1e-6))
    assert report.variants[1].mean == pytest.approx(sum(outcomes["b"]) / 80)


def test_variant_order_and_baseline(store: FeedbackStore) -> None:
    store.remember("ep", "r1", "zeta")
    store.remember("ep", "r2", "beta")
    store.remember("ep", "r3", "alpha")  # assigned, no outcomes
    store.record("ep", "r1", 1)
    store.remember("other", "r4", "gamma")  # another endpoint's variant stays out

    report = store.report("ep")
    assert [v.variant for v in report.variants] == ["alpha", "beta", "zeta"]
    assert report.variants[0].mean is None and report.variants[2].mean == 1.0
    assert list(report.comparisons) == ["beta", "zeta"]
    assert [v.variant for v in store.report("ep", baseline="zeta").variants] == ["zeta", "alpha", "beta"]
    with pytest.raises(FeedbackError, match="no variant 'gamma' on 'ep'; variants with data: alpha, beta, zeta"):
        store.report("ep", baseline="gamma")


def test_below_the_minimum_sample_there_is_no_verdict(store: FeedbackStore) -> None:
    _fill(store, {"a": [1, 0, 1, 1, 0], "b": [0, 0, 1, 0]})
    report = store.report("ep", min_count=30)
    assert not report.enough and report.comparisons["b"].p_value is None
    text = format_report(report)
    assert "not enough data yet: 30 outcomes per variant needed, have 5 / 4" in text
    assert "p =" not in text
    assert store.report("ep", min_count=4).enough


def test_a_report_without_two_variants_has_no_verdict(store: FeedbackStore) -> None:
    empty = store.report("ep")
    assert empty.variants == () and not empty.enough
    assert format_report(empty) == "no A/B assignments or outcomes for 'ep' yet"
    _fill(store, {"a": [1.0] * 40})
    single = store.report("ep")
    assert not single.enough and "nothing to compare yet" in format_report(single)


def test_format_report_shows_the_numbers(store: FeedbackStore) -> None:
    _fill(store, {"a": [1.0] * 10 + [0.0] * 30, "b": [1.0] * 20 + [0.0] * 20})
    report = store.report("ep")
    result = report.comparisons["b"]
    assert result.p_value is not None and result.ci_low is not None and result.ci_high is not None
    text = format_report(report)
    assert re.search(r"^a\s+40\s+40\s+25\.00%$", text, re.MULTILINE)
    assert re.search(r"^b\s+40\s+40\s+50\.00%$", text, re.MULTILINE)
    assert "b vs a (two-proportion z-test):" in text
    ci = f"(95% CI {result.ci_low * 100:+.2f} pp to {result.ci_high * 100:+.2f} pp)"
    assert f"difference +25.00 pp {ci}, p = {result.p_value:.4g}" in text


def test_format_report_for_rewards(store: FeedbackStore) -> None:
    _fill(store, {"a": [2.0, 3.0] * 20, "b": [3.0, 4.5] * 20})
    text = format_report(store.report("ep"))
    assert re.search(r"^a\s+40\s+40\s+2\.5$", text, re.MULTILINE)
    assert re.search(r"^b\s+40\s+40\s+3\.75$", text, re.MULTILINE)
    assert "b vs a (Welch's t-test):" in text and "difference +1.25 (95% CI" in text


def test_as_dict_is_json_safe(store: FeedbackStore) -> None:
    _fill(store, {"a": [1.0, 0.0] * 20, "b": [1.0] * 40})
    store.remember("ep", "silent", "c")
    document = json.loads(json.dumps(store.report("ep").as_dict(), allow_nan=False))
    assert document["outcome_kind"] == "conversion" and document["baseline"] == "a"
    assert document["variants"][2] == {"variant": "c", "assigned": 1, "outcomes": 0, "mean": None}
    b_vs_a = document["comparisons"][0]
    assert (b_vs_a["variant"], b_vs_a["baseline"], b_vs_a["mean_a"], b_vs_a["mean_b"]) == ("b", "a", 0.5, 1.0)
    assert b_vs_a["test"] == "two-proportion z-test" and 0 <= b_vs_a["p_value"] < 0.05
    assert document["enough"] is False  # c has no outcomes
