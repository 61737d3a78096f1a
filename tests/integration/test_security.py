"""Security against a real server process, with real clients (httpx,
tritonclient over REST and gRPC): API keys and JWTs, roles and allow lists,
the admin plane, rate limits, TLS and mutual TLS, the audit log, and no
secret in any log or answer."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.security.certs import Pki, make_pki
from tests.support import ServerProcess, free_port

JWT_SECRET = "integration-secret-that-is-long-enough-for-hs256"
DIABETES = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": [0.01] * 10}]}


def turnout(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "turnout", *args], capture_output=True, text=True, timeout=60)


def create_key(store: Path, name: str, *options: str) -> str:
    result = turnout("keys", "create", "--store", str(store), "--name", name, *options)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@dataclass
class Secured:
    server: ServerProcess
    store: Path
    audit: Path
    keys: dict[str, str]

    def bearer(self, name: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[name]}"}  # lower case, as gRPC metadata requires


@pytest.fixture(scope="module")
def secured(example_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """Inference authentication on, API keys in SQLite, HS256 JWTs, a default rate limit."""
    directory = tmp_path_factory.mktemp("secured")
    store, audit, secret = directory / "keys.db", directory / "audit.jsonl", directory / "jwt.secret"
    secret.write_text(JWT_SECRET + "\n")
    keys = {
        "client": create_key(store, "client", "--role", "infer"),
        "diabetes-only": create_key(store, "diabetes-only", "--role", "infer", "--model", "diabetes"),
        "reader": create_key(store, "reader", "--role", "read"),
        "ops": create_key(store, "ops", "--role", "admin"),
        "slow": create_key(store, "slow", "--role", "infer", "--rate-limit", "2/2"),
    }
    process = ServerProcess(
        example_repo,
        "--api-keys", str(store),
        "--jwt-secret-file", str(secret),
        "--jwt-audience", "turnout",
        "--audit-log", str(audit),
        "--rate-limit", "500/500",
        log_dir=directory,
        inference_auth=True,
    )  # fmt: skip
    with process:
        yield Secured(process, store, audit, keys)


def test_requests_without_a_valid_credential_are_401(secured: Secured) -> None:
    with httpx.Client(base_url=secured.server.url) as client:
        for headers in ({}, {"Authorization": "Bearer tnt_0123456789ab_wrong"}, {"Authorization": "Basic x"}):
            response = client.post("/v2/models/diabetes/infer", json=DIABETES, headers=headers)
            assert response.status_code == 401, response.text
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert "error" in response.json()
        # health probes need nothing
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2/health/live").status_code == 200


def test_roles_and_allow_lists_give_403(secured: Secured) -> None:
    with httpx.Client(base_url=secured.server.url) as client:
        ok = client.post("/v2/models/diabetes/infer", json=DIABETES, headers=secured.bearer("client"))
        assert ok.status_code == 200, ok.text
        assert client.post(
            "/v2/models/diabetes/infer", json=DIABETES, headers=secured.bearer("diabetes-only")
        ).is_success
        other = client.get("/v2/models/breast_cancer", headers=secured.bearer("diabetes-only"))
        assert other.status_code == 403 and "may not read model 'breast_cancer'" in other.json()["error"]
        reader = client.post("/v2/models/diabetes/infer", json=DIABETES, headers=secured.bearer("reader"))
        assert reader.status_code == 403
        assert client.get("/metrics", headers=secured.bearer("reader")).status_code == 200
        assert client.get("/metrics", headers=secured.bearer("client")).status_code == 403
        assert client.get("/metrics").status_code == 401


def test_tritonclient_sends_keys_over_rest_and_grpc(secured: Secured) -> None:
    server = secured.server
    http = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    grpc = grpcclient.InferenceServerClient(server.grpc_address)
    rows = np.full((1, 10), 0.01, dtype=np.float32)
    try:
        for client, module in ((http, httpclient), (grpc, grpcclient)):
            tensor = module.InferInput("input", [1, 10], "FP32")
            tensor.set_data_from_numpy(rows)
            result = client.infer("diabetes", [tensor], headers=secured.bearer("client"))
            assert result.as_numpy("prediction").shape == (1, 1)
            with pytest.raises(InferenceServerException) as refused:
                client.infer("diabetes", [tensor])
            assert "credential" in refused.value.message()
        with pytest.raises(InferenceServerException) as denied:
            grpc.infer("breast_cancer", [_cancer_input()], headers=secured.bearer("diabetes-only"))
        assert denied.value.status() == "StatusCode.PERMISSION_DENIED"
        with pytest.raises(InferenceServerException) as missing:
            grpc.get_model_metadata("diabetes")
        assert missing.value.status() == "StatusCode.UNAUTHENTICATED"
    finally:
        http.close()
        grpc.close()


def _cancer_input() -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("input", [1, 30], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 30), dtype=np.float32))
    return tensor


def test_jwts_carry_roles_and_are_checked(secured: Secured) -> None:
    now = int(time.time())
    good = jwt.encode({"sub": "svc", "aud": "turnout", "exp": now + 60, "roles": ["infer"]}, JWT_SECRET)
    wrong_audience = jwt.encode({"sub": "svc", "aud": "other", "exp": now + 60, "roles": ["infer"]}, JWT_SECRET)
    expired = jwt.encode({"sub": "svc", "aud": "turnout", "exp": now - 600, "roles": ["infer"]}, JWT_SECRET)
    with httpx.Client(base_url=secured.server.url) as client:

        def infer(token: str) -> httpx.Response:
            return client.post("/v2/models/diabetes/infer", json=DIABETES, headers={"Authorization": f"Bearer {token}"})

        assert infer(good).status_code == 200
        assert infer(wrong_audience).status_code == 401
        response = infer(expired)
        assert response.status_code == 401 and "expired" in response.json()["error"]


def test_revoking_a_key_takes_effect_without_a_restart(secured: Secured) -> None:
    token = create_key(secured.store, "temporary", "--role", "infer")
    with httpx.Client(base_url=secured.server.url) as client:
        infer = lambda: client.post(  # noqa: E731
            "/v2/models/diabetes/infer", json=DIABETES, headers={"Authorization": f"Bearer {token}"}
        )
        deadline = time.monotonic() + 10
        while infer().status_code != 200:  # the server picks up new keys within its refresh interval
            assert time.monotonic() < deadline
            time.sleep(0.1)
        result = turnout("keys", "revoke", "--store", str(secured.store), "temporary")
        assert result.returncode == 0, result.stderr
        while infer().status_code != 401:
            assert time.monotonic() < deadline, "a revoked key was still accepted after 10 s"
            time.sleep(0.1)
    listing = turnout("keys", "list", "--store", str(secured.store), "--json")
    entries = [json.loads(line) for line in listing.stdout.splitlines()]
    assert next(e for e in entries if e["name"] == "temporary")["revoked"]
    assert all("digest" not in e and "salt" not in e for e in entries)


def test_rate_limits_answer_429_with_retry_after(secured: Secured) -> None:
    with httpx.Client(base_url=secured.server.url) as client:
        codes = [
            client.post("/v2/models/diabetes/infer", json=DIABETES, headers=secured.bearer("slow")) for _ in range(6)
        ]
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes]
    assert int(limited[0].headers["retry-after"]) >= 1
    grpc = grpcclient.InferenceServerClient(secured.server.grpc_address)
    try:
        with pytest.raises(InferenceServerException) as caught:
            for _ in range(6):
                grpc.get_model_metadata("diabetes", headers=secured.bearer("slow"))
        assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    finally:
        grpc.close()


def test_the_admin_plane_needs_the_admin_role_and_is_audited(secured: Secured) -> None:
    server = secured.server
    with httpx.Client(base_url=server.admin_url) as admin:
        assert admin.post("/v2/repository/models/diabetes/load").status_code == 401
        assert admin.post("/v2/repository/models/diabetes/load", headers=secured.bearer("client")).status_code == 403
        assert admin.post("/v2/repository/models/diabetes/load", headers=secured.bearer("ops")).status_code == 200
        # inference is not served on the admin plane
        assert (
            admin.post("/v2/models/diabetes/infer", json=DIABETES, headers=secured.bearer("client")).status_code == 404
        )
    with httpx.Client(base_url=server.url) as public:
        refused = public.post("/v2/repository/models/diabetes/load", headers=secured.bearer("ops"))
        assert refused.status_code == 403 and "admin plane" in refused.json()["error"]
    events = [json.loads(line) for line in secured.audit.read_text().splitlines()]
    loads = [e for e in events if e["target"] in ("diabetes", "/v2/repository/models/diabetes/load")]
    assert {(e["principal"], e["result"]) for e in loads} >= {("", "denied"), ("client", "denied"), ("ops", "ok")}
    assert all(e["source"].startswith("127.0.0.1:") for e in events)
    tail = turnout("audit", "tail", str(secured.audit), "-n", "3")
    assert tail.returncode == 0 and len(tail.stdout.splitlines()) == 3


def test_no_secret_appears_in_logs_answers_or_the_audit_log(secured: Secured) -> None:
    with httpx.Client(base_url=secured.server.url) as client:
        for token in secured.keys.values():
            client.post("/v2/models/diabetes/infer", json=DIABETES, headers={"Authorization": f"Bearer {token}x"})
        answers = client.post("/v2/models/diabetes/infer", json=DIABETES, headers={"X-API-Key": JWT_SECRET}).text
        answers += client.get("/metrics", headers=secured.bearer("reader")).text
    text = secured.server.log() + secured.audit.read_text() + answers
    for token in secured.keys.values():
        assert token.split("_", 2)[2] not in text
    assert JWT_SECRET not in text


def test_without_credentials_configured_the_server_refuses_to_start(example_repo: Path, tmp_path: Path) -> None:
    result = turnout(
        "serve", str(example_repo), "--http-port", str(free_port()), "--grpc-port", str(free_port()), "--no-admin"
    )
    assert result.returncode == 1
    assert "no credentials are configured" in result.stderr and "--no-inference-auth" in result.stderr


def test_a_demo_without_inference_auth_says_so(server: ServerProcess) -> None:
    assert "inference authentication is OFF" in server.log()


def test_the_admin_plane_needs_a_credential_even_in_a_demo(server: ServerProcess) -> None:
    """--no-inference-auth opens the public ports only: the admin plane's reads need a credential."""
    with httpx.Client(base_url=server.admin_url) as admin:
        assert admin.get("/v2/health/live").status_code == 200
        refused = admin.post("/v2/repository/index")
        assert refused.status_code == 401, refused.text
        assert admin.post("/v2/repository/index", headers=server.admin_headers).status_code == 200
    with httpx.Client(base_url=server.url) as public:
        assert public.post("/v2/repository/index").status_code == 200
    grpc = grpcclient.InferenceServerClient(server.admin_address)
    try:
        with pytest.raises(InferenceServerException) as caught:
            grpc.get_model_repository_index()
        assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
        assert grpc.get_model_repository_index(headers=server.admin_headers) is not None
    finally:
        grpc.close()


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_client(pki: Pki, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca)
    if with_cert:
        context.load_cert_chain(pki.client.cert, pki.client.key)
    return context


def test_tls_and_mutual_tls_with_real_clients(example_repo: Path, pki: Pki, tmp_path: Path) -> None:
    process = ServerProcess(
        example_repo,
        "--tls-cert", str(pki.server.cert),
        "--tls-key", str(pki.server.key),
        "--tls-client-ca", str(pki.ca),
        log_dir=tmp_path,
    )  # fmt: skip
    process.verify = _tls_client(pki, with_cert=True)
    with process:
        with httpx.Client(base_url=process.url, verify=_tls_client(pki, with_cert=True)) as client:
            assert client.post("/v2/models/diabetes/infer", json=DIABETES).status_code == 200
        without_certificate = httpx.Client(base_url=process.url, verify=_tls_client(pki, with_cert=False))
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)), without_certificate:
            without_certificate.get("/v2/health/ready")
        rows = np.full((1, 10), 0.01, dtype=np.float32)
        grpc = grpcclient.InferenceServerClient(
            process.grpc_address,
            ssl=True,
            root_certificates=str(pki.ca),
            private_key=str(pki.client.key),
            certificate_chain=str(pki.client.cert),
        )
        try:
            tensor = grpcclient.InferInput("input", [1, 10], "FP32")
            tensor.set_data_from_numpy(rows)
            assert grpc.infer("diabetes", [tensor]).as_numpy("prediction").shape == (1, 1)
        finally:
            grpc.close()
        stranger = grpcclient.InferenceServerClient(
            process.grpc_address,
            ssl=True,
            root_certificates=str(pki.ca),
            private_key=str(pki.stranger_client.key),
            certificate_chain=str(pki.stranger_client.cert),
        )
        try:
            with pytest.raises(InferenceServerException):
                stranger.is_server_live()
        finally:
            stranger.close()
        http = httpclient.InferenceServerClient(
            f"127.0.0.1:{process.http_port}",
            ssl=True,
            ssl_options={"keyfile": str(pki.client.key), "certfile": str(pki.client.cert), "ca_certs": str(pki.ca)},
        )
        try:
            assert http.is_server_ready()
        finally:
            http.close()
        with process.admin_client() as admin:  # the admin plane is on TLS too, REST and gRPC on one port
            assert admin.post("/v2/repository/index").status_code == 200
