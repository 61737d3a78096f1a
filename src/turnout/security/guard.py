"""The one check every transport makes before it acts on a request: who is
calling (API key or JWT), whether they may (roles, model allow lists), and
whether their rate allows it now; with the audit log told of every
authentication failure and every admin action.

Credentials arrive in headers (HTTP) or metadata (gRPC), the same two ways:
``Authorization: Bearer <token>`` (a turnout API key or a JWT), or
``X-API-Key: <key>``. Errors say what is wrong without echoing the credential.

Two planes: the inference plane (infer, metadata, metrics) may run without
authentication for a local demo (``inference_auth`` off: every caller is
``anonymous`` with the infer and read roles); the admin plane always
requires a credential with the admin role.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from turnout.errors import Forbidden, RateLimited, TurnoutError, Unauthenticated
from turnout.security.audit import AuditEvent, AuditLog, NoAudit
from turnout.security.jwt_auth import JwtVerifier
from turnout.security.keys import KeyStore, looks_like_key
from turnout.security.principal import ANONYMOUS, Action, Principal, authorize
from turnout.security.ratelimit import Rate, RateLimiter

_JWT_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Caller:
    """A request's credential-bearing headers and where it came from.
    ``authorization`` and ``api_key`` are the raw header values."""

    authorization: str | None
    api_key: str | None
    source: str

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], source: str) -> Caller:
        """From lower-case string headers (gRPC metadata)."""
        return cls(headers.get("authorization"), headers.get("x-api-key"), source)

    @classmethod
    def from_http(cls, headers: Mapping[bytes, bytes], source: str) -> Caller:
        """From lower-case byte headers (turnout's HTTP server, ASGI)."""
        authorization = headers.get(b"authorization")
        api_key = headers.get(b"x-api-key")
        return cls(
            None if authorization is None else authorization.decode("latin-1"),
            None if api_key is None else api_key.decode("latin-1"),
            source,
        )

    @property
    def present(self) -> bool:
        return bool(self.authorization or self.api_key)


@dataclass(frozen=True, slots=True)
class _Identity:
    principal: Principal
    bucket: str  # what the rate limit counts against: the key id or the token's subject
    rate: Rate | None  # the credential's own limit, if its key record sets one


class Guard:
    def __init__(
        self,
        keys: KeyStore | None = None,
        jwt: JwtVerifier | None = None,
        limiter: RateLimiter | None = None,
        audit: AuditLog | NoAudit | None = None,
        inference_auth: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._jwt = jwt
        self._limiter = limiter if limiter is not None else RateLimiter(None)
        self._audit = audit if audit is not None else NoAudit()
        self.inference_auth = inference_auth
        self._clock = clock
        # verified JWTs, until they expire: an RS256 check costs tens of µs
        self._jwt_cache: OrderedDict[str, tuple[_Identity, float]] = OrderedDict()

    def requiring_credentials(self) -> Guard:
        """This guard with inference authentication on, sharing its keys, JWT
        verifier, rate limits and audit log: for the admin plane, where every
        route but the health probes needs a credential, demo mode or not."""
        if self.inference_auth:
            return self
        strict = Guard(self._keys, self._jwt, self._limiter, self._audit, True, self._clock)
        strict._jwt_cache = self._jwt_cache
        return strict

    def close(self) -> None:
        self._audit.close()

    def open_to_anyone(self, action: Action) -> bool:
        """Whether ``action`` needs no check at all: inference authentication is
        off and no rate limit applies, so every caller is ``ANONYMOUS`` (the
        transports then skip reading credentials: the demo's hot path)."""
        return action is not Action.ADMIN and not self.inference_auth and not self._limiter.limits_by_default

    @property
    def can_authenticate(self) -> bool:
        return self._keys is not None or self._jwt is not None

    def principal(
        self,
        action: Action | None,
        caller: Callable[[], Caller],
        model: str | None = None,
        target: str = "",
        *,
        counted: bool = True,
    ) -> Principal | None:
        """Who a request acts as, for both transports: None for a route no
        action guards, ``ANONYMOUS`` where anyone may (``caller``, which reads
        the credentials, is then never called), else the checked caller
        (``check``: 401, 403 or 429)."""
        if action is None:
            return None
        if self.open_to_anyone(action):
            return ANONYMOUS
        return self.check(caller(), action, model, target, counted=counted)

    def check(
        self, caller: Caller, action: Action, model: str | None = None, target: str = "", *, counted: bool = True
    ) -> Principal:
        """The principal allowed to take ``action``, or a 401/403/429 error.

        Admin actions are audited here when refused; the admin API records
        their outcome once it knows it (``audited``). ``counted`` False: the
        request was let in at the door already (``admit``, from its headers
        alone, rate limit included); this check adds what the body tells
        (the model of a gRPC call)."""
        identity = self._identity(caller, action, model or target)
        self._authorize(identity, caller, action, model, target)
        if counted:
            self._count(identity, caller, action, model or target)
        return identity.principal

    def admit(self, caller: Caller, action: Action, target: str = "") -> Principal:
        """At the door, before a body is read: who is calling (401 if nobody
        valid) and whether their rate allows another request (429). Roles and
        allow lists that depend on the model are for ``check`` once the
        model is known; a request let in here is checked with ``counted``
        False."""
        identity = self._identity(caller, action, target)
        self._count(identity, caller, action, target)
        return identity.principal

    def _identity(self, caller: Caller, action: Action, subject: str) -> _Identity:
        if action is not Action.ADMIN and not self.inference_auth:
            # one bucket per client host: a new connection (a new port) is the same client
            return _Identity(ANONYMOUS, f"anonymous:{_host(caller.source)}", None)
        return self._authenticate(caller, action, subject)

    def _authorize(self, identity: _Identity, caller: Caller, action: Action, model: str | None, target: str) -> None:
        try:
            authorize(identity.principal, action, model)
        except Forbidden as exc:
            if action is Action.ADMIN:
                self.record(identity.principal, action.value, model or target, "denied", caller, exc.message)
            raise

    def _count(self, identity: _Identity, caller: Caller, action: Action, subject: str) -> None:
        wait = self._limiter.check(identity.bucket, identity.rate)
        if wait > 0:
            if action is Action.ADMIN:
                self.record(identity.principal, action.value, subject, "denied", caller, "rate limited")
            raise RateLimited(f"the request rate allowed to '{identity.principal.name}' is spent", retry_after=wait)

    def record(
        self, principal: Principal | None, action: str, target: str, result: str, caller: Caller, detail: str = ""
    ) -> None:
        name = "" if principal is None else principal.name
        self._audit.record(AuditEvent(name, action, target, result, caller.source, detail))

    @contextlib.contextmanager
    def audited(self, principal: Principal | None, action: str, target: str, caller: Caller) -> Iterator[None]:
        """Record an admin action's outcome ("ok", or "failed" and why) once it is known."""
        try:
            yield
        except Exception as exc:
            detail = exc.message if isinstance(exc, TurnoutError) else "internal error"
            self.record(principal, action, target, "failed", caller, detail)
            raise
        self.record(principal, action, target, "ok", caller)

    def _authenticate(self, caller: Caller, action: Action, target: str) -> _Identity:
        try:
            return self._identify(caller)
        except Unauthenticated as exc:
            self.record(None, f"authenticate:{action.value}", target, "denied", caller, exc.message)
            raise

    def _identify(self, caller: Caller) -> _Identity:
        token = _token(caller)
        if looks_like_key(token):
            if self._keys is None:
                raise Unauthenticated("API keys are not accepted by this server")
            record = self._keys.lookup(token)
            if record is None:
                raise Unauthenticated("the API key is not valid (unknown, revoked or mistyped)")
            rate = Rate(record.rate, record.burst or max(1, int(record.rate))) if record.rate else None
            return _Identity(record.principal(), f"key:{record.id}", rate)
        if self._jwt is None:
            raise Unauthenticated("the credential is not a turnout API key, and bearer tokens are not accepted")
        now = self._clock()
        cached = self._jwt_cache.get(token)
        if cached is not None and cached[1] > now:
            self._jwt_cache.move_to_end(token)
            return cached[0]
        principal, expires = self._jwt.verify_until(token)
        identity = _Identity(principal, f"jwt:{principal.name}", None)
        self._jwt_cache[token] = (identity, expires)
        if len(self._jwt_cache) > _JWT_CACHE_SIZE:
            self._jwt_cache.popitem(last=False)
        return identity


def _host(source: str) -> str:
    """The host of a "host:port" address (IPv6 hosts keep their colons)."""
    host, separator, _ = source.rpartition(":")
    return host if separator else source


def _token(caller: Caller) -> str:
    if caller.authorization:
        scheme, _, value = caller.authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated("the Authorization header must read 'Bearer <token>'")
        return value.strip()
    if caller.api_key:
        return caller.api_key.strip()
    raise Unauthenticated("this needs a credential: an 'Authorization: Bearer <token>' or 'X-API-Key' header")
