"""``turnout optimize --canary`` and ``--shadow`` against a running server, as
a user runs them: the new version is written, loaded beside the serving one
(pinned, so ``latest = 1`` keeps it), rolled out or shadowed, and the
report's summary is in the endpoint's event log."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from optimize_data import write as write_data  # examples/ is on the path (tests/conftest.py)

from tests.support import ServerProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.subprocess]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, example_repo: Path) -> Iterator[tuple[ServerProcess, Path, Path]]:
    root = tmp_path_factory.mktemp("live") / "models"
    for name in ("diabetes", "breast_cancer"):
        shutil.copytree(example_repo / name, root / name)
    data = tmp_path_factory.mktemp("data")
    write_data(data)
    with ServerProcess(root, log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server, root, data


def optimize(server: ServerProcess, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "turnout", "optimize", *arguments, "--admin-url", server.admin_url,
               "--key", server.admin_key]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_a_quantized_version_goes_live_through_a_canary(served: tuple[ServerProcess, Path, Path]) -> None:
    server, root, data = served
    done = optimize(server, str(root), "diabetes", "--from", "1", "--int8", "dynamic", "--validation",
                    str(data / "diabetes_test.npz"), "--canary", "--steps", "50:600s,100:600s")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "canary rollout of version 2 started" in done.stdout
    with server.admin_client() as admin:
        status = admin.get("/v2/routing/diabetes").json()
        assert status["rollout"]["candidate"] == "2" and status["rollout"]["baseline"] == "1"
        events = admin.get("/v2/routing/diabetes/events").json()
    notes = [e for e in events if e["kind"] == "note"]
    assert notes and "turnout optimize: version 2 from 1 (int8 dynamic): agreement" in notes[-1]["detail"]
    row = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": [[0.01] * 10]}]}
    answered: set[str] = set()

    def both_answer() -> bool:
        answer = httpx.post(f"{server.url}/v2/models/diabetes/infer", json=row, timeout=10)
        assert answer.status_code == 200, answer.text
        answered.add(answer.json()["model_version"])
        return answered == {"1", "2"}

    wait_until(both_answer, "the baseline and the candidate both answering", timeout=30, every=0.01)


def test_a_fused_version_shadows_the_serving_one(served: tuple[ServerProcess, Path, Path]) -> None:
    server, root, data = served
    done = optimize(server, str(root), "breast_cancer", "--from", "2", "--graph", "extended", "--validation",
                    str(data / "breast_cancer_test.npz"), "--shadow")  # fmt: skip
    assert done.returncode == 0, done.stderr
    with server.admin_client() as admin:
        status = admin.get("/v2/routing/breast_cancer").json()
        assert status["policy"] == {"policy": "shadow", "primary": "2", "shadow": "3", "percent": 100.0}
        row = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [[1.0] * 30]}]}
        for _ in range(20):
            answer = httpx.post(f"{server.url}/v2/models/breast_cancer/infer", json=row, timeout=10)
            assert answer.status_code == 200 and answer.json()["model_version"] == "2"  # the shadow never answers

        def compared() -> dict | None:
            found = [r for r in admin.get("/v2/routing/breast_cancer/shadow").json() if r["shadow"] == "3"]
            return found[0] if found and found[0]["requests"] >= 10 else None

        shadow = wait_until(compared, "the shadow's outputs compared")
    assert shadow["agreement_rate"] == 1.0 and shadow["errors"] == 0, shadow


def test_a_run_that_writes_nothing_leaves_the_servers_pins_as_they_were(
    served: tuple[ServerProcess, Path, Path],
) -> None:
    server, root, data = served
    with server.admin_client() as admin:
        before = admin.get("/v2/repository/models/diabetes/versions").json()["pinned"]
        done = optimize(server, str(root), "diabetes", "--from", "1", "--prune", "0.5", "--validation",
                        str(data / "diabetes_test.npz"), "--canary")  # fmt: skip
        assert done.returncode == 2 and "nothing to prune" in done.stderr
        assert admin.get("/v2/repository/models/diabetes/versions").json()["pinned"] == before


def test_a_bad_admin_key_stops_it_before_anything_is_written(served: tuple[ServerProcess, Path, Path]) -> None:
    server, root, data = served
    versions = sorted(p.name for p in (root / "breast_cancer").iterdir())
    command = [sys.executable, "-m", "turnout", "optimize", str(root), "breast_cancer", "--from", "1", "--fp16",
               "--validation", str(data / "breast_cancer_test.npz"), "--canary", "--admin-url", server.admin_url,
               "--key", "not-a-key"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "401" in done.stderr
    assert sorted(p.name for p in (root / "breast_cancer").iterdir()) == versions
