"""`turnout bench` against a real server: every protocol, closed and open loop,
JSON results and a plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ServerProcess


def bench(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "turnout", "bench",
        "--url", server.url, "--grpc-url", server.grpc_address,
        "--duration", "0.5", "--warmup", "0.2", "--quiet", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("protocol", ["rest", "rest-binary", "grpc"])
def test_closed_loop_over_each_protocol(server: ServerProcess, tmp_path: Path, protocol: str) -> None:
    out = tmp_path / "results.json"
    result = bench(server, "--model", "diabetes", "--protocol", protocol, "--concurrency", "1,4", "--json", str(out))
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert document["protocol"] == protocol
    points = document["results"]
    assert [p["concurrency"] for p in points] == [1, 4]
    for point in points:
        assert point["requests"] > 0
        assert point["throughput"] > 0
        assert point["errors"] == {}
        assert 0 < point["latency_ms"]["p50"] <= point["latency_ms"]["p99"] <= point["latency_ms"]["p99.9"]
        assert 0 < point["client_cpu_percent"] <= 100
    assert f"{protocol} diabetes c=4:" in result.stdout


def test_open_loop_input_file_and_plot(server: ServerProcess, tmp_path: Path) -> None:
    inputs = tmp_path / "request.json"
    inputs.write_text(
        json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 30], "data": [0.5] * 60}]})
    )
    out, plot = tmp_path / "results.json", tmp_path / "plot.png"
    result = bench(
        server, "--model", "breast_cancer", "--rate", "50,100", "--input-file", str(inputs),
        "--json", str(out), "--plot", str(plot),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    points = json.loads(out.read_text())["results"]
    assert [p["rate"] for p in points] == [50.0, 100.0]
    assert all(p["mode"] == "open" and p["errors"] == {} for p in points)
    assert 15 <= points[0]["requests"] <= 35  # ~50/s for 0.5 s
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_are_counted_by_kind(server: ServerProcess, tmp_path: Path) -> None:
    inputs = tmp_path / "bad.json"  # a shape the model refuses: every request is a 400
    inputs.write_text(
        json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]})
    )
    out = tmp_path / "results.json"
    result = bench(server, "--model", "diabetes", "--concurrency", "2", "--input-file", str(inputs), "--json", str(out))
    assert result.returncode == 1
    point = json.loads(out.read_text())["results"][0]
    assert point["requests"] == 0
    assert point["errors"]["http_400"] > 0


def test_unknown_model_is_a_clear_error(server: ServerProcess) -> None:
    result = bench(server, "--model", "nope", "--concurrency", "1")
    assert result.returncode != 0
    assert "metadata of 'nope': HTTP 404" in result.stderr
