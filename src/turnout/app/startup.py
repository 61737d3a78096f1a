"""What starting the server needs before anything listens: ports bound (so
one in use is reported plainly), the open-file limit raised, the guard built
from the security settings; ``StartupError`` says what to fix."""

from __future__ import annotations

import contextlib
import errno
import resource
import socket
import sqlite3

from turnout.security.audit import AuditLog, NoAudit
from turnout.security.guard import Guard
from turnout.security.jwt_auth import JwtVerifier
from turnout.security.keys import KeyStore, open_backend
from turnout.security.ratelimit import RateLimiter
from turnout.settings import SecuritySettings
from turnout.transports.addresses import LISTEN_BACKLOG


class StartupError(Exception):
    """The server cannot start (port in use, no repository); the message says why."""


def build_guard(security: SecuritySettings) -> Guard:
    """The guard from the settings; ``StartupError`` saying what to fix when
    they cannot work (inference authentication on and no way to authenticate)."""
    try:
        keys = None if security.key_store is None else KeyStore(open_backend(security.key_store))
        verifier = None if security.jwt is None else JwtVerifier(security.jwt)
    except (ValueError, sqlite3.Error) as exc:
        raise StartupError(str(exc)) from None
    if security.inference_auth and keys is None and verifier is None:
        raise StartupError(
            "inference authentication is on, but no credentials are configured: give an API key store "
            "(--api-keys FILE; make keys with `turnout keys create`) or a JWT key (--jwt-secret-file, "
            "--jwt-public-key or --jwt-jwks), or serve a local demo with --no-inference-auth"
        )
    try:
        audit: AuditLog | NoAudit = (
            NoAudit()
            if security.audit_log is None
            else AuditLog(security.audit_log, max_bytes=security.audit_max_bytes, keep=security.audit_keep)
        )
    except OSError as exc:
        raise StartupError(f"cannot open the audit log {security.audit_log}: {exc.strerror}") from None
    return Guard(keys, verifier, RateLimiter(security.rate_limit), audit, security.inference_auth)


def raise_open_file_limit() -> int:
    """Every connection holds a file descriptor: take the hard limit for the
    soft one (often 1,024 by default, which 1,100 silent connections
    exhausted), and return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def bind_tcp(host: str, port: int, what: str) -> socket.socket:
    """Bind before anything else starts, to report a port in use plainly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"cannot listen for {what} on {host}:{port}: the port is already in use") from None
        raise StartupError(f"cannot listen for {what} on {host}:{port}: {exc.strerror}") from None
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock
