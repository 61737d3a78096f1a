"""Structured logs from a real server: every line one JSON object, and the
access log's records with the documented fields."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

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
