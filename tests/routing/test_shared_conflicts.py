"""Two replicas' traffic control on one shared store (a real redis-server and
a real model registry, in this process): a change decided from a state the
other replica has since changed is refused, never silently undone. The
operator's is a 409; the rollout guard's is dropped and judged again once the
newer state is taken up. Taking a state up is what ``SharedRouting`` does on
an announcement: ``saw`` (the stored JSON) and ``adopt``."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.support import RedisServer
from turnout.errors import Conflict
from turnout.model.repository import ModelRepository
from turnout.observability.metrics import Metrics
from turnout.routing.redis_state import RedisRoutingStore
from turnout.routing.rollout import GuardLimits, State, Step
from turnout.routing.traffic import TrafficControl
from turnout.serving.registry import ModelRegistry

pytestmark = [pytest.mark.redis]


def take_up(replica: TrafficControl, store: RedisRoutingStore, endpoint: str) -> None:
    """What SharedRouting does when another replica's change is announced."""
    state = store.state_of(endpoint)
    store.saw(endpoint, None if state is None else json.dumps(state, sort_keys=True))
    replica.adopt(endpoint, state)


def test_a_change_made_from_a_stale_state_is_refused_and_made_once_the_state_is_taken_up(
    tmp_path: Path, example_repo: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(example_repo / "wine", models / "wine")

    async def scenario(url: str) -> None:
        registry = ModelRegistry(ModelRepository(models), Metrics())
        await registry.load_all()
        stores = [RedisRoutingStore(url, namespace="t"), RedisRoutingStore(url, namespace="t")]
        leader, other = (TrafficControl(registry, store, clock=lambda: 0.0) for store in stores)
        for replica in (leader, other):
            replica.configured("wine", registry.get("wine").routing)
            replica._started = True  # as Server.serve does once every model is taken up
        try:
            guard = GuardLimits(min_samples=10)
            leader.start_rollout("wine", "2", (Step(20, min_requests=10), Step(60, min_requests=10)), "ops", "1", guard)
            take_up(other, stores[1], "wine")
            for _ in range(20):
                leader.observe("wine", "1", True, 0.001)
                leader.observe("wine", "2", True, 0.001)
            leader.tick()  # the guard moves it to its second step, saved and announced...
            assert leader.routes["wine"].rollout.step == 1
            with pytest.raises(Conflict, match="another replica changed"):  # ...which the other has not taken up
                other.operate("wine", "pause", "ops")
            assert other.routes["wine"].rollout.state is State.RUNNING  # nothing changed here either
            take_up(other, stores[1], "wine")
            paused = other.operate("wine", "pause", "ops")
            assert paused.rollout.state is State.PAUSED and paused.rollout.step == 1
            for _ in range(20):
                leader.observe("wine", "1", True, 0.001)
                leader.observe("wine", "2", True, 0.001)
            leader.tick()  # its view is the running rollout: its step is refused, the pause stands
            assert stores[0].state_of("wine")["rollout"]["state"] == "paused"
            take_up(leader, stores[0], "wine")
            assert leader.routes["wine"].rollout.state is State.PAUSED
        finally:
            for store in stores:
                store.close()
            await registry.close()

    with RedisServer(tmp_path / "redis") as server:
        asyncio.run(scenario(server.url))
