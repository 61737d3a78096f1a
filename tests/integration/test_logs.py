"""Structured logs from a real server: every line one JSON object, and the
access log's records with the documented fields."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np

from tests.integration.reference import diabetes_rows
from tests.support import ServerProcess


def test_json_logs_and_the_access_log(example_repo: Path, log_dir: Path) -> None:
    row = diabetes_rows(1)[0].tolist()
    body = {"id": "req-42", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": row}]}
    server = ServerProcess(example_repo, "--log-format", "json", "--access-log", log_dir=log_dir)
    with server, httpx.Client(base_url=server.url) as client:
        assert client.post("/v2/models/diabetes/infer", json=body).status_code == 200
        assert client.post("/v2/models/wine/infer", json={**body, "inputs": []}).status_code == 400
        assert client.post("/v2/models/wine/infer", json={"inputs": [{"name": "input", "datatype": "FP32",
                           "shape": [1, 13], "data": [0.5] * 13}]}).status_code == 200  # fmt: skip
        time.sleep(0.2)  # the child writes its log unbuffered; give it a moment
    lines = [line for line in server.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    access = [r for r in records if r["logger"] == "turnout.access"]
    assert len(access) == 3
    ok, refused, routed = access
    assert ok["request_id"] == "req-42" and ok["model"] == "diabetes" and ok["version"] == "1"
    assert ok["status"] == "success" and ok["protocol"] == "rest" and ok["latency_ms"] > 0
    assert refused["model"] == "wine" and refused["status"] == "invalid"
    assert routed["variant"] in ("1", "2") and routed["version"] == routed["variant"]  # wine's canary
    assert any(r["logger"] == "turnout.server" and "models loaded" in r["message"] for r in records)


def test_sampled_payloads_are_written_as_json_lines(example_repo: Path, log_dir: Path) -> None:
    rows = diabetes_rows(3)
    payloads = log_dir / "payloads"
    server = ServerProcess(example_repo, "--payload-log", str(payloads), "--payload-sample", "1", log_dir=log_dir)
    with server, httpx.Client(base_url=server.url) as client:
        for i, row in enumerate(rows):
            body = {
                "id": f"p{i}",
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": row.tolist()}],
            }
            answer = client.post("/v2/models/diabetes/infer", json=body).json()
    # the writer thread has written everything by the time the server stopped
    records = [json.loads(line) for line in (payloads / "payloads.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["p0", "p1", "p2"]
    last = records[-1]
    assert last["model"] == "diabetes" and last["version"] == "1"
    assert last["inputs"]["input"]["shape"] == [1, 10]
    assert abs(last["inputs"]["input"]["data"][0][0] - float(rows[2][0])) < 1e-6
    written = np.ravel(last["outputs"]["prediction"]["data"])
    np.testing.assert_allclose(written, answer["outputs"][0]["data"], rtol=1e-6)


def test_a_payload_that_cannot_be_written_never_fails_the_request(tmp_path: Path) -> None:
    from turnout.observability.payloads import PayloadLog
    from turnout.protocol.types import InferenceRequest, InferenceResponse, InferInput, InferOutput

    payloads = PayloadLog(tmp_path, sample=1.0)
    swapped = np.arange(3, dtype=">f4")  # big-endian: orjson refuses it
    request = InferenceRequest("m", None, [InferInput("x", "FP32", (3,), swapped)])
    text = np.array([b"caf\xc3\xa9", b"\xff\xfe"], dtype=object)
    response = InferenceResponse("m", "1", [InferOutput("y", "BYTES", (2,), text)], id="r1")
    payloads.offer(request, response)  # skipped, logged: no exception
    payloads.offer(InferenceRequest("m", None, []), response)
    payloads.close()
    (line,) = (tmp_path / "payloads.jsonl").read_text().splitlines()
    assert json.loads(line)["outputs"]["y"]["data"] == ["café", {"base64": "//4="}]  # bytes kept exactly
