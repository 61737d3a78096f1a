"""The pipelines' Feast backend against a real Feast: its feature server
(``feast serve``, from Feast's own environment, .venv-feast, which `make
feast` builds), its SQLite online store written by the example's
examples/feast/load_patients.py, and the example pipeline
examples/feast/cancer_screening_feast served as the README says, through
REST and tritonclient's gRPC. The expected answers are the steps run by hand
on scikit-learn's rows."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import build_models  # examples/ is on the path (tests/conftest.py)
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.integration.test_pipelines import PATIENTS, expected_screening, screening_body
from tests.support import ServerProcess, free_port, wait_until

pytestmark = [pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[2]
FEAST_PYTHON = ROOT / ".venv-feast" / "bin" / "python"
FEAST = ROOT / ".venv-feast" / "bin" / "feast"
EXAMPLE = ROOT / "examples" / "feast"


class FeastServer:
    """`feast serve` over a repository, on a free port; stopped and started again at will."""

    def __init__(self, repo: Path, log: Path) -> None:
        self.repo, self.log, self.port = repo, log, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FeastServer:
        command = [str(FEAST), "-c", str(self.repo), "serve", "-h", "127.0.0.1", "-p", str(self.port),
                   "--no-access-log"]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._healthy, f"feast serve on port {self.port} (log: {self.log})", 90, every=0.2)
        return self

    def _healthy(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()[-2000:]
        try:
            return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # gunicorn's arbiter stops its worker
            self.process.wait(30)


@pytest.fixture(scope="module")
def feast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeastServer]:
    assert FEAST.exists(), "Feast's environment is missing: `make feast` builds .venv-feast (make test does)"
    repo = tmp_path_factory.mktemp("feast") / "repo"
    subprocess.run([str(FEAST_PYTHON), str(EXAMPLE / "load_patients.py"), str(repo)], check=True, timeout=300)
    server = FeastServer(repo, repo.parent / "feast.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(feast: FeastServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The example repository with the example Feast pipeline copied in, as the README does."""
    root = tmp_path_factory.mktemp("feast-models") / "models"
    build_models.build(root, text=False)
    pipeline = root / "cancer_screening_feast"
    shutil.copytree(EXAMPLE / "cancer_screening_feast", pipeline)
    toml = pipeline / "1" / "pipeline.toml"
    toml.write_text(toml.read_text().replace("http://127.0.0.1:6566", feast.url))
    with ServerProcess(root, "--no-strict-readiness", log_dir=root.parent) as process:
        yield process


def test_features_from_feast_serve_through_rest_and_grpc(server: ServerProcess) -> None:
    labels, probabilities = expected_screening(server_repo(server), PATIENTS, (1.0, 1.0))
    answer = httpx.post(f"{server.url}/v2/models/cancer_screening_feast/infer", json=screening_body(PATIENTS))
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["label"]["data"] == labels.tolist()
    np.testing.assert_allclose(np.array(outputs["probabilities"]["data"]).reshape(-1, 2), probabilities, rtol=1e-5)
    client = grpcclient.InferenceServerClient(server.grpc_address)
    ids = grpcclient.InferInput("patient_id", [len(PATIENTS)], "BYTES")
    ids.set_data_from_numpy(np.array([str(p).encode() for p in PATIENTS], dtype=object))
    result = client.infer("cancer_screening_feast", [ids])
    assert result.as_numpy("label").tolist() == labels.tolist()  # type: ignore[union-attr]
    client.close()


def test_an_unknown_or_malformed_patient_is_a_400_naming_it(server: ServerProcess) -> None:
    url = f"{server.url}/v2/models/cancer_screening_feast/infer"
    unknown = httpx.post(url, json=screening_body([3, 100000]))
    assert unknown.status_code == 400, unknown.text
    assert "step 'features'" in unknown.text and "no features for entity '100000'" in unknown.text
    assert "patient_id '100000' in Feast at http://127.0.0.1" in unknown.text
    malformed = httpx.post(url, json={"inputs": [{"name": "patient_id", "datatype": "BYTES", "shape": [1],
                                                  "data": ["seven"]}]})  # fmt: skip
    assert malformed.status_code == 400, malformed.text
    assert "entity id 'seven' is not an integer" in malformed.text
    assert httpx.post(url, json=screening_body([7])).status_code == 200


def test_feast_down_is_a_503_naming_it_and_served_again_once_back(server: ServerProcess, feast: FeastServer) -> None:
    url = f"{server.url}/v2/models/cancer_screening_feast/infer"
    feast.stop()
    try:
        down = httpx.post(url, json=screening_body([7]))
        assert down.status_code == 503, down.text
        assert "step 'features'" in down.text and f"Feast at {feast.url} cannot be reached" in down.text
        assert httpx.post(f"{server.url}/v2/models/cancer_scaler/infer", json=_scaler_body()).status_code == 200
    finally:
        feast.start()
    began = time.monotonic()
    answer = httpx.post(url, json=screening_body(PATIENTS))
    assert answer.status_code == 200, answer.text
    assert time.monotonic() - began < 5


def server_repo(server: ServerProcess) -> Path:
    return Path(server.command[server.command.index("serve") + 1])


def _scaler_body() -> dict[str, object]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [1.0] * 30}]}
