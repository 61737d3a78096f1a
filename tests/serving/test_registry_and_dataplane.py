"""The registry and the data plane in one process, on the example models
(real ONNX Runtime, no server): a reload swaps versions under a stream of
requests without failing one, an unload drains what was accepted, and a
memory budget of one model evicts and reloads under concurrent requests for
two models without losing any."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from turnout.errors import Unavailable
from turnout.model.repository import ModelRepository
from turnout.observability.metrics import Metrics
from turnout.protocol.types import InferenceRequest, InferInput
from turnout.serving.dataplane import DataPlane
from turnout.serving.pins import PinStore
from turnout.serving.registry import ModelRegistry
from turnout.serving.residency import Budget

ROWS = {"diabetes": np.full((2, 10), 0.01, dtype=np.float32), "wine": np.full((2, 13), 1.0, dtype=np.float32)}


@pytest.fixture
def repo(example_repo: Path, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    for name in ("diabetes", "wine"):
        shutil.copytree(example_repo / name, root / name)
    return root


def request(model: str) -> InferenceRequest:
    rows = ROWS[model]
    return InferenceRequest(model, None, [InferInput("input", "FP32", rows.shape, rows)])


def plane(repo: Path, tmp_path: Path, budget: Budget | None = None) -> tuple[ModelRegistry, DataPlane]:
    registry = ModelRegistry(ModelRepository(repo), Metrics(), pins=PinStore(tmp_path / "pins.json"), budget=budget)
    dataplane = DataPlane(registry=registry, metrics=Metrics())
    dataplane.mark_started()
    return registry, dataplane


def test_a_reload_swaps_versions_under_requests_without_failing_one(repo: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        registry, dataplane = plane(repo, tmp_path)
        await registry.load_all()
        answered: list[str] = []
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set():
                answered.append((await dataplane.infer(request("diabetes"), "test")).model_version)

        clients = [asyncio.create_task(client()) for _ in range(8)]
        shutil.copytree(repo / "diabetes" / "1", repo / "diabetes" / "2")  # a new version appears
        await registry.load("diabetes")
        while "2" not in answered[-8:]:
            await asyncio.sleep(0)  # the clients run between turns of the loop
        stop.set()
        await asyncio.gather(*clients)  # any failed request would raise here
        assert registry.versions("diabetes") == [2]
        assert answered.index("2") > 0 and set(answered) <= {"1", "2"}
        await registry.close()

    asyncio.run(scenario())


def test_an_unload_answers_what_it_accepted_then_refuses(repo: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        registry, dataplane = plane(repo, tmp_path)
        await registry.load_all()
        accepted = [asyncio.create_task(dataplane.infer(request("wine"), "test")) for _ in range(32)]
        await asyncio.sleep(0)  # each request is in the batcher's queue
        unloading = asyncio.create_task(registry.unload("wine"))
        answers = await asyncio.gather(*accepted)
        await unloading
        assert [a.model_version for a in answers] == ["2"] * 32
        with pytest.raises(Unavailable, match="no ready version"):
            await dataplane.infer(request("wine"), "test")
        await registry.close()

    asyncio.run(scenario())


def test_a_budget_of_one_model_evicts_and_reloads_under_concurrent_requests(repo: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        registry, dataplane = plane(repo, tmp_path, Budget(max_models=1))
        await registry.load_all(lazy=True)

        async def client(model: str) -> list[str]:
            return [(await dataplane.infer(request(model), "test")).model_name for _ in range(15)]

        results = await asyncio.gather(*(client(m) for m in ("diabetes", "wine", "diabetes", "wine")))
        assert results == [[m] * 15 for m in ("diabetes", "wine", "diabetes", "wine")]
        # an eviction runs in the background once the load that called for it is live: let it finish
        for _ in range(500):
            loaded = [name for name in ("diabetes", "wine") if registry.versions(name)]
            if len(loaded) <= 1:
                break
            await asyncio.sleep(0.01)
        assert len(loaded) <= 1  # never both in memory once the evictions settle
        await registry.close()

    asyncio.run(scenario())


def test_a_request_resolved_before_a_reload_is_answered_by_the_version_that_replaced_it(
    repo: Path, tmp_path: Path
) -> None:
    """The transports resolve a request once, before its body is read; a
    reload that swaps versions meanwhile is noticed (the old version drains)
    and the new one answers, instead of a refusal from the drained one."""

    async def scenario() -> None:
        registry, dataplane = plane(repo, tmp_path)
        await registry.load_all()
        arrival = await dataplane.arrive("diabetes", None, "test")  # the body is still being read
        assert arrival.served is not None and arrival.served.version == 1 and not arrival.draining
        shutil.copytree(repo / "diabetes" / "1", repo / "diabetes" / "2")
        await registry.load("diabetes")  # swapped, and version 1 drained
        assert arrival.draining
        response = await dataplane.infer(request("diabetes"), "test", arrival=arrival)
        assert response.model_version == "2"
        # an arrival still live is used as it is: no second lookup
        fresh = await dataplane.arrive("diabetes", None, "test")
        registry.get = None  # type: ignore[assignment,method-assign]  # any lookup now fails loudly
        assert (await dataplane.infer(request("diabetes"), "test", arrival=fresh)).model_version == "2"
        del registry.get
        await registry.close()

    asyncio.run(scenario())
