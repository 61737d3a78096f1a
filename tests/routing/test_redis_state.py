"""The shared routing store against a real redis-server: state and event log
written together, read back in order, announced on the channel; a Redis
that is gone is StoreFailed (an operator's change is then refused with a
503, not half made)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.support import RedisServer
from turnout.routing.redis_state import RedisRoutingStore
from turnout.routing.state_store import StoreConflict, StoreFailed

pytestmark = [pytest.mark.redis]


def test_state_and_events_are_kept_together_and_announced(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        store = RedisRoutingStore(server.url, namespace="t")
        listener = redis.Redis.from_url(server.url).pubsub()
        listener.subscribe("t:routing:changed")
        assert listener.get_message(timeout=1)["type"] == "subscribe"
        store.save("wine", {"policy": {"policy": "single", "variant": "1"}}, ("policy", "single 1", "ops"))
        store.log("wine", "refused", "variant '3' unknown", "ops")
        store.save("iris", {"policy": None}, ("cleared", "no policy", "ops"))
        store.save("wine", None, ("cleared", "forgotten", "ops"))
        assert store.load() == {"iris": {"policy": None}}
        assert store.state_of("iris") == {"policy": None} and store.state_of("wine") is None
        assert [(e.endpoint, e.kind) for e in store.events()] == [
            ("wine", "policy"), ("wine", "refused"), ("iris", "cleared"), ("wine", "cleared")]  # fmt: skip
        wine = store.events("wine", limit=2)
        assert [e.kind for e in wine] == ["refused", "cleared"] and wine[0].id < wine[1].id
        announced = [listener.get_message(timeout=1) for _ in range(3)]
        assert [m["data"] for m in announced if m] == [b"wine", b"iris", b"wine"]
        listener.close()
        server.stop()
        with pytest.raises(StoreFailed):
            store.save("wine", None, ("cleared", "no Redis", "ops"))
        with pytest.raises(StoreFailed):
            store.events()
        store.close()


def test_a_redis_that_does_not_answer_is_said_at_start(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        url = server.url
    with pytest.raises(StoreFailed, match="does not answer"):
        RedisRoutingStore(url)


def test_a_save_from_a_state_another_replica_has_since_changed_is_refused(tmp_path: Path) -> None:
    """The leader moving a rollout on while an operator pauses it on another replica:
    whichever saves second, from the state both saw, is refused, not silently undone."""
    with RedisServer(tmp_path) as server:
        leader, other = RedisRoutingStore(server.url, namespace="t"), RedisRoutingStore(server.url, namespace="t")
        step0 = {"policy": {"policy": "canary", "weight": 10}}
        leader.save("wine", step0, ("rollout", "10%", "guard"))
        other.load()  # both have seen step 0
        leader.save("wine", {"policy": {"policy": "canary", "weight": 50}}, ("step", "50%", "guard"))
        with pytest.raises(StoreConflict):
            other.save("wine", {**step0, "paused": True}, ("paused", "by ops", "ops"))
        assert other.state_of("wine") == {"policy": {"policy": "canary", "weight": 50}}  # nothing written
        assert [e.kind for e in other.events("wine")] == ["rollout", "step"]  # nor logged
        # once it has taken up the newer state (SharedRouting tells it), its change is made
        other.saw("wine", json.dumps(other.state_of("wine"), sort_keys=True))
        other.save("wine", {"policy": {"policy": "canary", "weight": 50}, "paused": True}, ("paused", "by ops", "ops"))
        with pytest.raises(StoreConflict):  # and now the leader's view is the old one
            leader.save("wine", {"policy": {"policy": "canary", "weight": 100}}, ("step", "100%", "guard"))
        other.save("iris", {"policy": None}, None)  # an endpoint the leader never saw stored
        with pytest.raises(StoreConflict):
            leader.save("iris", {"policy": {"policy": "single", "variant": "1"}}, None)
        leader.close()
        other.close()
