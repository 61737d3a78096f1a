"""Loading, reloading, unloading and shutting down while clients keep calling:
readiness tells the truth, and no accepted request is lost."""

from __future__ import annotations

import contextlib
import queue
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.integration.test_cli import turnout
from tests.onnx_models import slow, write_model
from tests.support import ServerProcess

DIABETES_ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": [0.01] * 10}]}


@pytest.fixture
def strict_server(repo: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    """Strict readiness (the default): ready only while every model that should serve does."""
    with ServerProcess(repo, log_dir=tmp_path) as process:
        yield process


def test_odd_directory_names_are_not_versions(repo: Path, tmp_path: Path) -> None:
    for odd in ("²", "01", "abc", "0"):
        (repo / "breast_cancer" / odd).mkdir()
    (repo / "not a model name").mkdir()
    assert turnout("models", "validate", str(repo)).returncode == 1  # only the badly named model is a problem
    with ServerProcess(repo, "--no-strict-readiness", log_dir=tmp_path) as server:
        versions = httpx.get(f"{server.url}/v2/models/breast_cancer").json()["versions"]
        assert versions == ["1", "2"]
        index = httpx.post(f"{server.url}/v2/repository/index").json()
        bad = next(e for e in index if e["name"] == "not a model name")
        assert bad["state"] == "UNAVAILABLE" and "not a valid model name" in bad["reason"]


def test_unloading_keeps_the_server_ready(strict_server: ServerProcess) -> None:
    with httpx.Client(base_url=strict_server.url) as client, strict_server.admin_client() as admin:
        assert admin.post("/v2/repository/models/diabetes/unload").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200
        assert client.post("/v2/models/diabetes/infer", json=DIABETES_ROW).status_code == 503
        entry = next(e for e in client.post("/v2/repository/index").json() if e["name"] == "diabetes")
        assert entry["state"] == "UNAVAILABLE" and entry["reason"] == "unloaded"


def test_bad_names_on_load_leave_no_trace(strict_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(strict_server.admin_address)
    try:
        for name in ("", "..", "a" * 5000, "../breast_cancer"):
            with pytest.raises(InferenceServerException) as caught:
                client.load_model(name, headers=strict_server.admin_headers)
            assert caught.value.status() == "StatusCode.NOT_FOUND"
        assert client.is_server_ready()
        index = client.get_model_repository_index(headers=strict_server.admin_headers)
        assert {m.name for m in index.models} == {
            "breast_cancer", "cancer_risk", "cancer_scaler", "cancer_screening", "diabetes", "wine"
        }  # fmt: skip
    finally:
        client.close()


def test_readiness_holds_through_reloads(strict_server: ServerProcess) -> None:
    seen: set[int] = set()
    stop = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=strict_server.url) as client:
            while not stop.is_set():
                seen.add(client.get("/v2/health/ready").status_code)
                seen.add(client.post("/v2/models/breast_cancer/infer", json=_cancer_row()).status_code)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with strict_server.admin_client() as admin:
            for _ in range(10):
                assert admin.post("/v2/repository/models/breast_cancer/load").status_code == 200
    finally:
        stop.set()
        watcher.join()
    assert seen == {200}


def _cancer_row() -> dict[str, object]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": [1.0] * 30}]}


def test_reload_while_a_body_is_still_arriving(strict_server: ServerProcess) -> None:
    body = orjson.dumps(DIABETES_ROW)
    with socket.create_connection(("127.0.0.1", strict_server.http_port)) as sock:
        sock.sendall(
            b"POST /v2/models/diabetes/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        with strict_server.admin_client() as admin:
            assert admin.post("/v2/repository/models/diabetes/load").status_code == 200
        sock.sendall(body[10:])
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 200"), reply


def test_preferred_sizes_beyond_the_inferred_batch_size(repo: Path, tmp_path: Path) -> None:
    (repo / "diabetes" / "model.toml").write_text("[batching]\npreferred_batch_sizes = [128]\n")
    with ServerProcess(repo, "--no-strict-readiness", log_dir=tmp_path) as server:
        index = httpx.post(f"{server.url}/v2/repository/index").json()
        entry = next(e for e in index if e["name"] == "diabetes")
        assert entry["state"] == "UNAVAILABLE"
        assert "preferred_batch_sizes [128] exceed the max_batch_size 64" in entry["reason"]


def test_shutdown_answers_queued_requests_without_waiting_out_the_delay(repo: Path, tmp_path: Path) -> None:
    (repo / "diabetes" / "model.toml").write_text("[batching]\nmax_queue_delay_ms = 20000\n")
    server = ServerProcess(repo, log_dir=tmp_path).start()
    try:
        result: dict[str, object] = {}

        def call() -> None:
            started = time.monotonic()
            response = httpx.post(f"{server.url}/v2/models/diabetes/infer", json=DIABETES_ROW, timeout=60)
            result["status"], result["seconds"] = response.status_code, time.monotonic() - started

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 30
        while 'turnout_queue_depth{model="diabetes",version="1"} 1.0' not in httpx.get(f"{server.url}/metrics").text:
            assert time.monotonic() < deadline
            time.sleep(0.01)  # the child's metrics are the only signal that the request is queued
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        caller.join(30)
        assert result["status"] == 200
        assert float(str(result["seconds"])) < 10  # not the 20 s batching delay
        assert server.process.wait(30) == 0
    finally:
        server.stop()


def test_grpc_unknown_rpc_is_unimplemented(strict_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(strict_server.grpc_address)
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.get_model_config("diabetes")
        assert caught.value.status() == str(grpc.StatusCode.UNIMPLEMENTED)
    finally:
        client.close()


def test_a_load_or_unload_whose_caller_gives_up_still_completes(repo: Path, tmp_path: Path) -> None:
    """A gRPC deadline shorter than the load must not leave the model half loaded."""
    for version in range(1, 7):
        write_model(repo / "many" / str(version) / "model.onnx", slow())
    (repo / "many" / "model.toml").write_text("[version_policy]\nall = true\n")
    with ServerProcess(repo, "--no-strict-readiness", log_dir=tmp_path) as server:
        client = grpcclient.InferenceServerClient(server.admin_address)
        key = server.admin_headers
        try:
            client.unload_model("many", headers=key)
            with pytest.raises(InferenceServerException) as caught:
                client.load_model("many", headers=key, client_timeout=0.05)
            assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
            deadline = time.monotonic() + 60
            index = client.get_model_repository_index
            while {m.state for m in index(headers=key).models if m.name == "many"} != {"READY"}:
                assert time.monotonic() < deadline, index(headers=key)
                time.sleep(0.05)  # the load goes on in the server; nothing to wait on from here
            assert len(httpx.get(f"{server.url}/v2/models/many").json()["versions"]) == 6

            with contextlib.suppress(InferenceServerException):  # the deadline may pass before it is sent
                client.unload_model("many", headers=key, client_timeout=0.001)
            while {m.state for m in index(headers=key).models if m.name == "many"} != {"UNAVAILABLE"}:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            states = {m.reason for m in index(headers=key).models if m.name == "many"}
            assert states == {"unloaded"}
            assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
        finally:
            client.close()


def test_grpc_streaming_infer_is_refused_without_waiting_for_the_stream_to_end(
    strict_server: ServerProcess,
) -> None:
    """ModelStreamInfer is not served: the refusal must come while the client keeps its stream open."""
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    client = grpcclient.InferenceServerClient(strict_server.grpc_address)
    try:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        tensor = grpcclient.InferInput("input", [1, 10], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 10), dtype=np.float32))
        # The refusal may come before this call (the stream opens with start_stream): then the
        # client says the stream is over, and the reason is in the callback either way.
        with contextlib.suppress(InferenceServerException):
            client.async_stream_infer("diabetes", [tensor])
        result, error = answers.get(timeout=10)
        assert result is None
        assert isinstance(error, InferenceServerException)
        assert error.status() == str(grpc.StatusCode.UNIMPLEMENTED)
        assert "ModelStreamInfer" in str(error.message())
    finally:
        client.stop_stream()
        client.close()
