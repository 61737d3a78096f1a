"""JWT bearer tokens, signed here with PyJWT and the ``cryptography`` package:
HS256, RS256 with a PEM public key, ES256 from a JWKS file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from turnout.errors import Unauthenticated
from turnout.security.jwt_auth import JwtSettings, JwtVerifier
from turnout.security.principal import Role

SECRET = "a-shared-secret-of-at-least-32-bytes!"


def claims(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {"sub": "alice", "exp": int(time.time()) + 300, "roles": ["infer"]}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(**overrides: object) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def test_a_valid_hs256_token_names_the_principal() -> None:
    verifier = JwtVerifier(JwtSettings(secret=SECRET))
    principal = verifier.verify(hs256(roles="infer read", models=["fraud"]))
    assert (principal.name, principal.roles, principal.models, principal.via) == (
        "alice", {Role.INFER, Role.READ}, {"fraud"}, "jwt",
    )  # fmt: skip


def test_unknown_roles_are_ignored_and_no_models_claim_means_every_model() -> None:
    principal = JwtVerifier(JwtSettings(secret=SECRET)).verify(hs256(roles=["infer", "billing-admin"]))
    assert principal.roles == {Role.INFER} and principal.models is None


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (hs256(exp=int(time.time()) - 3600), "has expired"),
        (hs256(exp=None), "lacks the 'exp' claim"),
        (hs256(sub=None), "lacks the 'sub' claim"),
        (jwt.encode(claims(), "another-secret-that-is-also-long-enough", algorithm="HS256"), "signature or format"),
        ("not.a.token", "not valid"),
        (jwt.encode(claims(), None, algorithm="none"), "not valid"),  # unsigned
    ],
)
def test_bad_tokens_are_refused_with_the_reason(token: str, reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        JwtVerifier(JwtSettings(secret=SECRET)).verify(token)


def test_issuer_and_audience_are_checked_when_configured() -> None:
    verifier = JwtVerifier(JwtSettings(secret=SECRET, issuer="https://idp.example", audience="turnout"))
    assert verifier.verify(hs256(iss="https://idp.example", aud="turnout")).name == "alice"
    with pytest.raises(Unauthenticated, match="issuer"):
        verifier.verify(hs256(iss="https://evil.example", aud="turnout"))
    with pytest.raises(Unauthenticated, match="audience"):
        verifier.verify(hs256(iss="https://idp.example", aud="someone-else"))


def test_rs256_with_a_public_key_and_no_algorithm_confusion(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "public.pem").write_bytes(public_pem)
    verifier = JwtVerifier(JwtSettings(public_key_file=tmp_path / "public.pem"))
    assert verifier.verify(jwt.encode(claims(), private, algorithm="RS256")).name == "alice"
    # the classic attack: an HS256 token whose "secret" is the server's public key
    forged = _hs256_with_raw_key(claims(sub="mallory"), public_pem)
    with pytest.raises(Unauthenticated):
        verifier.verify(forged)


def _hs256_with_raw_key(payload: dict[str, object], key: bytes) -> str:
    """PyJWT refuses to sign HS256 with a PEM key, so sign by hand."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(payload).encode())
    return head + "." + b64(hmac.new(key, head.encode(), hashlib.sha256).digest())


def test_es256_from_a_jwks_file_picked_by_kid_and_reloaded_when_it_changes(tmp_path: Path) -> None:
    first, second = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    jwks = tmp_path / "jwks.json"

    def publish(*keys: tuple[str, ec.EllipticCurvePrivateKey]) -> None:
        entries = []
        for kid, key in keys:
            entry = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
            entry.update(kid=kid, alg="ES256", use="sig")
            entries.append(entry)
        jwks.write_text(json.dumps({"keys": entries}))

    publish(("k1", first))
    now = [0.0]
    verifier = JwtVerifier(JwtSettings(jwks_file=jwks), clock=lambda: now[0])
    token_one = jwt.encode(claims(), first, algorithm="ES256", headers={"kid": "k1"})
    token_two = jwt.encode(claims(sub="bob"), second, algorithm="ES256", headers={"kid": "k2"})
    assert verifier.verify(token_one).name == "alice"
    with pytest.raises(Unauthenticated, match="not in the key set"):
        verifier.verify(token_two)
    publish(("k1", first), ("k2", second))  # the identity provider rotates in a new key
    now[0] = 2.0
    assert verifier.verify(token_two).name == "bob"


def test_settings_need_exactly_one_key_source_and_a_long_secret(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        JwtVerifier(JwtSettings())
    with pytest.raises(ValueError, match="at least 32 bytes"):
        JwtVerifier(JwtSettings(secret="short"))
    with pytest.raises(ValueError, match="cannot read the public key"):
        JwtVerifier(JwtSettings(public_key_file=tmp_path / "missing.pem"))


def test_the_secret_is_not_in_the_settings_repr() -> None:
    assert SECRET not in repr(JwtSettings(secret=SECRET))
