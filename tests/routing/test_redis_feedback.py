"""A/B feedback kept in a real redis-server, as replicas share it: an
assignment noted by one replica is found by another once written (or while
it is being written), the first outcome stands, an unknown id is refused, and
the report counts every replica's requests as the SQLite store counts its own."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.support import RedisServer
from turnout.routing.feedback import DuplicateFeedback, FeedbackError, FeedbackStore
from turnout.routing.redis_feedback import RedisFeedbackStore
from turnout.routing.state_store import StoreFailed

pytestmark = [pytest.mark.redis]


def test_feedback_answered_by_one_replica_is_recorded_through_another(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        first, second = RedisFeedbackStore(server.url, "t"), RedisFeedbackStore(server.url, "t")
        first.remember("wine", "a", "1")
        first.remember("wine", "b", "2")
        first.remember("wine", "a", "2")  # a reused id keeps its first variant
        assert first.flush() == 2
        assert second.record("wine", "a", 1) == "1"
        assert second.record("wine", "b", False) == "2"
        with pytest.raises(DuplicateFeedback):
            first.record("wine", "a", 0)  # the first outcome stands, on any replica
        with pytest.raises(FeedbackError, match="no A/B assignment"):
            second.record("wine", "never", 1)
        with pytest.raises(FeedbackError, match="finite number"):
            second.record("wine", "b", float("nan"))
        first.remember("wine", "c", "2")  # feedback faster than the answering replica's next flush
        threading.Timer(0.3, first.flush).start()
        assert second.record("wine", "c", 1) == "2"
        first.close()
        second.close()


def test_the_report_is_the_one_the_sqlite_store_makes_of_the_same_requests(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        shared = [RedisFeedbackStore(server.url, "t") for _ in range(3)]
        local = FeedbackStore(tmp_path / "feedback.db")
        for index in range(120):
            variant, replica = ("1", "2")[index % 2], shared[index % 3]
            replica.remember("wine", str(index), variant)
            local.remember("wine", str(index), variant)
        for store in shared:
            store.flush()
        for index in range(0, 120, 2):
            outcome = 1 if index % 6 == 0 else 0
            shared[(index + 1) % 3].record("wine", str(index), outcome)  # through another replica
            local.record("wine", str(index), outcome)
        assert shared[0].report("wine", min_count=10).as_dict() == local.report("wine", min_count=10).as_dict()
        local.close()
        for store in shared:
            store.close()


def test_a_redis_gone_is_store_failed_and_assignments_wait_in_memory(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        store = RedisFeedbackStore(server.url, "t")
        store.remember("wine", "a", "1")
        server.stop()
        with pytest.raises(StoreFailed):
            store.flush()
        with pytest.raises(StoreFailed):
            store.report("wine")
        assert store.lost == 0  # kept for the next flush
        store.close()
