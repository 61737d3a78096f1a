"""deploy/haproxy/replicas.cfg, as shipped, in front of three turnout
replicas: a rolling restart of all of them under load (SIGTERM, drain,
start) costs the clients nothing, so turnout replicas work behind someone
else's load balancer too. A real HAProxy (Debian's, installed by
scripts/system-deps.sh)."""

from __future__ import annotations

import shutil
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import pytest

from tests.integration.reference import diabetes_rows
from tests.integration.test_haproxy_door import haproxy
from tests.support import ServerProcess, SteadyLoad

pytestmark = [pytest.mark.programs("haproxy")]
CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "replicas.cfg"


def balancer(replicas: list[ServerProcess], log: Path) -> AbstractContextManager[str]:
    settings = {f"TURNOUT_REPLICA_{i + 1}": f"127.0.0.1:{r.http_port}" for i, r in enumerate(replicas)}
    return haproxy(CONFIG, settings, log)


def test_a_rolling_restart_behind_haproxy_costs_the_clients_nothing(tmp_path: Path, example_repo: Path) -> None:
    repo = tmp_path / "models"
    shutil.copytree(example_repo / "diabetes", repo / "diabetes")
    with ExitStack() as stack:
        replicas = []
        for index in range(3):
            (logs := tmp_path / f"replica{index}").mkdir()
            replicas.append(stack.enter_context(ServerProcess(repo, log_dir=logs)))
        url = stack.enter_context(balancer(replicas, tmp_path / "haproxy.log"))
        rows = diabetes_rows(2)
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 10], "data": rows.ravel().tolist()}]}
        label = lambda answer: answer.json()["model_version"]  # noqa: E731
        with SteadyLoad(url, "/v2/models/diabetes/infer", lambda _: body, label, clients=8) as load:
            load.wait_for(200)
            for replica in replicas:
                assert replica.stop() == 0
                replica.start()
                load.wait_for(200)
        assert not load.failures, load.failures[:5]
        assert sum(load.labels_since(0).values()) >= 800
