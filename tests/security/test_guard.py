"""The guard: credentials from headers to a principal, then roles, then rate,
with failures and admin actions in the audit log and no secret anywhere."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest

from turnout.errors import Forbidden, RateLimited, Unauthenticated
from turnout.security.audit import AuditLog
from turnout.security.guard import Caller, Guard
from turnout.security.jwt_auth import JwtSettings, JwtVerifier
from turnout.security.keys import FileKeys, KeyStore, new_key
from turnout.security.principal import Action, Role
from turnout.security.ratelimit import Rate, RateLimiter

SECRET = "a-shared-secret-of-at-least-32-bytes!"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Guard, dict[str, str], Path, Clock]:
    backend = FileKeys(tmp_path / "keys.json")
    tokens = {}
    for name, roles, models, rate in (
        ("client", [Role.INFER], None, None),
        ("fraud-app", [Role.INFER], ["fraud"], None),
        ("ops", [Role.ADMIN], None, None),
        ("slow", [Role.INFER], None, 1.0),
    ):
        record, token = new_key(name, roles, models, rate=rate, burst=1 if rate else None)
        backend.add(record)
        tokens[name] = token
    clock = Clock()
    audit_path = tmp_path / "audit.jsonl"
    guard = Guard(
        keys=KeyStore(backend, clock=clock),
        jwt=JwtVerifier(JwtSettings(secret=SECRET)),
        limiter=RateLimiter(Rate(100.0, 3), clock),
        audit=AuditLog(audit_path),
    )
    return guard, tokens, audit_path, clock


def bearer(token: str) -> Caller:
    return Caller(f"Bearer {token}", None, "127.0.0.1:40000")


def audit_lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_keys_in_either_header_authenticate(setup: tuple[Guard, dict[str, str], Path, Clock]) -> None:
    guard, tokens, _, _ = setup
    assert guard.check(bearer(tokens["client"]), Action.INFER, "churn").name == "client"
    assert guard.check(Caller(None, tokens["client"], "x"), Action.INFER, "churn").name == "client"


@pytest.mark.parametrize(
    ("caller", "reason"),
    [
        (Caller(None, None, "x"), "needs a credential"),
        (Caller("Basic dXNlcjpwYXNz", None, "x"), "must read 'Bearer <token>'"),
        (Caller("Bearer tnt_ffffffffffff_nope", None, "x"), "API key is not valid"),
        (Caller("Bearer eyJhbGciOi.broken.token", None, "x"), "not valid"),
    ],
)
def test_missing_or_bad_credentials_are_401_and_audited(
    setup: tuple[Guard, dict[str, str], Path, Clock], caller: Caller, reason: str
) -> None:
    guard, _, audit_path, _ = setup
    with pytest.raises(Unauthenticated, match=reason):
        guard.check(caller, Action.INFER, "churn")
    (event,) = audit_lines(audit_path)
    assert (event["action"], event["result"], event["target"]) == ("authenticate:infer", "denied", "churn")


def test_a_valid_credential_without_the_right_is_403(setup: tuple[Guard, dict[str, str], Path, Clock]) -> None:
    guard, tokens, audit_path, _ = setup
    with pytest.raises(Forbidden):
        guard.check(bearer(tokens["fraud-app"]), Action.INFER, "churn")
    with pytest.raises(Forbidden):
        guard.check(bearer(tokens["client"]), Action.ADMIN, "churn", target="unload churn")
    # refused admin actions are audited; a refused inference is not (it is a metric, not an event)
    (event,) = audit_lines(audit_path)
    assert (event["principal"], event["action"], event["result"]) == ("client", "admin", "denied")


def test_jwt_bearer_tokens_are_accepted_and_cached_only_until_they_expire(tmp_path: Path) -> None:
    now = [1000.0]
    guard = Guard(jwt=JwtVerifier(JwtSettings(secret=SECRET)), clock=lambda: now[0])
    exp = int(time.time()) + 60
    token = jwt.encode({"sub": "alice", "exp": exp, "roles": ["read"]}, SECRET, algorithm="HS256")
    assert guard.check(bearer(token), Action.READ).name == "alice"
    now[0] = exp + 1  # past its exp by the guard's clock: not served from the cache
    assert guard.check(bearer(token), Action.READ).name == "alice"  # PyJWT's own clock still says valid
    expired = jwt.encode({"sub": "alice", "exp": 1, "roles": ["read"]}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="expired"):
        guard.check(bearer(expired), Action.READ)


def test_rates_are_per_credential_with_retry_after(setup: tuple[Guard, dict[str, str], Path, Clock]) -> None:
    guard, tokens, _, clock = setup
    guard.check(bearer(tokens["slow"]), Action.INFER, "m")  # its own limit: 1/s, burst 1
    with pytest.raises(RateLimited) as limited:
        guard.check(bearer(tokens["slow"]), Action.INFER, "m")
    assert limited.value.retry_after_header() == "1"
    for _ in range(3):  # the default limit, burst 3, counted apart
        guard.check(bearer(tokens["client"]), Action.INFER, "m")
    with pytest.raises(RateLimited):
        guard.check(bearer(tokens["client"]), Action.INFER, "m")
    clock.now += 1.0
    guard.check(bearer(tokens["slow"]), Action.INFER, "m")


def test_inference_without_authentication_is_anonymous_but_admin_still_needs_a_key(
    setup: tuple[Guard, dict[str, str], Path, Clock],
) -> None:
    guard, tokens, _, _ = setup
    guard.inference_auth = False
    nobody = Caller(None, None, "127.0.0.1:1")
    assert guard.check(nobody, Action.INFER, "churn").name == "anonymous"
    assert guard.check(nobody, Action.READ).name == "anonymous"
    with pytest.raises(Unauthenticated):
        guard.check(nobody, Action.ADMIN, "churn")
    assert guard.check(bearer(tokens["ops"]), Action.ADMIN, "churn").name == "ops"


def test_no_secret_reaches_the_audit_log_or_an_error(setup: tuple[Guard, dict[str, str], Path, Clock]) -> None:
    guard, tokens, audit_path, _ = setup
    revealed = []
    for token in (tokens["client"] + "x", tokens["client"][:-3], "Bearer " + SECRET):
        try:
            guard.check(bearer(token), Action.ADMIN, "m")
        except (Unauthenticated, Forbidden) as exc:
            revealed.append(exc.message)
    text = audit_path.read_text() + "\n".join(revealed)
    for token in tokens.values():
        assert token.split("_", 2)[2][:10] not in text
    assert SECRET not in text


def test_the_anonymous_rate_limit_counts_per_host_not_per_connection(
    setup: tuple[Guard, dict[str, str], Path, Clock],
) -> None:
    guard, _, _, _ = setup
    guard.inference_auth = False  # the limiter allows a burst of 3
    for port in range(3):  # a new connection each time: a new port, the same host
        guard.check(Caller(None, None, f"10.0.0.1:{40000 + port}"), Action.INFER, "m")
    with pytest.raises(RateLimited):
        guard.check(Caller(None, None, "10.0.0.1:40003"), Action.INFER, "m")
    guard.check(Caller(None, None, "10.0.0.2:40000"), Action.INFER, "m")  # another host has its own
    for port in range(3):
        guard.check(Caller(None, None, f"::1:{port}"), Action.INFER, "m")
    with pytest.raises(RateLimited):
        guard.check(Caller(None, None, "::1:9"), Action.INFER, "m")


def test_admit_at_the_door_then_check_the_model_without_counting_twice(
    setup: tuple[Guard, dict[str, str], Path, Clock],
) -> None:
    guard, tokens, audit, _ = setup
    with pytest.raises(Unauthenticated):
        guard.admit(Caller(None, None, "x"), Action.INFER, "/ModelInfer")
    assert audit_lines(audit)[-1]["result"] == "denied"
    fraud = bearer(tokens["fraud-app"])
    for _ in range(3):  # the burst of 3, spent at the door only
        assert guard.admit(fraud, Action.INFER, "/ModelInfer").name == "fraud-app"
        assert guard.check(fraud, Action.INFER, "fraud", counted=False).name == "fraud-app"
    with pytest.raises(Forbidden):  # the model's allow list, known only from the body
        guard.check(fraud, Action.INFER, "churn", counted=False)
    with pytest.raises(RateLimited):
        guard.admit(fraud, Action.INFER, "/ModelInfer")


def test_the_admin_plane_guard_needs_credentials_in_demo_mode(
    setup: tuple[Guard, dict[str, str], Path, Clock],
) -> None:
    guard, tokens, _, _ = setup
    guard.inference_auth = False
    strict = guard.requiring_credentials()
    nobody = Caller(None, None, "127.0.0.1:1")
    assert guard.check(nobody, Action.READ).name == "anonymous"
    with pytest.raises(Unauthenticated):
        strict.check(nobody, Action.READ)
    assert strict.check(bearer(tokens["ops"]), Action.READ).name == "ops"
