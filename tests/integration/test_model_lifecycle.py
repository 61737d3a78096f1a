"""The model lifecycle against a real server watching its repository, under a
steady load of concurrent clients: new versions go live by themselves, broken
ones (corrupt file, another signature, a checksum mismatch) never replace the
serving one, and rollback and pinning are instant; no request fails, and
every answer comes from a version that was live."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.integration.reference import diabetes_rows
from tests.onnx_models import slower, write_model
from tests.support import ServerProcess, SteadyLoad, wait_until

ROWS = diabetes_rows(50)


def diabetes_load(url: str) -> SteadyLoad:
    """Clients calling diabetes (no version named); each answer labelled by the version that served it."""

    def body(request: int) -> dict[str, Any]:
        row = ROWS[request % len(ROWS)].tolist()
        return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": row}]}

    return SteadyLoad(url, "/v2/models/diabetes/infer", body, lambda response: response.json()["model_version"])


def publish(repo: Path, version: int, source: Path, sha256: str | None = None) -> None:
    """Copy a model file in as a new version, the way an operator would: into a
    hidden directory first, then renamed into place."""
    staging = repo / "diabetes" / f".staging-{version}"
    staging.mkdir()
    shutil.copy(source, staging / "model.onnx")
    if sha256 is not None:
        (staging / "model.onnx.sha256").write_text(f"{sha256}  model.onnx\n")
    staging.rename(repo / "diabetes" / str(version))


def test_versions_come_and_go_under_load_with_no_failed_request(repo: Path, log_dir: Path) -> None:
    good = repo / "diabetes" / "1" / "model.onnx"
    server = ServerProcess(repo, "--model-control", "poll", "--poll-interval", "0.2", log_dir=log_dir)
    with server, server.admin_client() as admin, diabetes_load(server.url) as load:

        def status() -> dict[str, Any]:
            answer: dict[str, Any] = admin.get("/v2/repository/models/diabetes/versions").json()
            return answer

        def state(version: str) -> tuple[str, str]:
            entry = next((v for v in status()["versions"] if v["version"] == version), None)
            return ("", "") if entry is None else (entry["state"], entry["reason"])

        # a new version goes live by itself (latest = 1: version 1 is drained and unloaded)
        publish(repo, 2, good, hashlib.sha256(good.read_bytes()).hexdigest())
        wait_until(lambda: status()["default"] == "2", "version 2 live")
        assert set(load.after(time.monotonic())) == {"2"}
        # broken versions never replace the serving one
        (repo / "diabetes" / ".staging-3").mkdir()
        (repo / "diabetes" / ".staging-3" / "model.onnx").write_bytes(b"not an onnx model at all")
        (repo / "diabetes" / ".staging-3").rename(repo / "diabetes" / "3")
        wait_until(lambda: state("3")[0] == "UNAVAILABLE", "version 3 refused")
        assert status()["default"] == "2"
        shutil.rmtree(repo / "diabetes" / "3")
        publish(repo, 4, repo / "breast_cancer" / "1" / "model.onnx")  # another signature entirely
        wait_until(lambda: state("4")[0] == "UNAVAILABLE", "version 4 refused")
        assert "signature differs from version 2" in state("4")[1]
        shutil.rmtree(repo / "diabetes" / "4")
        publish(repo, 5, good, "0" * 64)  # a checksum that does not match
        wait_until(lambda: state("5")[0] == "UNAVAILABLE", "version 5 refused")
        assert "does not match the expected" in state("5")[1]
        assert status()["default"] == "2"
        assert set(load.after(time.monotonic())) == {"2"}
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200  # a refused version: still ready
        shutil.rmtree(repo / "diabetes" / "5")
        # rollback: back to version 1 (reloaded: the policy had let it go), at once
        back = admin.post("/v2/repository/models/diabetes/rollback")
        assert back.status_code == 200, back.text
        assert back.json()["default"] == "1" and back.json()["pinned"] == "1"
        assert set(load.after(time.monotonic())) == {"1"}
        # pin 2 again, then unpin: the policy's choice (the highest, 2) serves
        assert admin.post("/v2/repository/models/diabetes/pin", json={"version": "2"}).json()["default"] == "2"
        assert set(load.after(time.monotonic())) == {"2"}
        unpinned = admin.post("/v2/repository/models/diabetes/unpin").json()
        assert unpinned["pinned"] is None and unpinned["default"] == "2"
        missing = admin.post("/v2/repository/models/diabetes/pin", json={"version": "9"})
        assert missing.status_code == 404 and "no version 9 on disk" in missing.json()["error"]
        admin.post("/v2/repository/models/diabetes/pin", json={"version": "1"})
        (repo / "diabetes" / ".staging-6").mkdir()
        (repo / "diabetes" / ".staging-6" / "model.onnx").write_bytes(b"broken")
        (repo / "diabetes" / ".staging-6").rename(repo / "diabetes" / "6")
        refused = admin.post("/v2/repository/models/diabetes/pin", json={"version": "6"})
        assert refused.status_code == 400 and "cannot be pinned" in refused.json()["error"]
        assert status()["pinned"] == "1" and status()["default"] == "1"  # the earlier pin stands
        shutil.rmtree(repo / "diabetes" / "6")
        admin.post("/v2/repository/models/diabetes/unpin")
        metrics = httpx.get(f"{server.url}/metrics").text
    assert load.failures == []
    served = {version for _, version, _ in load.answers}
    assert served == {"1", "2"}  # never a broken version
    for version in ("3", "4", "5"):
        assert f'turnout_model_load_failures_total{{model="diabetes",version="{version}"}} 1.0' in metrics


def test_a_pin_survives_a_restart(repo: Path, log_dir: Path) -> None:
    shutil.copytree(repo / "diabetes" / "1", repo / "diabetes" / "2")
    state = log_dir / "state"
    with ServerProcess(repo, log_dir=log_dir, state_dir=state) as server, server.admin_client() as admin:
        assert admin.post("/v2/repository/models/diabetes/pin", json={"version": 1}).json()["default"] == "1"
    with ServerProcess(repo, log_dir=log_dir, state_dir=state) as server:
        answer = httpx.post(
            f"{server.url}/v2/models/diabetes/infer",
            json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": ROWS[0].tolist()}]},
        )
        assert answer.json()["model_version"] == "1"  # pinned, though the policy (latest = 1) picks 2


def test_a_removed_model_directory_is_unloaded(repo: Path, log_dir: Path) -> None:
    server = ServerProcess(repo, "--model-control", "poll", "--poll-interval", "0.2", log_dir=log_dir)
    with server, httpx.Client(base_url=server.url) as client:
        assert client.get("/v2/models/diabetes/ready").status_code == 200
        shutil.rmtree(repo / "diabetes")
        wait_until(lambda: client.get("/v2/models/diabetes/ready").status_code == 503, "diabetes unloaded")
        assert client.get("/v2/models/breast_cancer/ready").status_code == 200


def infer_body(model: str, row: int = 0) -> dict[str, Any]:
    features = {"diabetes": 10, "breast_cancer": 30, "wine": 13}[model]
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, features], "data": [0.1] * features}]}


def counter(metrics: str, name: str, model: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name) and f'model="{model}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_three_models_in_use_under_a_budget_of_two_all_answer(repo: Path, log_dir: Path) -> None:
    server = ServerProcess(repo, "--max-loaded-models", "2", log_dir=log_dir)
    failures: list[str] = []
    answered: Counter[str] = Counter()
    lock = threading.Lock()

    def client(index: int) -> None:
        models = ("diabetes", "breast_cancer", "wine")
        with httpx.Client(base_url=server.url, timeout=60.0) as http:
            for i in range(60):
                model = models[(i + index) % 3]
                response = http.post(f"/v2/models/{model}/infer", json=infer_body(model))
                with lock:
                    if response.status_code == 200:
                        answered[model] += 1
                    else:
                        failures.append(f"{model}: {response.status_code} {response.text[:200]}")

    with server:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        metrics = httpx.get(f"{server.url}/metrics").text
        loaded = [
            line for line in metrics.splitlines() if line.startswith("turnout_model_ready{") and line.endswith(" 1.0")
        ]
    assert failures == []
    assert answered == {"diabetes": 60, "breast_cancer": 60, "wine": 60}
    cold = sum(counter(metrics, "turnout_cold_start_seconds_count", m) for m in ("diabetes", "breast_cancer", "wine"))
    evicted = sum(counter(metrics, "turnout_model_evictions_total", m) for m in ("diabetes", "breast_cancer", "wine"))
    assert cold >= 1 and evicted >= 1  # models came and went, and requests waited for them
    assert len({line.split('model="')[1].split('"')[0] for line in loaded}) <= 2  # the budget holds


def test_lazy_load_and_idle_unload(repo: Path, log_dir: Path) -> None:
    server = ServerProcess(repo, "--lazy-load", "--idle-unload", "1", log_dir=log_dir)
    with server, httpx.Client(base_url=server.url, timeout=60.0) as client, server.admin_client() as admin:
        index = {e["name"]: e for e in admin.post("/v2/repository/index").json() if e["version"] == ""}
        assert (
            index["diabetes"]["state"] == "UNAVAILABLE" and "loads on the next request" in index["diabetes"]["reason"]
        )
        assert client.get("/v2/models/diabetes/ready").status_code == 200  # it would serve: on demand
        assert client.post("/v2/models/diabetes/infer", json=infer_body("diabetes")).status_code == 200
        assert counter(client.get("/metrics").text, "turnout_cold_start_seconds_count", "diabetes") == 1
        assert client.get("/v2/models/diabetes").json()["name"] == "diabetes"  # metadata while loaded
        wait_until(
            lambda: any(
                e["name"] == "diabetes" and e["state"] == "UNAVAILABLE"
                for e in admin.post("/v2/repository/index").json()
            ),
            "diabetes unloaded when idle",
        )
        assert client.post("/v2/models/diabetes/infer", json=infer_body("diabetes")).status_code == 200
        assert counter(client.get("/metrics").text, "turnout_cold_start_seconds_count", "diabetes") == 2
        assert counter(client.get("/metrics").text, "turnout_model_evictions_total", "diabetes") == 1


def test_a_request_during_the_first_load_waits_for_it(repo: Path, log_dir: Path) -> None:
    # a model that takes a while to load: thousands of nodes to optimise, then a warm-up
    shutil.copytree(repo / "diabetes", repo / "heavy")
    write_model(repo / "heavy" / "1" / "model.onnx", slower(repo / "diabetes" / "1" / "model.onnx", "input",
                                                           "prediction", products=3000))  # fmt: skip
    server = ServerProcess(repo, log_dir=log_dir).start(wait_ready=False)
    try:
        with httpx.Client(base_url=server.url, timeout=60.0) as client:
            assert client.get("/v2/health/ready").status_code == 503  # still loading...
            answer = client.post("/v2/models/heavy/infer", json=infer_body("diabetes"))
            assert answer.status_code == 200, answer.text  # ...and the request waited for it
    finally:
        server.stop()


def test_after_a_restart_a_new_version_with_another_signature_is_still_refused(repo: Path, log_dir: Path) -> None:
    state = log_dir / "state"
    with ServerProcess(repo, log_dir=log_dir, state_dir=state):
        pass  # version 1 served: its signature is what clients rely on
    shutil.copytree(repo / "breast_cancer" / "1", repo / "diabetes" / "2")  # another signature, while down
    with ServerProcess(repo, log_dir=log_dir, state_dir=state) as server, server.admin_client() as admin:
        status = admin.get("/v2/repository/models/diabetes/versions").json()
        answer = httpx.post(f"{server.url}/v2/models/diabetes/infer", json=infer_body("diabetes"))
    states = {v["version"]: (v["state"], v["reason"]) for v in status["versions"]}
    assert states["2"][0] == "UNAVAILABLE" and "signature differs from version 1" in states["2"][1]
    assert states["1"][0] == "READY" and "serving instead" in states["1"][1]  # the older one, though unselected
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"


def test_a_budget_of_one_with_three_models_and_many_clients_fails_nothing(repo: Path, log_dir: Path) -> None:
    server = ServerProcess(repo, "--max-loaded-models", "1", "--lazy-load", log_dir=log_dir)
    failures: list[str] = []

    def client(index: int) -> None:
        models = ("diabetes", "breast_cancer", "wine")
        with httpx.Client(base_url=server.url, timeout=60.0) as http:
            for i in range(30):
                model = models[(i + index) % 3]
                response = http.post(f"/v2/models/{model}/infer", json=infer_body(model))
                if response.status_code != 200:
                    failures.append(f"{model}: {response.status_code} {response.text[:200]}")

    with server:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
    assert failures == []


def test_a_pin_never_passes_through_a_third_version(repo: Path, log_dir: Path) -> None:
    """Versions 1-3, the policy serves 3, an operator pinned 2; pinning 1, slow to
    load, answers stay with 2 until 1 is live, never 3 (issue 16: one answer in
    411 came from the policy's version while the pin's was still loading)."""
    for version in (2, 3):
        shutil.copytree(repo / "diabetes" / "1", repo / "diabetes" / str(version))
    original = repo / "diabetes" / "1" / "model.onnx"
    write_model(original, slower(original, "input", "prediction", products=3000))  # seconds to load
    with ServerProcess(repo, log_dir=log_dir) as server, server.admin_client() as admin:
        assert admin.post("/v2/repository/models/diabetes/pin", json={"version": 2}).json()["default"] == "2"
        with diabetes_load(server.url) as load:
            wait_until(lambda: len(load.answers) > 20, "answers from version 2")
            answer = admin.post("/v2/repository/models/diabetes/pin", json={"version": 1}, timeout=60)
            assert answer.json()["default"] == "1"
            wait_until(lambda: any(version == "1" for _, version, _ in load.answers[-5:]), "answers from version 1")
        assert load.failures == []
        served = Counter(version for _, version, _ in load.answers)
        assert set(served) == {"1", "2"}, served
