"""JWT bearer tokens, checked with PyJWT: signature, expiry, issuer, audience.

HS256 with a shared secret, or RS256/ES256 with a public key (PEM) or a JWKS
file. The algorithms accepted follow from the key given, never from the
token: a token cannot pick HS256 to have a public key used as its secret.
A JWKS file is read again when it changes (at most once per
``refresh_seconds``), so keys rotated at the identity provider are picked up
without a restart.

Claims: ``sub`` names the principal; the roles claim (default ``roles``: a
list, or a space-separated string as in OAuth scopes) gives its roles, of
which unknown ones are ignored (tokens from an identity provider carry
others); the models claim (default ``models``), when present, is its model
allow list.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from turnout.errors import Unauthenticated
from turnout.security.principal import Principal, Role

ASYMMETRIC = ("RS256", "ES256")


@dataclass(frozen=True, slots=True)
class JwtSettings:
    secret: str | None = field(default=None, repr=False)  # HS256; never printed
    public_key_file: Path | None = None  # RS256 / ES256, PEM
    jwks_file: Path | None = None  # RS256 / ES256, a JSON Web Key Set
    issuer: str | None = None
    audience: str | None = None
    roles_claim: str = "roles"
    models_claim: str = "models"
    leeway_seconds: float = 30.0  # clock skew allowed on exp / nbf / iat

    def check(self) -> None:
        given = [x for x in (self.secret, self.public_key_file, self.jwks_file) if x]
        if len(given) != 1:
            raise ValueError("JWT: give exactly one of a shared secret, a public key file or a JWKS file")
        if self.secret is not None and len(self.secret.encode()) < 32:
            raise ValueError("JWT: the HS256 shared secret must be at least 32 bytes")


class JwtVerifier:
    def __init__(self, settings: JwtSettings, clock: Callable[[], float] = time.monotonic) -> None:
        settings.check()
        self._settings = settings
        self._clock = clock
        self._jwks: jwt.PyJWKSet | None = None
        self._jwks_marker: object = None
        self._checked = -float("inf")
        self._public_key: Any = None
        if settings.public_key_file is not None:
            self._public_key = _read(settings.public_key_file, "public key")
        if settings.jwks_file is not None:
            self._load_jwks()

    def verify(self, token: str) -> Principal:
        """The principal a valid token names; ``Unauthenticated`` otherwise,
        with the reason (never the token) in the message."""
        return self.verify_until(token)[0]

    def verify_until(self, token: str) -> tuple[Principal, float]:
        """As ``verify``, with the token's expiry (its ``exp``, epoch seconds)."""
        key, algorithms = self._key_for(token)
        settings = self._settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_seconds,
                options={"require": ["exp", "sub"], "verify_aud": settings.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the bearer token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the bearer token is not meant for this server (audience)") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the bearer token's issuer is not trusted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the bearer token lacks the '{exc.claim}' claim") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("the bearer token is not valid (signature or format)") from None
        return self._principal(claims), float(claims["exp"])

    def _principal(self, claims: dict[str, Any]) -> Principal:
        settings = self._settings
        raw_roles = claims.get(settings.roles_claim, [])
        if isinstance(raw_roles, str):
            raw_roles = raw_roles.split()
        known = {r.value: r for r in Role}
        roles = frozenset(known[r] for r in raw_roles if isinstance(r, str) and r in known)
        models: frozenset[str] | None = None
        if settings.models_claim in claims:
            raw_models = claims[settings.models_claim]
            if not isinstance(raw_models, list) or not all(isinstance(m, str) for m in raw_models):
                raise Unauthenticated(f"the bearer token's '{settings.models_claim}' claim must be a list of names")
            models = frozenset(raw_models)
        return Principal(str(claims["sub"]), roles, models, via="jwt")

    def _key_for(self, token: str) -> tuple[Any, list[str]]:
        settings = self._settings
        if settings.secret is not None:
            return settings.secret, ["HS256"]
        if self._public_key is not None:
            return self._public_key, list(ASYMMETRIC)
        self._refresh_jwks()
        assert self._jwks is not None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("the bearer token is not valid (format)") from None
        kid = header.get("kid")
        candidates = [k for k in self._jwks.keys if kid is None or k.key_id == kid]
        if not candidates:
            raise Unauthenticated("the bearer token's signing key is not in the key set")
        if len(candidates) > 1:
            raise Unauthenticated("the bearer token names no key id ('kid') and the key set holds several")
        found = candidates[0]
        algorithm = found.algorithm_name if found.algorithm_name in ASYMMETRIC else None
        return found.key, [algorithm] if algorithm else list(ASYMMETRIC)

    def _refresh_jwks(self) -> None:
        now = self._clock()
        if now - self._checked < 1.0:
            return
        self._checked = now
        path = self._settings.jwks_file
        assert path is not None
        try:
            stat = path.stat()
        except OSError:
            return  # keep the set loaded before
        if (stat.st_ino, stat.st_mtime_ns, stat.st_size) != self._jwks_marker:
            with contextlib.suppress(ValueError):  # a file caught mid-write: the next check reads it again
                self._load_jwks()

    def _load_jwks(self) -> None:
        path = self._settings.jwks_file
        assert path is not None
        stat = path.stat()
        text = _read(path, "JWKS file")
        try:
            keys = jwt.PyJWKSet.from_json(text)
        except (jwt.PyJWKSetError, ValueError) as exc:
            raise ValueError(f"{path}: not a usable JSON Web Key Set ({exc})") from None
        usable = [k for k in keys.keys if k.algorithm_name in ASYMMETRIC or k.key_type in ("RSA", "EC")]
        if not usable:
            raise ValueError(f"{path}: the key set holds no RSA or EC key")
        self._jwks = keys
        self._jwks_marker = (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path}: {exc.strerror}") from None
