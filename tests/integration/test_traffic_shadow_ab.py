"""Shadow comparison and A/B tests against a real server, under concurrent
clients: shadow copies compared with the primary's answers and left out of
them, dropped while the server is busy and stopped when the policy is cleared;
A/B assignment sticky across restarts and over gRPC, feedback recorded and
reported, and hostile feedback or ids refused. The other policies and
rollouts: test_traffic.py."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from tests.integration.reference import cancer_rows, run
from tests.integration.traffic_support import ROWS, body, wine_load
from tests.integration.traffic_support import wine_server as wine_server  # a fixture (the alias tells ruff it is used)
from tests.onnx_models import slower, write_model
from tests.support import ServerProcess, wait_until
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2_grpc as pb_grpc


def test_shadow_counts_disagreements_and_leaves_answers_alone(wine_server: ServerProcess, repo: Path) -> None:
    # breast_cancer's versions (logistic regression, boosted trees) disagree on 10 of its 569 rows
    rows = cancer_rows(569)

    def cancer(row: int) -> dict[str, Any]:
        return {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": rows[row].tolist()}],
            "outputs": [{"name": "label"}],  # the comparison covers the outputs asked for
        }

    with httpx.Client(base_url=wine_server.url) as client:
        plain = [client.post("/v2/models/breast_cancer/versions/1/infer", json=cancer(r)).json() for r in range(569)]
        with wine_server.admin_client() as admin:
            policy = {"policy": "shadow", "primary": "1", "shadow": "2"}
            answer = admin.put("/v2/routing/breast_cancer", json=policy)
            assert answer.status_code == 200, answer.text
            shadowed = [client.post("/v2/models/breast_cancer/infer", json=cancer(r)).json() for r in range(569)]
            report = wait_until(
                lambda: (s := admin.get("/v2/routing/breast_cancer/shadow").json()) and s[0]["requests"] == 569 and s,
                "every shadow copy compared",
                30,
            )[0]
        metrics = client.get("/metrics").text
    for before, after in zip(plain, shadowed, strict=True):
        assert after["outputs"] == before["outputs"] and after["model_version"] == "1"
    one = run(repo / "breast_cancer" / "1" / "model.onnx", {"input": rows})["label"]
    two = run(repo / "breast_cancer" / "2" / "model.onnx", {"input": rows})["label"]
    expected = int(np.count_nonzero(one != two))
    assert expected > 0  # the two versions are known to differ on some rows
    assert report["disagreements"] == expected
    assert report["agreeing"] == 569 - expected
    assert report["errors"] == 0 and report["dropped"] == 0
    line = f'turnout_shadow_requests_total{{endpoint="breast_cancer",outcome="disagree",shadow="2"}} {expected}.0'
    assert line in metrics


def test_clearing_a_shadow_policy_stops_its_copies_at_once(repo: Path, log_dir: Path) -> None:
    # version 3: version 1 made slow on the CPU, as a shadow that cannot keep up with the primary
    # (f2ff761 queued up to 1,000 copies and worked through them for seconds after the clear)
    write_model(
        repo / "wine" / "3" / "model.onnx", slower(repo / "wine" / "1" / "model.onnx", "input", "probabilities")
    )
    with ServerProcess(repo, log_dir=log_dir) as server, server.admin_client() as admin:
        policy = {"policy": "shadow", "primary": "1", "shadow": "3", "percent": 100}
        assert admin.put("/v2/routing/wine", json=policy).status_code == 200
        with wine_load(server.url) as load:
            # copies run, and the busy server drops most of them
            def made_and_dropped() -> bool:
                shadows = admin.get("/v2/routing/wine/shadow").json()  # none before the first copy
                if not shadows:
                    return False
                (shadow,) = shadows
                made = shadow["requests"] + shadow["in_flight"] + shadow["queued"]
                return bool(made and shadow["dropped_by"].get("busy", 0))

            wait_until(made_and_dropped, "shadow copies made, and dropped while busy", 60)
            (shadowed,) = admin.get("/v2/routing/wine/shadow").json()
            assert admin.delete("/v2/routing/wine").status_code == 200  # while the clients go on
            (cleared,) = admin.get("/v2/routing/wine/shadow").json()
            time.sleep(1.5)  # a window in which nothing may run on: an absence has no event to wait for
            (later,) = admin.get("/v2/routing/wine/shadow").json()
        metrics = httpx.get(f"{server.url}/metrics").text
    assert load.failures == [] and len(load.answers) > 100
    assert shadowed["requests"] + shadowed["in_flight"] + shadowed["queued"] > 0, shadowed  # copies did run
    assert cleared["queued"] == 0, cleared  # dropped with the policy, not worked through
    assert later["in_flight"] == 0, later
    # nothing ran on after the clear: at most the copies whose batch was already inside the model
    assert later["requests"] + later["errors"] <= cleared["requests"] + cleared["errors"] + 2, (cleared, later)
    dropped = later["dropped_by"]
    assert dropped.get("busy", 0) > 0, later  # the clients kept the server busy: most copies were never made
    assert 'turnout_shadow_dropped_total{endpoint="wine",reason="busy",shadow="3"}' in metrics


def test_ab_assignment_is_sticky_across_restarts_and_feedback_is_reported(repo: Path, log_dir: Path) -> None:
    state = log_dir / "state"
    assignments: dict[str, str] = {}
    with ServerProcess(repo, log_dir=log_dir, state_dir=state) as server:
        with server.admin_client() as admin:
            answer = admin.put("/v2/routing/wine", json={"policy": "ab", "variants": {"1": 50, "2": 50}})
            assert answer.status_code == 200, answer.text
        with httpx.Client(base_url=server.url) as client:
            for user in range(40):
                seen = set()
                for _ in range(3):
                    response = client.post("/v2/models/wine/infer", json=body(user), headers={"user-id": f"u{user}"})
                    seen.add(response.headers["turnout-variant"])
                    request_id = response.json()["id"]
                assert len(seen) == 1  # sticky
                assignments[f"u{user}"] = seen.pop()
                converted = 1 if assignments[f"u{user}"] == "2" else 0
                recorded = client.post("/v2/models/wine/feedback", json={"id": request_id, "outcome": converted})
                assert recorded.json() == {"id": request_id, "variant": assignments[f"u{user}"], "recorded": True}
            duplicate = client.post("/v2/models/wine/feedback", json={"id": request_id, "outcome": 1})
            assert duplicate.status_code == 409
            unknown = client.post("/v2/models/wine/feedback", json={"id": "never-issued", "outcome": 1})
            assert unknown.status_code == 404
            # the key as a V2 request parameter works the same
            keyed = {**body(0), "parameters": {"user-id": "u3"}}
            assert client.post("/v2/models/wine/infer", json=keyed).headers["turnout-variant"] == assignments["u3"]
    assert set(assignments.values()) == {"1", "2"}
    with ServerProcess(repo, log_dir=log_dir, state_dir=state) as server:
        with httpx.Client(base_url=server.url) as client:
            for user, variant in assignments.items():
                response = client.post("/v2/models/wine/infer", json=body(0), headers={"user-id": user})
                assert response.headers["turnout-variant"] == variant
        with server.admin_client() as admin:
            report = admin.post("/v2/routing/wine/ab", json={"min_count": 5}).json()
    by_variant = {row["variant"]: row for row in report["variants"]}
    counts = Counter(assignments.values())
    assert by_variant["2"]["outcomes"] == counts["2"] and by_variant["2"]["mean"] == 1.0
    assert by_variant["1"]["outcomes"] == counts["1"] and by_variant["1"]["mean"] == 0.0
    assert "two-proportion z-test" in report["text"]


def test_ab_keys_in_grpc_metadata_are_sticky(wine_server: ServerProcess) -> None:
    with wine_server.admin_client() as admin:
        admin.put("/v2/routing/wine", json={"policy": "ab", "variants": {"1": 50, "2": 50}, "key": "user-id"})
    request = pb.ModelInferRequest(model_name="wine")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 13])
    tensor.contents.fp32_contents.extend(ROWS[0].tolist())
    seen: dict[str, set[str]] = {}
    with grpc.insecure_channel(wine_server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for user in range(20):
            for _ in range(3):
                response, call = stub.ModelInfer.with_call(request, metadata=(("user-id", f"g{user}"),))
                assert response.id  # an A/B answer always has an id, for feedback
                seen.setdefault(f"g{user}", set()).add(dict(call.trailing_metadata())["turnout-variant"])
    assert all(len(variants) == 1 for variants in seen.values())
    assert set().union(*seen.values()) == {"1", "2"}


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("POST", "/v2/models/wine/feedback", b"[1, 2]"),
        ("POST", "/v2/models/wine/feedback", b'{"id": 7, "outcome": 1}'),
        ("POST", "/v2/models/wine/feedback", b'{"id": "x", "outcome": "yes"}'),
        ("POST", "/v2/models/wine/feedback", b'{"id": "x"}'),
        ("POST", "/v2/models/wine/feedback", b"{not json"),
        ("POST", "/v2/models/nothing/feedback", b'{"id": "x", "outcome": 1}'),
    ],
)
def test_hostile_feedback_gets_a_clear_4xx(wine_server: ServerProcess, method: str, path: str, payload: bytes) -> None:
    response = httpx.request(method, wine_server.url + path, content=payload)
    assert 400 <= response.status_code < 500 and response.json()["error"], response.text


def test_an_ab_request_with_an_oversized_id_is_refused(wine_server: ServerProcess) -> None:
    with wine_server.admin_client() as admin:
        admin.put("/v2/routing/wine", json={"policy": "ab", "variants": {"1": 50, "2": 50}})
    with httpx.Client(base_url=wine_server.url) as client:
        long = client.post("/v2/models/wine/infer", json={**body(0), "id": "x" * 129}, headers={"user-id": "u"})
        fine = client.post("/v2/models/wine/infer", json={**body(0), "id": "x" * 128}, headers={"user-id": "u"})
    assert long.status_code == 400 and "at most 128 characters" in long.json()["error"]  # ids are stored
    assert fine.status_code == 200 and fine.json()["id"] == "x" * 128
