"""Runtimes from outside turnout serve requests with no edit to turnout's
code: one installed as a package with a ``turnout.runtimes`` entry point,
one named ``module:Class`` in ``model.toml`` (trusted models only). Both
come from ``runtime_pack/``, which uses only the public runtime protocol."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.support import ServerProcess

PACK = Path(__file__).parent / "runtime_pack" / "scaling_runtime.py"
WEIGHTS = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
SCALED = """\
[runtime]
name = "scaling"
[runtime.options]
scale = 2.0
[instances]
count = 2
[[inputs]]
name = "x"
datatype = "FP32"
shape = [-1, 3]
[[outputs]]
name = "y"
datatype = "FP32"
shape = [-1, 1]
[[outputs]]
name = "instance"
datatype = "INT32"
shape = [-1, 1]
"""


def install(site: Path) -> None:
    """The pack as pip would leave it: the module and its distribution's metadata, entry point included."""
    site.mkdir()
    shutil.copy(PACK, site / "scaling_runtime.py")
    info = site / "turnout_test_runtimes-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: turnout-test-runtimes\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[turnout.runtimes]\nscaling = scaling_runtime:ScalingRuntime\n")


def repository(root: Path) -> Path:
    (root / "scaled" / "1").mkdir(parents=True)
    np.save(root / "scaled" / "1" / "weights.npy", WEIGHTS)
    (root / "scaled" / "model.toml").write_text(SCALED)
    (root / "shouter" / "1").mkdir(parents=True)
    (root / "shouter" / "model.toml").write_text('runtime = "scaling_runtime:ShoutingRuntime"\ntrusted = true\n')
    return root


@pytest.fixture(scope="module")
def plugged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("plugins")
    install(base / "site")
    models = repository(base / "models")
    env = {"PYTHONPATH": str(base / "site")}
    with ServerProcess(models, "--allow-trusted-models", log_dir=base, env=env) as server:
        yield server


def test_an_entry_point_runtime_serves_with_its_options_parameters_and_instances(plugged: ServerProcess) -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [4, 3], "data": x.ravel().tolist()}],
        "parameters": {"offset": 0.5},
    }
    with httpx.Client(base_url=plugged.url, timeout=30) as client:
        metadata = client.get("/v2/models/scaled").json()
        assert metadata["platform"] == "test_scaling"
        assert [i["name"] for i in metadata["inputs"]] == ["x"]
        seen: set[int] = set()
        for _ in range(20):
            reply = client.post("/v2/models/scaled/infer", json=body)
            assert reply.status_code == 200, reply.text
            outputs = {o["name"]: o for o in reply.json()["outputs"]}
            y = np.array(outputs["y"]["data"], dtype=np.float32).reshape(4, 1)
            np.testing.assert_allclose(y, x @ WEIGHTS * 2.0 + 0.5)
            seen |= set(outputs["instance"]["data"])
        assert seen <= {0, 1}
        no_offset = client.post("/v2/models/scaled/infer", json={"inputs": body["inputs"]}).json()
        y = np.array(no_offset["outputs"][0]["data"], dtype=np.float32).reshape(4, 1)
        np.testing.assert_allclose(y, x @ WEIGHTS * 2.0)


def test_a_class_named_in_model_toml_serves_text_over_rest_and_grpc(plugged: ServerProcess) -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["hello", "zoë"]}]}
    with httpx.Client(base_url=plugged.url, timeout=30) as client:
        reply = client.post("/v2/models/shouter/infer", json=body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["outputs"][0]["data"] == ["HELLO!", "ZOË!"]
    client = grpcclient.InferenceServerClient(plugged.grpc_address)
    text = grpcclient.InferInput("text", [3], "BYTES")
    text.set_data_from_numpy(np.array([b"a", b"bc", "déf".encode()], dtype=object))
    result = client.infer("shouter", [text])
    assert result.as_numpy("shout").tolist() == [b"A!", b"BC!", "DÉF!".encode()]


def test_a_class_path_needs_a_trusted_model_on_a_server_that_allows_it(tmp_path: Path) -> None:
    install(tmp_path / "site")
    models = repository(tmp_path / "models")
    env = {"PYTHONPATH": str(tmp_path / "site")}
    server = ServerProcess(models, "--no-strict-readiness", log_dir=tmp_path, env=env)
    with server, httpx.Client(base_url=server.url, timeout=30) as client:
        index = {e["name"]: e for e in client.post("/v2/repository/index").json()}
        assert index["shouter"]["state"] == "UNAVAILABLE"
        assert "a server run with --allow-trusted-models" in index["shouter"]["reason"]
        assert index["scaled"]["state"] == "READY"  # an installed entry point needs no such consent
