"""The ``turnout`` command as a user runs it: version, validate, start-up
errors, readiness, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.slow_client import post_slow
from tests.onnx_models import slow, write_model
from tests.support import ServerProcess, free_port, wait_until

TURNOUT = [sys.executable, "-m", "turnout"]


def turnout(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TURNOUT, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_version() -> None:
    from turnout import __version__

    result = turnout("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"turnout {__version__}"


def test_validate_examples(example_repo: Path) -> None:
    result = turnout("models", "validate", str(example_repo))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "breast_cancer version 1: OK" in result.stdout
    assert "breast_cancer version 2: OK" in result.stdout
    assert "input  input FP32 [-1, 30]" in result.stdout
    assert "output probabilities FP32 [-1, 2]" in result.stdout
    assert "diabetes version 1: OK" in result.stdout
    assert "cancer_screening version 2: OK (pipeline, max_batch_size 64)" in result.stdout  # checked offline
    assert "input  patient_id BYTES [-1]" in result.stdout
    assert "0 problem(s)" in result.stdout


def test_validate_checks_a_pipeline_against_the_models_it_calls(repo: Path) -> None:
    pipeline = repo / "cancer_screening" / "2" / "pipeline.toml"
    pipeline.write_text(pipeline.read_text().replace('model = "cancer_scaler"', 'model = "cancer_scaler_gone"'))
    result = turnout("models", "validate", str(repo))
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if line.startswith("cancer_screening version 2"))
    assert "pipeline.toml: step 'scale': unknown model 'cancer_scaler_gone'" in line
    assert "cancer_screening version 1: OK" in result.stdout


def test_validate_reports_each_problem_precisely(test_repo: Path) -> None:
    result = turnout("models", "validate", str(test_repo))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    bad_config = next(line for line in lines if line.startswith("bad_config"))
    assert "model.toml: max_batch_sise: unknown field" in bad_config
    broken = next(line for line in lines if line.startswith("broken_file"))
    assert "broken_file/1/model.onnx: ONNX Runtime cannot load it" in broken
    assert "breast_cancer version 2: OK" in result.stdout  # the others are still checked
    assert "2 problem(s)" in result.stdout


def test_serve_without_repository(tmp_path: Path) -> None:
    result = turnout("serve", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


@pytest.mark.parametrize("which", ["--http-port", "--grpc-port", "--admin-port"])
def test_serve_on_a_port_in_use(example_repo: Path, which: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {name: str(free_port()) for name in ("--http-port", "--grpc-port", "--admin-port")}
        ports[which] = str(port)
        result = turnout(
            "serve", str(example_repo), *(x for pair in ports.items() for x in pair), "--no-inference-auth"
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "in use" in result.stderr


def test_strict_readiness_waits_for_every_model(test_repo: Path, tmp_path: Path) -> None:
    with (
        ServerProcess(test_repo, log_dir=tmp_path).start(wait_ready=False) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        deadline = time.monotonic() + 30
        while "models loaded" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)  # the child's log is the only signal that loading finished
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 503  # broken_file and bad_config
        assert client.get("/v2/models/breast_cancer/ready").status_code == 200


def test_sigterm_finishes_requests_in_flight_then_exits_zero(tmp_path: Path) -> None:
    # ~0.3 s a request, so the signal surely lands while both are in the server
    write_model(tmp_path / "models" / "slow" / "1" / "model.onnx", slow(repeats=1000))
    (tmp_path / "models" / "slow" / "model.toml").write_text("max_batch_size = 1\n")
    server = ServerProcess(tmp_path / "models", log_dir=tmp_path).start()
    try:
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(post_slow, server.url) for _ in range(2)]
            # both in the server: one running, one queued behind it (a queue depth of 1 alone can be the
            # first request before its batch starts, while the second has not connected yet)
            _wait_for_metric(server.url, 'turnout_inflight_requests{model="slow",protocol="rest"} 2.0')
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            responses = [f.result() for f in futures]
        assert [r.status_code for r in responses] == [200, 200]
        assert server.process.wait(30) == 0
        assert "stopped" in server.log()
    finally:
        server.stop()


def _wait_for_metric(url: str, line: str, timeout: float = 30) -> None:
    wait_until(lambda: line in httpx.get(f"{url}/metrics").text, f"the metric {line!r}", timeout, every=0.005)


@pytest.mark.parametrize("port", ["70000", "0", "http"])
def test_serve_with_a_bad_port_number(example_repo: Path, port: str) -> None:
    result = turnout("serve", str(example_repo), "--http-port", port)
    assert result.returncode == 2
    assert "is not a port number" in result.stderr


def test_serve_from_a_configuration_file_and_the_environment(example_repo: Path, tmp_path: Path) -> None:
    http, grpc, admin = free_port(), free_port(), free_port()
    (tmp_path / "turnout.toml").write_text(
        f'repository = "{example_repo}"\n[http]\nport = {http}\n[grpc]\nport = 1\n'
        f"[admin]\nport = {admin}\n[security]\ninference_auth = false\n"
        '[observability]\nlog_format = "json"\n'
    )
    env = {**os.environ, "TURNOUT_GRPC_PORT": str(grpc)}  # the environment beats the file
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen([*TURNOUT, "serve", "--config", str(tmp_path / "turnout.toml")], stdout=log,
                               stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=5) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)  # polling a child's port: there is no event to wait on
            assert client.get("/v2/models/diabetes").status_code == 200  # no credential: inference_auth = false
        with socket.create_connection(("127.0.0.1", grpc), timeout=5), socket.create_connection(("127.0.0.1", admin)):
            pass
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        log.close()
    first = (tmp_path / "serve.log").read_text().splitlines()[0]
    assert first.startswith("{")  # the file's log_format
