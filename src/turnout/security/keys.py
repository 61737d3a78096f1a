"""API keys: created once and shown once, stored only as salted hashes, in a
SQLite database or a JSON file, revoked without a restart.

A key reads ``tnt_<id>_<secret>``: the id finds the record, the secret is
checked against ``sha256(salt + secret)`` in constant time. Why a plain
salted SHA-256 and not a slow password hash (scrypt, bcrypt): the secret is
256 random bits, not something a person chose, so there is nothing to guess
faster; a slow hash would only add milliseconds to every request.

Revocation and rotation: the server's ``KeyStore`` looks at the store's
change marker (SQLite's ``data_version``, the file's mtime and size) at
most once per ``refresh_seconds`` and reloads when it moved, so ``turnout
keys revoke`` takes effect within that time, without a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from turnout.files import write_json_atomically
from turnout.security.principal import Principal, Role, parse_roles

log = logging.getLogger("turnout.security")

PREFIX = "tnt"
_ID_BYTES = 6  # 12 hex characters: only has to be unique, the secret protects
_SECRET_BYTES = 32
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    name: str
    salt: str  # hex
    digest: str  # hex sha256(salt + secret)
    roles: frozenset[Role]
    models: frozenset[str] | None  # None: every model
    created: str  # ISO 8601, UTC
    revoked: str | None = None
    rate: float | None = None  # requests per second; None: the server's default limit
    burst: int | None = None

    def principal(self) -> Principal:
        return Principal(self.name, self.roles, self.models, via="key")

    def public(self) -> dict[str, Any]:
        """What ``turnout keys list`` shows: never the salt or the digest."""
        return {
            "id": self.id,
            "name": self.name,
            "roles": sorted(r.value for r in self.roles),
            "models": None if self.models is None else sorted(self.models),
            "rate": self.rate,
            "burst": self.burst,
            "created": self.created,
            "revoked": self.revoked,
        }


def split_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a string shaped like a turnout key, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def looks_like_key(token: str) -> bool:
    return token.startswith(PREFIX + "_")


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def new_key(
    name: str,
    roles: Iterable[Role],
    models: Iterable[str] | None = None,
    rate: float | None = None,
    burst: int | None = None,
    now: datetime | None = None,
) -> tuple[KeyRecord, str]:
    """A fresh record and the token to hand out (the only time it exists in clear)."""
    key_id = secrets.token_hex(_ID_BYTES)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    salt = secrets.token_hex(16)
    created = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    record = KeyRecord(
        id=key_id,
        name=name,
        salt=salt,
        digest=_digest(salt, secret),
        roles=frozenset(roles),
        models=None if models is None else frozenset(models),
        created=created,
        rate=rate,
        burst=burst,
    )
    return record, f"{PREFIX}_{key_id}_{secret}"


def matches(record: KeyRecord, secret: str) -> bool:
    return hmac.compare_digest(record.digest, _digest(record.salt, secret))


# ---------------------------------------------------------------- storage


class KeyBackend(Protocol):
    def load(self) -> list[KeyRecord]: ...
    def add(self, record: KeyRecord) -> None: ...
    def save(self, record: KeyRecord) -> None: ...
    def marker(self) -> object:
        """Changes whenever another process may have changed the keys."""
        ...


def _to_json(record: KeyRecord) -> dict[str, Any]:
    return {**record.public(), "salt": record.salt, "digest": record.digest}


def _from_json(item: dict[str, Any], where: str) -> KeyRecord:
    try:
        models = item.get("models")
        return KeyRecord(
            id=str(item["id"]),
            name=str(item["name"]),
            salt=str(item["salt"]),
            digest=str(item["digest"]),
            roles=parse_roles(item.get("roles", []), f"{where}: key {item.get('id')!r}"),
            models=None if models is None else frozenset(str(m) for m in models),
            created=str(item.get("created", "")),
            revoked=item.get("revoked"),
            rate=None if item.get("rate") is None else float(item["rate"]),
            burst=None if item.get("burst") is None else int(item["burst"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: a key record is malformed ({exc})") from None


class FileKeys:
    """A JSON file (``{"version": 1, "keys": [...]}``), rewritten atomically
    (temporary file, then rename) so a reader never sees half of it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[KeyRecord]:
        if not self.path.exists():
            return []
        try:
            document = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path}: cannot read the keys file ({exc})") from None
        if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
            raise ValueError(f"{self.path}: not a turnout keys file (version {FORMAT_VERSION})")
        return [_from_json(item, str(self.path)) for item in document.get("keys", [])]

    def add(self, record: KeyRecord) -> None:
        self._write([*self.load(), record])

    def save(self, record: KeyRecord) -> None:
        self._write([record if r.id == record.id else r for r in self.load()])

    def marker(self) -> object:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _write(self, records: list[KeyRecord]) -> None:
        document = {"version": FORMAT_VERSION, "keys": [_to_json(r) for r in records]}
        write_json_atomically(self.path, document, mode=0o600, indent=2, sort_keys=False)  # hashes: owner only


class SqliteKeys:
    """A SQLite database; the server reads it through its own connection and
    learns of other processes' writes from ``PRAGMA data_version``."""

    _SCHEMA = """
        CREATE TABLE IF NOT EXISTS keys (
            id TEXT PRIMARY KEY, record TEXT NOT NULL
        )
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._connection.execute(self._SCHEMA)
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)

    def load(self) -> list[KeyRecord]:
        rows = self._connection.execute("SELECT record FROM keys ORDER BY rowid").fetchall()
        return [_from_json(json.loads(text), str(self.path)) for (text,) in rows]

    def add(self, record: KeyRecord) -> None:
        self._connection.execute(
            "INSERT INTO keys (id, record) VALUES (?, ?)", (record.id, json.dumps(_to_json(record)))
        )

    def save(self, record: KeyRecord) -> None:
        self._connection.execute("UPDATE keys SET record = ? WHERE id = ?", (json.dumps(_to_json(record)), record.id))

    def marker(self) -> object:
        (version,) = self._connection.execute("PRAGMA data_version").fetchone()
        return version

    def close(self) -> None:
        self._connection.close()


def open_backend(path: Path) -> KeyBackend:
    """SQLite for ``.db``/``.sqlite``/``.sqlite3``, a JSON file for ``.json``."""
    suffix = path.suffix.lower()
    if suffix in (".db", ".sqlite", ".sqlite3"):
        return SqliteKeys(path)
    if suffix == ".json":
        return FileKeys(path)
    raise ValueError(f"{path}: a key store is a .json file or a SQLite .db/.sqlite/.sqlite3 file")


def revoke(backend: KeyBackend, key: str, now: datetime | None = None) -> KeyRecord:
    """Revoke the key whose id (or unique name) is ``key``; returns its record."""
    records = backend.load()
    found = [r for r in records if r.id == key] or [r for r in records if r.name == key]
    if not found:
        raise LookupError(f"no key with id or name {key!r}")
    if len(found) > 1:
        raise LookupError(f"{len(found)} keys are named {key!r}; revoke by id")
    record = found[0]
    if record.revoked is None:
        record = replace(record, revoked=(now or datetime.now(UTC)).isoformat(timespec="seconds"))
        backend.save(record)
    return record


# ---------------------------------------------------------------- the server's view


# Tokens proven since the keys were last loaded, at most this many: a token
# enters only once its secret matched, so honest traffic needs one per key.
_PROVEN_MAX = 4096


class KeyStore:
    """The keys as the server checks them, refreshed from the backend when it
    changes. Event-loop only: no lock.

    A token whose secret matched is remembered until the keys are next
    loaded, so a client's later requests cost a dictionary lookup rather than
    a salted SHA-256 each (and a request checked at its headers, then again
    once its model is known, pays for one). Only proven tokens are kept, and
    all are forgotten when the store reloads, so a revoked key stops working
    exactly as soon as without the cache (within ``refresh_seconds``).
    """

    def __init__(
        self,
        backend: KeyBackend,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backend = backend
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._marker: object = backend.marker()
        self._records = {r.id: r for r in backend.load()}
        self._proven: dict[str, KeyRecord] = {}
        self._checked = clock()

    def lookup(self, token: str) -> KeyRecord | None:
        """The live (not revoked) record ``token`` proves, or None."""
        self._refresh()
        record = self._proven.get(token)
        if record is not None:
            return record
        parts = split_token(token)
        if parts is None:
            return None
        record = self._records.get(parts[0])
        if record is None or record.revoked is not None or not matches(record, parts[1]):
            return None
        if len(self._proven) >= _PROVEN_MAX:
            self._proven.clear()
        self._proven[token] = record
        return record

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked < self._refresh_seconds:
            return
        self._checked = now
        marker = self._backend.marker()
        if marker == self._marker:
            return
        try:
            self._records = {r.id: r for r in self._backend.load()}
            self._proven = {}
        except (ValueError, sqlite3.Error) as exc:
            # A store caught mid-edit or broken keeps the last good keys rather
            # than locking every client out (or letting a revoked key back in).
            log.warning("the key store could not be reloaded, keeping the keys loaded before: %s", exc)
            return
        self._marker = marker
        log.info("key store reloaded: %d keys, %d revoked", len(self._records), self.revoked_count())

    def revoked_count(self) -> int:
        return sum(1 for r in self._records.values() if r.revoked is not None)
