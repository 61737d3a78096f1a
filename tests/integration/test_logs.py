"""Structured logs from a real server: every line one JSON object, and the
access log's records with the documented fields."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import grpc
import httpx
import jwt
import numpy as np

from tests.integration.reference import diabetes_rows
from tests.support import ServerProcess, wait_until
from turnout.security.keys import FileKeys, new_key
from turnout.security.principal import Role
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2_grpc as pb_grpc

JWT_SECRET = "log-test-secret-that-is-long-enough-for-hs256"


def test_json_logs_and_the_access_log(example_repo: Path, log_dir: Path) -> None:
    row = diabetes_rows(1)[0].tolist()
    body = {"id": "req-42", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": row}]}
    server = ServerProcess(example_repo, "--log-format", "json", "--access-log", log_dir=log_dir)
    with server, httpx.Client(base_url=server.url) as client:
        assert client.post("/v2/models/diabetes/infer", json=body).status_code == 200
        assert client.post("/v2/models/wine/infer", json={**body, "inputs": []}).status_code == 400
        assert client.post("/v2/models/wine/infer", json={"inputs": [{"name": "input", "datatype": "FP32",
                           "shape": [1, 13], "data": [0.5] * 13}]}).status_code == 200  # fmt: skip
        # the access records are written after the answers: the child's log is the only signal
        wait_until(lambda: server.log().count('"turnout.access"') >= 3, "three access records")
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


def test_a_pipelines_step_requests_are_sampled_as_their_models_own(example_repo: Path, log_dir: Path) -> None:
    """A step goes into its model's batcher without V2 objects, yet the payload
    log sees it as a request to that model, beside the pipeline's own."""
    repo = log_dir / "models"
    shutil.copytree(example_repo, repo)
    (repo / "scaled_risk" / "1").mkdir(parents=True)
    (repo / "scaled_risk" / "model.toml").write_text('runtime = "pipeline"\n')
    (repo / "scaled_risk" / "1" / "pipeline.toml").write_text(
        '[[inputs]]\nname = "x"\ndatatype = "FP32"\nshape = [-1, 30]\n'
        '[[steps]]\nname = "scale"\nmodel = "cancer_scaler"\ninputs = { input = "x" }\n'
        '[[outputs]]\nname = "scaled"\nfrom = "scale.scaled"\n'
    )
    payloads = log_dir / "payloads"
    server = ServerProcess(repo, "--payload-log", str(payloads), "--payload-sample", "1", log_dir=log_dir)
    body = {"id": "p", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 30], "data": [1.0] * 30}]}
    with server:
        answer = httpx.post(f"{server.url}/v2/models/scaled_risk/infer", json=body)
        assert answer.status_code == 200, answer.text
    records = {r["model"]: r for r in map(json.loads, (payloads / "payloads.jsonl").read_text().splitlines())}
    assert set(records) == {"scaled_risk", "cancer_scaler"}
    step = records["cancer_scaler"]
    assert step["inputs"]["input"]["datatype"] == "FP32" and step["inputs"]["input"]["shape"] == [1, 30]
    assert step["outputs"]["scaled"]["data"] == records["scaled_risk"]["outputs"]["scaled"]["data"]


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


def test_no_credential_reaches_any_log_at_debug_level(example_repo: Path, log_dir: Path) -> None:
    """At --log-level debug the hpack library logged every decoded header,
    ``authorization: Bearer <key>`` included (issue 15, item 8). Keys and
    JWTs, good and bad, over REST and gRPC, on the inference and the admin
    plane: afterwards neither the server's log nor the audit log holds one."""
    audit, secret_file = log_dir / "audit.log", log_dir / "jwt.secret"
    secret_file.write_text(JWT_SECRET)
    server = ServerProcess(
        example_repo,
        "--log-level", "debug",
        "--audit-log", str(audit),
        "--jwt-secret-file", str(secret_file),
        "--jwt-audience", "turnout",
        log_dir=log_dir,
        inference_auth=True,
    )  # fmt: skip
    record, key = new_key("log-test", [Role.INFER])
    FileKeys(server.key_store).add(record)  # beside the admin key, before the server starts
    _, unknown_key = new_key("never-stored", [Role.INFER])
    now = int(time.time())
    token = jwt.encode({"sub": "svc", "aud": "turnout", "exp": now + 600, "roles": ["infer"]}, JWT_SECRET)
    forged = jwt.encode({"sub": "svc", "aud": "turnout", "exp": now + 600, "roles": ["admin"]}, "x" * 48)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": [0.01] * 10}]}
    message = pb.ModelInferRequest(model_name="diabetes")
    message.inputs.add(name="input", datatype="FP32", shape=[1, 10]).contents.fp32_contents.extend([0.01] * 10)
    credentials = {key: 200, token: 200, unknown_key: 401, forged: 401}
    with server, httpx.Client(base_url=server.url) as client, grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for credential, status in credentials.items():
            answer = client.post(
                "/v2/models/diabetes/infer", json=body, headers={"Authorization": f"Bearer {credential}"}
            )
            assert answer.status_code == status, answer.text
            assert (
                client.post("/v2/models/diabetes/infer", json=body, headers={"X-API-Key": credential}).status_code
                == status
            )
            try:
                stub.ModelInfer(message, metadata=(("authorization", f"Bearer {credential}"),), timeout=10)
                assert status == 200
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED and status == 401
        with server.admin_client() as admin:  # the admin plane, with its admin key
            assert admin.post("/v2/repository/index", json={}).status_code == 200
            assert admin.post("/v2/repository/models/diabetes/load", json={}).status_code == 200
            refused = admin.post("/v2/repository/index", json={}, headers={"authorization": f"Bearer {unknown_key}"})
            assert refused.status_code == 401
        with grpc.insecure_channel(server.admin_address) as admin_channel:
            admin_stub = pb_grpc.GRPCInferenceServiceStub(admin_channel)
            admin_stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=tuple(server.admin_headers.items()))
        with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=5) as raw:
            raw.sendall(b"not http/2\r\n\r\n")  # turnout logs why it closes this at debug level
            raw.recv(1024)
    log = server.log()
    assert " DEBUG " in log  # the level was on: a header dump would be there
    secrets = [key, unknown_key, token, forged, server.admin_key]
    secrets += [s.split("_", 2)[2] for s in (key, unknown_key, server.admin_key)]  # tnt_<id>_<secret>: the secret
    secrets += [t.rsplit(".", 1)[1] for t in (token, forged)]  # a JWT's signature
    for text, where in ((log, "the server log"), (audit.read_text(), "the audit log")):
        assert "authenticate" in text or where == "the server log"
        leaked = [s[:8] + "..." for s in secrets if s in text]  # (a few characters, to say which)
        assert not leaked, f"credentials in {where}: {leaked}"
