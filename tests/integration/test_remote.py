"""A gateway: turnout serving a model whose versions are remote endpoint sets
(``remote.toml``), in front of three turnout replicas on loopback.

Each answer through the gateway is the replicas' own; a replica killed with
SIGKILL under steady load costs the clients nothing (its attempts are
retried on another and it is ejected); the gateway's metrics say which
replica answered what."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.integration.reference import diabetes_rows, run
from tests.support import ServerProcess, SteadyLoad


def replica_repo(root: Path, example_repo: Path) -> Path:
    repo = root / "replica-models"
    shutil.copytree(example_repo / "diabetes", repo / "diabetes")
    return repo


def gateway_repo(root: Path, replicas: list[ServerProcess], extra: str = "") -> Path:
    repo = root / "gateway-models"
    version = repo / "diabetes" / "1"
    version.mkdir(parents=True)
    (repo / "diabetes" / "model.toml").write_text('runtime = "remote"\n')
    addresses = ", ".join(f'"127.0.0.1:{r.http_port}"' for r in replicas)
    (version / "remote.toml").write_text(f"replicas = [{addresses}]\n{extra}")
    return repo


@pytest.fixture
def replicas(tmp_path: Path, example_repo: Path) -> Iterator[list[ServerProcess]]:
    repo = replica_repo(tmp_path, example_repo)
    with ExitStack() as stack:
        started = []
        for index in range(3):
            (logs := tmp_path / f"replica{index}").mkdir()
            started.append(stack.enter_context(ServerProcess(repo, log_dir=logs)))
        yield started


def infer(url: str, rows: np.ndarray, client: httpx.Client | None = None) -> httpx.Response:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}
    return (client or httpx).post(f"{url}/v2/models/diabetes/infer", json=body, timeout=30)


def test_the_gateway_answers_as_the_replicas_do(
    replicas: list[ServerProcess], tmp_path: Path, example_repo: Path
) -> None:
    with ServerProcess(gateway_repo(tmp_path, replicas), log_dir=tmp_path) as gateway:
        rows = diabetes_rows(5)
        expected = run(example_repo / "diabetes" / "1" / "model.onnx", {"input": rows})["prediction"]
        metadata = httpx.get(f"{gateway.url}/v2/models/diabetes").json()
        assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 10]}]
        with httpx.Client() as client:
            for _ in range(12):
                answer = infer(gateway.url, rows, client)
                assert answer.status_code == 200, answer.text
                got = np.array(answer.json()["outputs"][0]["data"], dtype=np.float32)
                np.testing.assert_allclose(got, expected.ravel(), rtol=1e-6)
        # every replica took some: the balance spreads them
        metrics = httpx.get(f"{gateway.url}/metrics").text
        for replica in replicas:
            assert f'replica="127.0.0.1:{replica.http_port}"' in metrics
        bad = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
        refused = httpx.post(f"{gateway.url}/v2/models/diabetes/infer", json=bad)
        assert refused.status_code == 400 and "shape" in refused.text


def test_a_replica_killed_under_load_costs_the_clients_nothing(replicas: list[ServerProcess], tmp_path: Path) -> None:
    with ServerProcess(gateway_repo(tmp_path, replicas), log_dir=tmp_path) as gateway:
        rows = diabetes_rows(2)
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 10], "data": rows.ravel().tolist()}]}
        with SteadyLoad(gateway.url, "/v2/models/diabetes/infer", lambda _: body, lambda _: "ok", clients=8) as load:
            load.wait_for(300)
            victim = replicas[0]
            assert victim.process is not None
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait()
            killed = time.monotonic()
            load.after(killed, count=1500)
        assert not load.failures, load.failures[:5]
        answered_after = sum(load.labels_since(killed).values())
        assert answered_after >= 1500
        metrics = httpx.get(f"{gateway.url}/metrics").text
        victim_address = f"127.0.0.1:{victim.http_port}"
        assert f'turnout_remote_attempts_total{{model="diabetes",outcome="failed",replica="{victim_address}"' in metrics


def test_a_rolling_restart_of_every_replica_under_load_costs_the_clients_nothing(
    replicas: list[ServerProcess], tmp_path: Path
) -> None:
    """Each replica in turn: SIGTERM (it drains: answers what it holds, takes
    nothing new), exits, starts again on its ports; the load goes on throughout."""
    with ServerProcess(gateway_repo(tmp_path, replicas), log_dir=tmp_path) as gateway:
        rows = diabetes_rows(2)
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 10], "data": rows.ravel().tolist()}]}
        with SteadyLoad(gateway.url, "/v2/models/diabetes/infer", lambda _: body, lambda _: "ok", clients=8) as load:
            load.wait_for(200)
            for replica in replicas:
                assert replica.stop() == 0
                replica.start()
                load.wait_for(200)  # the restarted one is probed back in meanwhile
        assert not load.failures, load.failures[:5]
        metrics = httpx.get(f"{gateway.url}/metrics").text
        for replica in replicas:  # each answered again after its restart
            assert f'outcome="answered",replica="127.0.0.1:{replica.http_port}"' in metrics
