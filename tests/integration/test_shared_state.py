"""Replicas sharing one routing state through Redis (`--state redis://...`),
three real turnout processes and a real redis-server: a policy set through
one replica's admin API is in force on all three within a second; one
replica at a time moves a progressive rollout on, and when that leader is
killed with SIGKILL another takes the lease and finishes the rollout."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.traffic_support import body, wine_load
from tests.support import RedisServer, ServerProcess, wait_until

pytestmark = [pytest.mark.redis]


@pytest.fixture
def replicas(repo: Path, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    with ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer(tmp_path / "redis"))
        started = []
        for index in range(3):
            (logs := tmp_path / f"replica{index}").mkdir()
            started.append(stack.enter_context(ServerProcess(repo, "--state", redis_server.url, log_dir=logs)))
        yield started


def policy(replica: ServerProcess) -> dict[str, object] | None:
    with replica.admin_client() as admin:
        answer = admin.get("/v2/routing/wine")
    return answer.json().get("policy") if answer.status_code == 200 else None


def status_of(replica: ServerProcess) -> dict[str, Any]:
    with replica.admin_client() as admin:
        answer: dict[str, Any] = admin.get("/v2/routing/wine").json()
    return answer


def test_a_policy_set_on_one_replica_is_in_force_on_all_within_a_second(replicas: list[ServerProcess]) -> None:
    canary = {"policy": "canary", "baseline": "1", "candidate": "2", "weight": 30}
    with replicas[0].admin_client() as admin:
        assert admin.put("/v2/routing/wine", json=canary).status_code == 200
    set_at = time.monotonic()
    for replica in replicas[1:]:
        wait_until(lambda r=replica: (p := policy(r)) is not None and p.get("weight") == 30, "the canary", 1.0, 0.02)
    took = time.monotonic() - set_at
    print(f"in force on the other two {took * 1000:.0f} ms after the change was answered")  # BENCHMARKS.md
    assert took < 1.0, took
    # and a request to any of them is routed by it
    with httpx.Client(base_url=replicas[2].url, timeout=10) as client:
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 13], "data": [13.0] * 13}]}
        variants = {client.post("/v2/models/wine/infer", json=body).headers["turnout-variant"] for _ in range(60)}
    assert variants == {"1", "2"}
    with replicas[2].admin_client() as admin:  # changed through another replica, logged once for all
        assert admin.delete("/v2/routing/wine").status_code == 200
        events = [event["kind"] for event in admin.get("/v2/routing/wine/events").json()]
    assert events[-2:] == ["policy", "cleared"]
    for replica in replicas:
        wait_until(lambda r=replica: policy(r) is None, "the policy cleared everywhere", 1.0, 0.02)


def test_a_rollout_survives_its_leaders_sigkill(replicas: list[ServerProcess]) -> None:
    with replicas[0].admin_client() as admin:
        started = admin.post(
            "/v2/routing/wine/rollout/start",
            json={"candidate": "2", "baseline": "1", "steps": "20:1s:20r,60:1s:20r,100:1s:10r",
                  "guard": {"min_samples": 10, "max_p99_ratio": 50}},
        )  # fmt: skip
        assert started.status_code == 200, started.text
    loads = [wine_load(replica.url) for replica in replicas]
    with ExitStack() as stack:
        for load in loads:
            stack.enter_context(load)
        leader = next(r for r in replicas if "now judges rollouts" in r.log())
        assert leader.process is not None
        leader.process.send_signal(signal.SIGKILL)  # mid-rollout: its lease is left to run out
        leader.process.wait()
        others = [r for r in replicas if r is not leader]
        wait_until(lambda: any("now judges rollouts" in r.log() for r in others), "another leader", 10)
        status = wait_until(lambda: (s := status_of(others[0]))["rollout"]["state"] != "running" and s,
                            "the rollout's end", 60)  # fmt: skip
    assert status["rollout"]["state"] == "promoted", status
    for replica in others:
        assert policy(replica) == status["policy"]


def test_the_leader_judges_a_rollout_on_every_replicas_requests(replicas: list[ServerProcess]) -> None:
    """The leader answers none of the rollout's requests: the others' windows are its evidence."""
    leader = wait_until(lambda: next((r for r in replicas if "now judges rollouts" in r.log()), None), "a leader", 10)
    with leader.admin_client() as admin:
        started = admin.post(
            "/v2/routing/wine/rollout/start",
            json={"candidate": "2", "baseline": "1", "steps": "50:0.5s:20r,100:0.5s:10r",
                  "guard": {"min_samples": 10, "max_p99_ratio": 50}},
        )  # fmt: skip
        assert started.status_code == 200, started.text
    with ExitStack() as stack:
        for replica in replicas:
            if replica is not leader:
                stack.enter_context(wine_load(replica.url))
        status = wait_until(lambda: (s := status_of(leader))["rollout"]["state"] != "running" and s,
                            "the rollout's end", 60)  # fmt: skip
    assert status["rollout"]["state"] == "promoted", status
    served = httpx.get(f"{leader.url}/metrics").text
    assert 'turnout_requests_total{model="wine"' not in served  # the leader answered none of them


def test_ab_feedback_reaches_any_replica_and_the_report_counts_them_all(replicas: list[ServerProcess]) -> None:
    """Behind a balancer, a request answered by one replica gets its feedback through another."""
    with replicas[0].admin_client() as admin:
        answer = admin.put("/v2/routing/wine", json={"policy": "ab", "variants": {"1": 50, "2": 50}})
        assert answer.status_code == 200, answer.text
    for replica in replicas[1:]:
        wait_until(lambda r=replica: (p := policy(r)) is not None and p.get("policy") == "ab", "the A/B test", 1.0)
    answered = []
    for user in range(30):
        response = httpx.post(f"{replicas[user % 3].url}/v2/models/wine/infer", json=body(user),
                              headers={"user-id": f"u{user}"}, timeout=10)  # fmt: skip
        answered.append((user, response.json()["id"], response.headers["turnout-variant"]))
    time.sleep(1.1)  # feedback comes later than the answering replica's next write of its assignments
    for user, request_id, variant in answered:
        told = replicas[(user + 1) % 3]
        recorded = httpx.post(f"{told.url}/v2/models/wine/feedback", timeout=10,
                              json={"id": request_id, "outcome": 1 if variant == "2" else 0})  # fmt: skip
        assert recorded.json() == {"id": request_id, "variant": variant, "recorded": True}, recorded.text
    variants = {f"u{user}": variant for user, _, variant in answered}
    with replicas[2].admin_client() as admin:
        report = admin.post("/v2/routing/wine/ab", json={"min_count": 5}).json()
    counts = {row["variant"]: row["outcomes"] for row in report["variants"]}
    assert sum(counts.values()) == 30 and counts == {v: list(variants.values()).count(v) for v in counts}


def versions(replica: ServerProcess) -> dict[str, Any]:
    with replica.admin_client() as admin:
        found: dict[str, Any] = admin.get("/v2/repository/models/wine/versions").json()
    return found


def test_a_pin_made_on_one_replica_is_the_default_on_all_within_a_second(replicas: list[ServerProcess]) -> None:
    with replicas[0].admin_client() as admin:  # wine's model.toml canary would choose the version, not the default
        assert admin.delete("/v2/routing/wine").status_code == 200
    for replica in replicas:
        wait_until(lambda r=replica: policy(r) is None, "the canary cleared everywhere", 1.0, 0.02)
    assert {versions(r)["default"] for r in replicas} == {"2"}  # the version policy's: the latest
    with replicas[0].admin_client() as admin:
        pinned = admin.post("/v2/repository/models/wine/pin", json={"version": "1"})
        assert pinned.status_code == 200, pinned.text
    set_at = time.monotonic()
    for replica in replicas[1:]:
        wait_until(lambda r=replica: versions(r)["default"] == "1", "the pin taken up", 1.0, 0.02)
    took = time.monotonic() - set_at
    print(f"the pin was the default on the other two {took * 1000:.0f} ms after it was answered")  # BENCHMARKS.md
    assert all(versions(r)["pinned"] == "1" for r in replicas)
    for user in range(5):  # the pinned default answers
        answer = httpx.post(f"{replicas[2].url}/v2/models/wine/infer", json=body(user), timeout=10)
        assert answer.json()["model_version"] == "1"
    with replicas[1].admin_client() as admin:  # unpinned through another replica: back to the policy's everywhere
        assert admin.post("/v2/repository/models/wine/unpin").status_code == 200
    for replica in replicas:
        wait_until(lambda r=replica: versions(r)["default"] == "2" and versions(r)["pinned"] is None, "the unpin", 1.0)
