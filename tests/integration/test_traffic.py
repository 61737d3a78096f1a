"""Traffic control against a real server, under a steady load of concurrent
clients: the example's canary, blue/green switches, canary rollouts (promoted,
rolled back by an operator, rolled back by the guard on errors, latency or
outputs that diverge), the variant in gRPC answers, refused policies and admin
requests, a variant gone from the repository, and state that survives a
restart. Shadow comparison and A/B tests: test_traffic_shadow_ab.py."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.traffic_support import ROWS, body, wine_load
from tests.integration.traffic_support import wine_server as wine_server  # a fixture (the alias tells ruff it is used)
from tests.onnx_models import failing_when_above, slower, write_model
from tests.support import ServerProcess, wait_until
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2_grpc as pb_grpc


def test_example_canary_is_in_force_and_reported(wine_server: ServerProcess) -> None:
    with httpx.Client(base_url=wine_server.url) as client:
        variants = Counter()
        for i in range(300):
            response = client.post("/v2/models/wine/infer", json=body(i % 178))
            assert response.status_code == 200
            document = response.json()
            variant = response.headers["turnout-variant"]
            assert document["parameters"]["variant"] == variant
            assert document["model_version"] == variant  # the variants are the endpoint's own versions
            variants[variant] += 1
        # 10% canary: 30 expected of 300; 5 sigma is ~26
        assert 5 <= variants["2"] <= 60, variants
        pinned = client.post("/v2/models/wine/versions/2/infer", json=body(0))
        assert pinned.json()["model_version"] == "2" and "turnout-variant" not in pinned.headers
        metrics = client.get("/metrics").text
    assert 'variant="2"' in metrics and 'variant="1"' in metrics
    with wine_server.admin_client() as admin:
        status = admin.get("/v2/routing/wine").json()
        assert status["policy"] == {"policy": "canary", "baseline": "1", "candidate": "2", "weight": 10.0}
        events = admin.get("/v2/routing/wine/events").json()
        assert events[0]["kind"] == "policy" and events[0]["actor"] == "model.toml"


def test_blue_green_switch_and_back_under_load_fails_nothing(wine_server: ServerProcess) -> None:
    with wine_server.admin_client() as admin, wine_load(wine_server.url) as load:
        answer = admin.put("/v2/routing/wine", json={"policy": "blue_green", "blue": "1", "green": "2"})
        assert answer.status_code == 200, answer.text
        load.wait_for(100)
        assert admin.post("/v2/routing/wine/switch").json()["policy"]["live"] == "2"
        after_switch = load.after(time.monotonic(), 200)  # the switch has been answered: every new request
        assert admin.post("/v2/routing/wine/switch", json={"to": "1"}).json()["policy"]["live"] == "1"
        after_back = load.after(time.monotonic(), 200)
    assert load.failures == []
    assert set(after_switch) == {"2"}
    assert set(after_back) == {"1"}
    with wine_server.admin_client() as admin:
        kinds = [e["kind"] for e in admin.get("/v2/routing/wine/events").json()]
    assert kinds[-3:] == ["policy", "switched", "switched"]


def test_canary_rollout_promotes_under_load_with_no_failed_request(wine_server: ServerProcess) -> None:
    with wine_server.admin_client() as admin, wine_load(wine_server.url) as load:
        started = admin.post(
            "/v2/routing/wine/rollout/start",
            json={"candidate": "2", "baseline": "1", "steps": "20:0.5s:30r,60:0.5s:30r,100:0.5s:20r",
                  "guard": {"min_samples": 10, "max_p99_ratio": 50}},
        )  # fmt: skip
        assert started.status_code == 200, started.text
        status = wait_until(
            lambda: (s := admin.get("/v2/routing/wine").json())["rollout"]["state"] == "promoted" and s,
            "the promotion",
            60,
        )
        after_promotion = load.after(time.monotonic(), 100)
        events = admin.get("/v2/routing/wine/events").json()
    assert load.failures == []
    assert status["policy"]["weight"] == 100.0
    assert set(after_promotion) == {"2"}
    assert [e["kind"] for e in events][-4:] == ["rollout", "step", "step", "promoted"]
    assert all(e["actor"] == "rollout guard" for e in events[-3:])


def test_an_identical_candidate_is_promoted_by_the_default_guard_and_the_metrics_say_so(
    repo: Path, log_dir: Path
) -> None:
    # version 3: a byte-identical copy of version 1. The guard of f2ff761 (a raw p99 ratio,
    # no slack, 20 samples' maximum) rolled such copies back in most rollouts.
    shutil.copytree(repo / "wine" / "1", repo / "wine" / "3")
    rollouts = 3
    with ServerProcess(repo, log_dir=log_dir) as server, server.admin_client() as admin, wine_load(server.url) as load:
        for _ in range(rollouts):
            started = admin.post(
                "/v2/routing/wine/rollout/start",
                json={"candidate": "3", "baseline": "1", "steps": "10:1s:100r,50:1s:200r,100:1s:100r"},
            )
            assert started.status_code == 200, started.text
            status = wait_until(
                lambda: (s := admin.get("/v2/routing/wine").json())["rollout"]["state"] != "running" and s,
                "the end of the rollout",
                90,
            )
            assert status["rollout"]["state"] == "promoted", status["rollout"]["reason"]
            assert admin.delete("/v2/routing/wine").status_code == 200  # back to the default version
        admin.post(
            "/v2/routing/wine/rollout/start", json={"candidate": "3", "baseline": "1", "steps": "50:600s"}
        ).raise_for_status()
        metrics = httpx.get(f"{server.url}/metrics").text  # the rollout started before its answer came
    assert load.failures == []
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    assert samples[("turnout_rollout_decisions_total",
                    (("cause", "healthy"), ("decision", "promoted"), ("model", "wine")))] == rollouts  # fmt: skip
    assert samples[("turnout_rollout_decisions_total",
                    (("cause", "healthy"), ("decision", "step"), ("model", "wine")))] == 2 * rollouts  # fmt: skip
    assert samples[("turnout_rollout_state", (("model", "wine"), ("state", "running")))] == 1
    assert samples[("turnout_rollout_step", (("model", "wine"),))] == 1
    assert samples[("turnout_routing_weight_percent", (("model", "wine"), ("variant", "3")))] == 50
    policies = [dict(labels) for name, labels in samples if name == "turnout_routing_policy"]
    assert {(p["model"], p["policy"]) for p in policies} >= {("wine", "canary")}
    answered = samples[
        ("turnout_routing_requests_total", (("model", "wine"), ("outcome", "success"), ("variant", "3")))
    ]
    assert answered >= rollouts * 400


def test_operator_rollback_under_load_fails_nothing(wine_server: ServerProcess) -> None:
    with wine_server.admin_client() as admin, wine_load(wine_server.url) as load:
        # a lenient guard: this test is about the operator's rollback, not the guard's
        lenient = {"max_p99_ratio": 100}
        started = admin.post(
            "/v2/routing/wine/rollout/start", json={"candidate": "2", "steps": "50:60s,100:60s", "guard": lenient}
        )
        assert started.json()["rollout"]["baseline"] == "1"  # the variant serving most before
        load.wait_for(100)
        assert load.labels_since(0)["2"] > 0
        back = admin.post("/v2/routing/wine/rollout/rollback")
        assert back.json()["rollout"]["state"] == "rolled_back" and back.json()["policy"]["weight"] == 0
        after = load.after(time.monotonic(), 150)
        again = admin.post("/v2/routing/wine/rollout/rollback")
    assert load.failures == []
    assert set(after) == {"1"}
    assert again.status_code == 400 and "rolled_back" in again.json()["error"]


def test_a_bad_candidate_is_rolled_back_by_the_guard_within_its_step(repo: Path, log_dir: Path) -> None:
    # version 3: version 1 failing on rows with alcohol above 13% (about 40% of the wine data)
    write_model(repo / "wine" / "3" / "model.onnx", failing_when_above(repo / "wine" / "1" / "model.onnx", "input",
                "probabilities", 13.0))  # fmt: skip
    with ServerProcess(repo, log_dir=log_dir) as server, server.admin_client() as admin, wine_load(server.url):
        started = admin.post(
            "/v2/routing/wine/rollout/start",
            json={"candidate": "3", "baseline": "1", "steps": "30:120s,100:120s", "guard": {"min_samples": 20}},
        )
        assert started.status_code == 200, started.text
        begun = time.monotonic()
        status = wait_until(
            lambda: (s := admin.get("/v2/routing/wine").json())["rollout"]["state"] == "rolled_back" and s,
            "the automatic rollback",
            60,
        )
        assert time.monotonic() - begun < 120  # within the first step's hold
        events = admin.get("/v2/routing/wine/events").json()
    assert status["policy"]["weight"] == 0
    last = events[-1]
    assert last["kind"] == "rolled_back" and last["actor"] == "rollout guard"
    assert "at 30%: error rate" in last["detail"]


def test_bad_policies_are_refused_and_the_running_one_stays(wine_server: ServerProcess, repo: Path) -> None:
    with wine_server.admin_client() as admin:
        in_force = admin.get("/v2/routing/wine").json()["policy"]
        for policy, message in (
            ({"policy": "ab", "variants": {"1": 60, "2": 30}}, "must sum to 100"),
            ({"policy": "canary", "baseline": "1", "candidate": "9", "weight": 5}, "unknown variant '9'"),
            ({"policy": "canary", "baseline": "1", "candidate": "breast_cancer", "weight": 5}, "incompatible"),
            ({"policy": "canary", "baseline": "1", "candidate": "2", "weight": 150}, "percentage from 0 to 100"),
            ({"policy": "blue_green", "blue": "1", "green": "2", "colour": "x"}, "unknown field"),
        ):
            answer = admin.put("/v2/routing/wine", json=policy)
            assert answer.status_code == 400 and message in answer.json()["error"], (policy, answer.text)
            assert admin.get("/v2/routing/wine").json()["policy"] == in_force
        refused = [e for e in admin.get("/v2/routing/wine/events").json() if e["kind"] == "refused"]
        assert len(refused) == 5
        # a model.toml whose [routing] is broken: the load is refused, the policy in force stays
        toml = repo / "wine" / "model.toml"
        toml.write_text(toml.read_text().replace("weight = 10", "weight = 10\nsteps = [{weight = 50}]"))
        answer = admin.post("/v2/repository/models/wine/load")
        assert answer.status_code == 400 and "hold time, a minimum of requests" in answer.json()["error"]
        assert admin.get("/v2/routing/wine").json()["policy"] == in_force
    with httpx.Client(base_url=wine_server.url) as client:
        assert client.post("/v2/models/wine/infer", json=body(0)).status_code == 200


def test_api_changes_survive_a_restart_until_model_toml_changes(repo: Path, log_dir: Path) -> None:
    state = log_dir / "state"
    with ServerProcess(repo, log_dir=log_dir, state_dir=state) as server, server.admin_client() as admin:
        admin.put("/v2/routing/wine", json={"policy": "blue_green", "blue": "1", "green": "2", "live": "2"})
    with ServerProcess(repo, log_dir=log_dir, state_dir=state) as server:
        with server.admin_client() as admin:
            assert admin.get("/v2/routing/wine").json()["policy"]["policy"] == "blue_green"
        with httpx.Client(base_url=server.url) as client:
            assert client.post("/v2/models/wine/infer", json=body(0)).headers["turnout-variant"] == "2"
    toml = repo / "wine" / "model.toml"
    toml.write_text(toml.read_text().replace("weight = 10", "weight = 0"))
    with ServerProcess(repo, log_dir=log_dir, state_dir=state) as server, server.admin_client() as admin:
        status = admin.get("/v2/routing/wine").json()
        assert status["policy"] == {"policy": "canary", "baseline": "1", "candidate": "2", "weight": 0.0}
        assert status["source"] == "model.toml"


def test_grpc_answers_carry_the_variant_in_trailing_metadata(wine_server: ServerProcess) -> None:
    request = pb.ModelInferRequest(model_name="wine")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 13])
    tensor.contents.fp32_contents.extend(ROWS[0].tolist())
    with grpc.insecure_channel(wine_server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        seen = set()
        for _ in range(60):
            response, call = stub.ModelInfer.with_call(request, metadata=(("user-id", "u1"),))
            trailing = dict(call.trailing_metadata())
            assert response.parameters["variant"].string_param == trailing["turnout-variant"]
            seen.add(trailing["turnout-variant"])
    assert seen == {"1", "2"}  # the 10% canary, over 60 calls: both appear (p of none ~ 0.002)


def test_routing_changes_need_the_admin_plane_and_an_admin_key(wine_server: ServerProcess) -> None:
    with httpx.Client(base_url=wine_server.url) as public:
        assert public.put("/v2/routing/wine", json={"policy": "single", "variant": "1"}).status_code == 404
    with httpx.Client(base_url=wine_server.admin_url) as anonymous:
        answer = anonymous.put("/v2/routing/wine", json={"policy": "single", "variant": "1"})
        assert answer.status_code == 401


def test_a_variant_gone_from_the_repository_brings_a_policy_that_can_serve(
    wine_server: ServerProcess, repo: Path
) -> None:
    with wine_server.admin_client() as admin, wine_load(wine_server.url) as load:
        admin.put("/v2/routing/wine", json={"policy": "blue_green", "blue": "1", "green": "2", "live": "2"})
        assert set(load.after(time.monotonic(), 50)) == {"2"}
        toml = repo / "wine" / "model.toml"
        toml.write_text(toml.read_text().replace("all = true", "specific = [1]"))
        reloaded = admin.post("/v2/repository/models/wine/load")  # version 2 is unloaded...
        after = load.after(time.monotonic(), 100)
        status = admin.get("/v2/routing/wine").json()
        events = admin.get("/v2/routing/wine/events").json()
    assert load.failures == []  # ...while requests keep being answered
    assert reloaded.status_code == 400 and "[routing] was refused" in reloaded.json()["error"]
    # neither the policy in force nor model.toml's canary can serve: the canary's baseline serves alone
    assert set(after) == {"1"}
    assert status["policy"] == {"policy": "single", "variant": "1"}
    assert [e["kind"] for e in events][-3:] == ["refused", "refused", "fallback"]


def test_a_candidate_whose_outputs_diverge_is_rolled_back(wine_server: ServerProcess) -> None:
    # wine's versions agree on every label but never on the probabilities (within 1e-5 + 1e-3 x)
    guard = {"mirror_percent": 100, "min_agreement": 0.9, "min_samples": 20, "max_p99_ratio": 100}
    with wine_server.admin_client() as admin, wine_load(wine_server.url) as load:
        started = admin.post(
            "/v2/routing/wine/rollout/start",
            json={"candidate": "2", "baseline": "1", "steps": "10:120s,100:120s", "guard": guard},
        )
        assert started.status_code == 200, started.text
        status = wait_until(
            lambda: (s := admin.get("/v2/routing/wine").json())["rollout"]["state"] == "rolled_back" and s,
            "the rollback on divergence",
            60,
        )
        last = admin.get("/v2/routing/wine/events").json()[-1]
    assert load.failures == []  # mirrored copies never reach clients
    assert status["policy"]["weight"] == 0
    assert last["actor"] == "rollout guard" and "outputs agree on 0.0% of" in last["detail"]
    shadow = status["shadow"][0]
    assert shadow["shadow"] == "2" and shadow["requests"] >= 20
    assert shadow["output_agreement"]["label"] == 1.0


def test_a_slow_candidate_is_rolled_back_on_p99(repo: Path, log_dir: Path) -> None:
    write_model(
        repo / "wine" / "3" / "model.onnx", slower(repo / "wine" / "1" / "model.onnx", "input", "probabilities")
    )
    with ServerProcess(repo, log_dir=log_dir) as server, server.admin_client() as admin, wine_load(server.url) as load:
        started = admin.post(
            "/v2/routing/wine/rollout/start",
            json={"candidate": "3", "baseline": "1", "steps": "30:120s,100:120s", "guard": {"min_samples": 20}},
        )
        assert started.status_code == 200, started.text
        status = wait_until(
            lambda: (s := admin.get("/v2/routing/wine").json())["rollout"]["state"] == "rolled_back" and s,
            "the automatic rollback",
            60,
        )
        last = admin.get("/v2/routing/wine/events").json()[-1]
    assert load.failures == []  # slow, not failing
    assert status["policy"]["weight"] == 0
    assert last["actor"] == "rollout guard" and last["detail"].startswith(("at 30%: median ", "at 30%: p99 "))


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("PUT", "/v2/routing/wine", b"{not json"),
        ("PUT", "/v2/routing/wine", b'"canary"'),
        ("PUT", "/v2/routing/wine", b'{"policy": "ab", "variants": {"1": 50, "2": 50}, "key": "\\u043a\\u043b"}'),
        ("PUT", "/v2/routing/wine", b'{"policy": "ab", "variants": [1, 2]}'),
        ("PUT", "/v2/routing/nothing", b'{"policy": "single", "variant": "1"}'),
        ("POST", "/v2/routing/wine/rollout/start", b'{"candidate": "2", "steps": 5}'),
        ("POST", "/v2/routing/wine/rollout/start", b'{"candidate": "2", "steps": "5:1e999s"}'),
        ("POST", "/v2/routing/wine/rollout/start", b'{"candidate": "2", "steps": "5:1s", "guard": {"max": 1}}'),
        ("POST", "/v2/routing/wine/rollout/start", b'{"candidate": "2", "steps": "5:1s", "guard": [1]}'),
        ("POST", "/v2/routing/wine/rollout/explode", b""),
        ("POST", "/v2/routing/wine/rollout/pause", b""),
        ("POST", "/v2/routing/wine/switch", b'{"to": 3}'),
        ("POST", "/v2/routing/wine/ab", b'{"min_count": "many"}'),
        ("POST", "/v2/routing/wine/ab", b'{"baseline": "typo"}'),
    ],
)
def test_hostile_admin_requests_get_a_clear_4xx(
    wine_server: ServerProcess, method: str, path: str, payload: bytes
) -> None:
    with wine_server.admin_client() as admin:
        response = admin.request(method, path, content=payload)
        assert 400 <= response.status_code < 500 and response.json()["error"], response.text
        assert admin.get("/v2/routing/wine").json()["policy"]["policy"] == "canary"  # what was in force stays
