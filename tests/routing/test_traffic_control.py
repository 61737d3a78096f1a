"""TrafficControl against a real model registry (the example repository,
loaded by ONNX Runtime in this process) and a real SQLite store: which policy
is in force after loads, restarts and changes, and what the event log says."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from turnout.errors import InvalidRequest, Unavailable
from turnout.model.repository import ModelRepository
from turnout.observability.metrics import Metrics
from turnout.routing.policy import BlueGreen, Canary, PolicyError, Single
from turnout.routing.rollout import GuardLimits, Step
from turnout.routing.state_store import RoutingStore, StoreFailed
from turnout.routing.traffic import TrafficControl
from turnout.serving.registry import ModelRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def models(tmp_path: Path, example_repo: Path) -> Path:
    """The examples less the pipeline, which runs only in a server (its steps call the data plane)."""
    root = tmp_path / "models"
    shutil.copytree(example_repo, root, ignore=shutil.ignore_patterns("cancer_screening"))
    return root


Scenario = Callable[[ModelRegistry, Callable[[], TrafficControl]], Awaitable[None]]


def run(models: Path, state: Path, scenario: Scenario) -> None:
    """Load the repository, then run ``scenario`` with a factory of traffic
    controls sharing one state file (a new one is a restart)."""

    async def main() -> None:
        registry = ModelRegistry(ModelRepository(models), Metrics())
        await registry.load_all()
        made: list[TrafficControl] = []

        def control() -> TrafficControl:
            traffic = TrafficControl(registry, RoutingStore(state), clock=Clock())
            for name in registry_names(registry):
                traffic.configured(name, registry.get(name).routing)
            traffic._started = True  # as Server.serve does once every model is taken up
            made.append(traffic)
            return traffic

        try:
            await scenario(registry, control)
        finally:
            for traffic in made:
                traffic._store.close()
            await registry.close()

    asyncio.run(main())


def registry_names(registry: ModelRegistry) -> list[str]:
    return sorted({entry.name for entry in registry.index()})


def kinds(traffic: TrafficControl, endpoint: str = "wine") -> list[str]:
    return [e.kind for e in traffic.events(endpoint)]


def test_an_api_change_lasts_across_restarts_until_model_toml_changes(models: Path, tmp_path: Path) -> None:
    async def scenario(registry: ModelRegistry, control: Callable[[], TrafficControl]) -> None:
        first = control()
        assert first.routes["wine"].policy == Canary("1", "2", 10.0)  # model.toml's
        first.apply("wine", {"policy": "blue_green", "blue": "1", "green": "2"}, "ops")
        assert control().routes["wine"].policy == BlueGreen("1", "2", "1")  # a restart keeps it
        toml = models / "wine" / "model.toml"
        toml.write_text(toml.read_text().replace("weight = 10", "weight = 20"))
        await registry.load("wine")
        third = control()
        assert third.routes["wine"].policy == Canary("1", "2", 20.0)  # the file changed: it wins
        toml.write_text(toml.read_text().split("[routing]")[0])
        await registry.load("wine")
        fourth = control()
        assert "wine" not in fourth.routes  # the table is gone: no policy...
        toml.write_text(
            toml.read_text() + '[routing]\npolicy = "canary"\nbaseline = "1"\ncandidate = "2"\nweight = 20\n'
        )
        await registry.load("wine")
        fifth = control()
        assert fifth.routes["wine"].source == "model.toml"  # ...and no old state comes back with it
        assert kinds(fifth)[-2:] == ["cleared", "policy"]

    run(models, tmp_path / "routing.db", scenario)


def test_a_saved_policy_whose_variant_is_gone_gives_way_to_the_files(models: Path, tmp_path: Path) -> None:
    async def scenario(registry: ModelRegistry, control: Callable[[], TrafficControl]) -> None:
        control().apply("wine", {"policy": "single", "variant": "1"}, "ops")
        (models / "wine" / "1").rename(models / "wine" / "3")  # version 1 leaves; 3 arrives
        toml = models / "wine" / "model.toml"
        toml.write_text(toml.read_text().replace('baseline = "1"', 'baseline = "3"'))
        await registry.load("wine")
        # the saved state was made under the old table: superseded by the file's new one
        restarted = control()
        assert restarted.routes["wine"].policy == Canary("3", "2", 10.0)

    run(models, tmp_path / "routing.db", scenario)


def test_a_saved_policy_naming_a_missing_variant_is_refused_at_start(models: Path, tmp_path: Path) -> None:
    async def scenario(registry: ModelRegistry, control: Callable[[], TrafficControl]) -> None:
        control().apply("breast_cancer", {"policy": "single", "variant": "1"}, "ops")
        toml = models / "breast_cancer" / "model.toml"
        toml.write_text(toml.read_text().replace("all = true", "specific = [2]"))
        await registry.load("breast_cancer")
        restarted = control()
        assert "breast_cancer" not in restarted.routes  # no [routing] in its model.toml: no policy
        events = restarted.events("breast_cancer")
        assert events[-2].kind == "refused" and "the saved policy no longer applies" in events[-2].detail
        assert events[-1].kind == "cleared"

    run(models, tmp_path / "routing.db", scenario)


def test_a_new_rollout_judges_only_its_own_requests(models: Path, tmp_path: Path) -> None:
    async def scenario(registry: ModelRegistry, control: Callable[[], TrafficControl]) -> None:
        traffic = control()
        steps = (Step(50, min_requests=10), Step(100, min_requests=10))
        traffic.start_rollout("wine", "2", steps, "ops", "1")
        for _ in range(100):
            traffic.observe("wine", "1", True, 0.001)
            traffic.observe("wine", "2", False, 0.001)  # a bad first attempt
        traffic.start_rollout("wine", "2", steps, "ops", "1")  # started again, from scratch
        traffic.tick()
        assert traffic.routes["wine"].rollout is not None
        assert traffic.routes["wine"].rollout.state.value == "running"  # not judged on the old errors
        assert traffic.status("wine")["window"] == {}

    run(models, tmp_path / "routing.db", scenario)


def test_a_change_that_cannot_be_saved_is_not_made_but_a_guard_rollback_is(models: Path, tmp_path: Path) -> None:
    async def scenario(registry: ModelRegistry, control: Callable[[], TrafficControl]) -> None:
        traffic = control()
        traffic.start_rollout("wine", "2", (Step(50, hold_seconds=60),), "ops", "1")
        traffic._store.close()  # the store fails from now on (as a full or vanished disk would)
        with pytest.raises(Unavailable, match="could not be saved"):
            traffic.apply("wine", {"policy": "single", "variant": "1"}, "ops")
        assert isinstance(traffic.routes["wine"].policy, Canary)
        for _ in range(30):
            traffic.observe("wine", "1", True, 0.001)
            traffic.observe("wine", "2", False, 0.001)
        traffic.tick()
        assert traffic.routes["wine"].policy == Canary("1", "2", 0.0)  # rolled back all the same

    run(models, tmp_path / "routing.db", scenario)


def test_changes_wait_for_the_start_and_bad_switches_say_why(models: Path, tmp_path: Path) -> None:
    async def scenario(registry: ModelRegistry, control: Callable[[], TrafficControl]) -> None:
        waiting = TrafficControl(registry, RoutingStore(tmp_path / "other.db"))
        with pytest.raises(Unavailable, match="still loading"):
            waiting.apply("wine", {"policy": "single", "variant": "1"}, "ops")
        waiting._store.close()
        traffic = control()
        traffic.apply("wine", {"policy": "blue_green", "blue": "1", "green": "2"}, "ops")
        with pytest.raises(InvalidRequest, match="switch refused"):
            traffic.switch("wine", "ops", "7")
        with pytest.raises(InvalidRequest, match="rollout refused"):
            traffic.start_rollout("wine", "breast_cancer", (Step(50, hold_seconds=1),), "ops")
        assert kinds(traffic)[-2:] == ["refused", "refused"]

    run(models, tmp_path / "routing.db", scenario)


def test_a_policy_removed_through_the_api_stays_removed(models: Path, tmp_path: Path) -> None:
    async def scenario(registry: ModelRegistry, control: Callable[[], TrafficControl]) -> None:
        traffic = control()
        traffic.clear("wine", "ops")
        traffic.configured("wine", registry.get("wine").routing)  # a reload, same table
        assert "wine" not in traffic.routes
        assert "wine" not in control().routes  # a restart
        assert kinds(traffic)[-1] == "cleared"

    run(models, tmp_path / "routing.db", scenario)


def test_a_single_variant_is_checked_against_the_endpoints_signature(models: Path, tmp_path: Path) -> None:
    async def scenario(registry: ModelRegistry, control: Callable[[], TrafficControl]) -> None:
        with pytest.raises(InvalidRequest, match="incompatible with 'wine'"):
            control().apply("wine", {"policy": "single", "variant": "breast_cancer"}, "ops")

    run(models, tmp_path / "routing.db", scenario)


def test_the_files_policy_applies_even_when_it_cannot_be_saved_and_is_saved_later(models: Path, tmp_path: Path) -> None:
    async def scenario(registry: ModelRegistry, control: Callable[[], TrafficControl]) -> None:
        traffic = control()
        traffic.clear("wine", "ops")
        real = traffic._store.save

        def failing(*args: object, **kwargs: object) -> None:
            raise StoreFailed("database or disk is full")  # as the SQLite store says a full disk

        traffic._store.save = failing  # type: ignore[method-assign]
        toml = models / "wine" / "model.toml"
        toml.write_text(toml.read_text().replace("weight = 10", "weight = 30"))
        await registry.load("wine")
        traffic.configured("wine", registry.get("wine").routing)
        assert traffic.routes["wine"].policy == Canary("1", "2", 30.0)  # in force, not saved
        traffic.tick()  # still failing: kept for later
        traffic._store.save = real  # type: ignore[method-assign]
        traffic.tick()
        assert control().routes["wine"].policy == Canary("1", "2", 30.0)  # saved once the store worked

    run(models, tmp_path / "routing.db", scenario)


def test_a_refused_file_policy_leaves_its_baseline_serving_not_the_candidate(models: Path, tmp_path: Path) -> None:
    async def scenario(registry: ModelRegistry, control: Callable[[], TrafficControl]) -> None:
        toml = models / "wine" / "model.toml"
        toml.write_text(toml.read_text().replace('candidate = "2"', 'candidate = "9"'))
        await registry.load("wine")
        traffic = TrafficControl(registry, RoutingStore(tmp_path / "fresh.db"))
        with pytest.raises(PolicyError, match="unknown variant '9'"):
            traffic.configured("wine", registry.get("wine").routing)
        assert traffic.routes["wine"].policy == Single("1")  # not version 2, the highest
        assert kinds(traffic)[-2:] == ["refused", "fallback"]
        traffic._store.close()

    run(models, tmp_path / "routing.db", scenario)


def test_pausing_at_the_last_step_keeps_the_baseline_to_compare_with(models: Path, tmp_path: Path) -> None:
    async def scenario(registry: ModelRegistry, control: Callable[[], TrafficControl]) -> None:
        traffic = control()
        limits = GuardLimits(min_samples=10)
        traffic.start_rollout("wine", "2", (Step(50, min_requests=10), Step(100, min_requests=10)), "ops", "1", limits)
        for i in range(40):  # both fail one request in ten
            traffic.observe("wine", "1", i % 10 != 0, 0.001)
            traffic.observe("wine", "2", i % 10 != 0, 0.001)
        traffic.tick()
        assert traffic.routes["wine"].policy == Canary("1", "2", 100.0)  # at the last step
        traffic.operate("wine", "pause", "ops")
        traffic.operate("wine", "resume", "ops")
        for i in range(40):
            traffic.observe("wine", "2", i % 20 not in (0, 7, 14), 0.001)  # 7.5%: within what the baseline showed
        traffic.tick()
        plan = traffic.routes["wine"].rollout
        # judged against the baseline's 10% from the step before; the absolute slack alone (1%)
        # would have rolled it back
        assert plan is not None and plan.state.value == "promoted", plan

    run(models, tmp_path / "routing.db", scenario)


def test_an_endpoint_routing_to_a_model_that_changes_is_checked_again(models: Path, tmp_path: Path) -> None:
    shutil.copytree(models / "wine", models / "wine_copy")
    (models / "wine_copy" / "model.toml").write_text("max_batch_size = 64\n[version_policy]\nall = true\n")

    async def scenario(registry: ModelRegistry, control: Callable[[], TrafficControl]) -> None:
        traffic = control()
        traffic.apply("wine", {"policy": "shadow", "primary": "1", "shadow": "wine_copy"}, "ops")
        signature = (models / "breast_cancer" / "model.toml").read_text().split("# The signature")[1]
        (models / "wine_copy" / "model.toml").write_text("[version_policy]\nall = true\n# The signature" + signature)
        for version in ("1", "2"):  # wine_copy becomes a breast-cancer model, declared: another signature
            shutil.copy(
                models / "breast_cancer" / version / "model.onnx", models / "wine_copy" / version / "model.onnx"
            )
        await registry.load("wine_copy")
        traffic.model_changed("wine_copy")
        assert traffic.routes["wine"].policy == Canary("1", "2", 10.0)  # model.toml's again
        assert "once 'wine_copy' changed" in traffic.events("wine")[-2].detail

    run(models, tmp_path / "routing.db", scenario)


def test_copies_are_stopped_when_a_policy_stops_mirroring(models: Path, tmp_path: Path) -> None:
    async def scenario(registry: ModelRegistry, control: Callable[[], TrafficControl]) -> None:
        traffic = control()
        stopped: list[tuple[str, frozenset[str]]] = []
        # the server's mirror.stop
        traffic._table.stop_mirroring = lambda endpoint, keep: stopped.append((endpoint, keep))
        traffic.apply("wine", {"policy": "shadow", "primary": "1", "shadow": "2", "percent": 100}, "ops")
        traffic.apply("wine", {"policy": "shadow", "primary": "1", "shadow": "2", "percent": 50}, "ops")
        assert stopped == []  # still mirroring to 2
        traffic.apply("wine", {"policy": "canary", "baseline": "1", "candidate": "2", "weight": 10}, "ops")
        assert stopped == [("wine", frozenset())]
        traffic.apply("wine", {"policy": "shadow", "primary": "1", "shadow": "2", "percent": 100}, "ops")
        traffic.clear("wine", "ops")
        assert stopped[-1] == ("wine", frozenset())
        # a rollout's mirrored copies stop when it ends
        guard = GuardLimits(min_samples=1, mirror_percent=50.0, min_agreement=0.9)
        traffic.start_rollout("wine", "2", (Step(50, min_requests=1),), "ops", "1", guard)
        count = len(stopped)
        traffic.operate("wine", "promote", "ops")
        assert len(stopped) == count + 1 and stopped[-1] == ("wine", frozenset())

    run(models, tmp_path / "routing.db", scenario)
