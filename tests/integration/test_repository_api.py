"""Triton's model-repository extension: index, load, unload, over REST and gRPC,
on a server of its own (these tests change what is loaded)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.reference import cancer_rows, run
from tests.support import ServerProcess


@pytest.fixture
def server(repo: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(repo, "--no-strict-readiness", log_dir=tmp_path) as process:
        yield process


def infer_label(client: httpx.Client, version: str | None = None) -> httpx.Response:
    rows = cancer_rows(3)
    path = "/v2/models/breast_cancer" + (f"/versions/{version}" if version else "") + "/infer"
    return client.post(
        path, json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 30], "data": rows.ravel().tolist()}]}
    )


def test_index_unload_load_over_rest(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client, server.admin_client() as admin:
        index = client.post("/v2/repository/index").json()
        assert {(e["name"], e["version"], e["state"]) for e in index} == {
            ("breast_cancer", "1", "READY"),
            ("breast_cancer", "2", "READY"),
            ("cancer_risk", "1", "READY"),
            ("cancer_risk", "2", "READY"),
            ("cancer_scaler", "1", "READY"),
            ("cancer_screening", "1", "READY"),
            ("cancer_screening", "2", "READY"),
            ("diabetes", "1", "READY"),
            ("wine", "1", "READY"),
            ("wine", "2", "READY"),
        }
        assert admin.post("/v2/repository/models/breast_cancer/unload").status_code == 200
        assert infer_label(client).status_code == 503
        assert client.get("/v2/models/breast_cancer/ready").status_code == 503
        ready = client.post("/v2/repository/index", json={"ready": True}).json()
        assert [e["name"] for e in ready] == ["cancer_risk", "cancer_risk", "cancer_scaler", "cancer_screening",
                                              "cancer_screening", "diabetes", "wine", "wine"]  # fmt: skip
        assert admin.post("/v2/repository/models/breast_cancer/load").status_code == 200
        assert infer_label(client).status_code == 200
        assert admin.post("/v2/repository/models/ghost/load").status_code == 404
        assert admin.post("/v2/repository/models/ghost/unload").status_code == 404


def test_reload_picks_up_a_new_version_and_config(server: ServerProcess, repo: Path) -> None:
    (repo / "diabetes" / "2").mkdir()
    shutil.copy(repo / "diabetes" / "1" / "model.onnx", repo / "diabetes" / "2" / "model.onnx")
    with httpx.Client(base_url=server.url, timeout=30) as client, server.admin_client() as admin:
        assert client.get("/v2/models/diabetes").json()["versions"] == ["1"]
        assert admin.post("/v2/repository/models/diabetes/load").status_code == 200
        assert client.get("/v2/models/diabetes").json()["versions"] == ["2"]  # latest = 1


def test_broken_config_on_reload_keeps_the_old_version_serving(server: ServerProcess, repo: Path) -> None:
    config = repo / "breast_cancer" / "model.toml"
    config.write_text(config.read_text().replace("max_batch_size = 64", "max_batch_size = -3"))
    with httpx.Client(base_url=server.url, timeout=30) as client, server.admin_client() as admin:
        response = admin.post("/v2/repository/models/breast_cancer/load")
        assert response.status_code == 400
        error = response.json()["error"]
        assert "model.toml" in error and "max_batch_size" in error
        assert infer_label(client).status_code == 200


def test_broken_artifact_on_reload_keeps_the_old_version_serving(
    server: ServerProcess, repo: Path, test_repo: Path
) -> None:
    (repo / "breast_cancer" / "2" / "model.onnx").write_bytes(b"garbage")
    with httpx.Client(base_url=server.url, timeout=30) as client, server.admin_client() as admin:
        failed = admin.post("/v2/repository/models/breast_cancer/load")
        assert failed.status_code == 400  # as Triton answers a failed load
        assert "version 2: reload failed, still serving the earlier load" in failed.json()["error"]
        response = infer_label(client, "2")
        assert response.status_code == 200
        expected = run(test_repo / "breast_cancer" / "2" / "model.onnx", {"input": cancer_rows(3)})
        label = next(o for o in response.json()["outputs"] if o["name"] == "label")
        np.testing.assert_array_equal(label["data"], expected["label"])
        index = client.post("/v2/repository/index").json()
        entry = next(e for e in index if e["name"] == "breast_cancer" and e["version"] == "2")
        assert entry["state"] == "READY"
        assert "reload failed" in entry["reason"]


def test_repository_calls_from_tritonclient(server: ServerProcess) -> None:
    """Both clients on the admin plane's one port (REST and gRPC share it), with the admin key."""
    http = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    grpc = grpcclient.InferenceServerClient(server.grpc_address)
    admin_http = httpclient.InferenceServerClient(server.admin_address)
    admin_grpc = grpcclient.InferenceServerClient(server.admin_address)
    key = server.admin_headers
    try:
        assert len(http.get_model_repository_index()) == 10
        assert len(grpc.get_model_repository_index().models) == 10
        assert len(admin_grpc.get_model_repository_index(headers=key).models) == 10
        admin_grpc.unload_model("diabetes", headers=key)
        assert not http.is_model_ready("diabetes")
        assert not grpc.is_model_ready("diabetes")
        admin_http.load_model("diabetes", headers=key)
        assert grpc.is_model_ready("diabetes")
        admin_http.unload_model("diabetes", headers=key)
        admin_grpc.load_model("diabetes", headers=key)
        assert http.is_model_ready("diabetes")
        with pytest.raises(InferenceServerException) as caught:
            admin_grpc.load_model("ghost", headers=key)
        assert caught.value.status() == "StatusCode.NOT_FOUND"
        # the public ports refuse, and say where to go
        with pytest.raises(InferenceServerException) as refused:
            grpc.unload_model("diabetes", headers=key)
        assert refused.value.status() == "StatusCode.PERMISSION_DENIED"
        assert f"admin plane (http://127.0.0.1:{server.admin_port})" in refused.value.message()
        with pytest.raises(InferenceServerException, match="admin plane"):
            http.unload_model("diabetes", headers=key)
        assert http.is_model_ready("diabetes")
    finally:
        for client in (http, grpc, admin_http, admin_grpc):
            client.close()


def test_a_load_where_every_version_fails_is_an_error(server: ServerProcess, repo: Path) -> None:
    (repo / "corrupt" / "1").mkdir(parents=True)
    (repo / "corrupt" / "1" / "model.onnx").write_bytes(b"garbage")
    with server.admin_client() as admin:
        response = admin.post("/v2/repository/models/corrupt/load")
        assert response.status_code == 400
        assert "model 'corrupt' did not fully load: version 1:" in response.json()["error"]
        assert "ONNX Runtime cannot load it" in response.json()["error"]
    grpc = grpcclient.InferenceServerClient(server.admin_address)
    try:
        with pytest.raises(InferenceServerException) as caught:
            grpc.load_model("corrupt", headers=server.admin_headers)
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    finally:
        grpc.close()
