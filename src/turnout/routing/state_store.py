"""Where routing state outlives the process: each endpoint's policy (and its
rollout) and the event log of every change and automatic decision. SQLite,
one small file beside the repository by default.

Writes are rare (an operator's change, a rollout step) and small, so they
happen at once, in the calling thread; the server calls from a worker
thread where it matters. One connection guarded by a lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

_SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    endpoint TEXT PRIMARY KEY,
    state TEXT NOT NULL,           -- JSON: policy, rollout, guard, config digest
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    at REAL NOT NULL,              -- Unix time
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    actor TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_endpoint ON events (endpoint, id);
"""


class StoreFailed(Exception):
    """The state store could not read or write (a full disk, Redis gone): nothing was changed there."""


class StoreConflict(Exception):
    """A shared store's state changed (another replica saved) since this replica
    last saw it: the save, made from the older state, was not made."""


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    id: int
    endpoint: str
    at: float
    kind: str  # "policy", "cleared", "refused", "step", "promoted", "rolled_back", "paused", "resumed", ...
    detail: str
    actor: str  # who: "config", "rollout guard", or the principal's name

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "endpoint": self.endpoint,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)),
            "kind": self.kind,
            "detail": self.detail,
            "actor": self.actor,
        }


class StateStore(Protocol):
    """Where routing state is kept: this process's SQLite file, or Redis shared by replicas."""

    shared: bool  # other processes change it too (followed by routing/shared_routing.py)

    def load(self) -> dict[str, dict[str, Any]]: ...
    def save(self, endpoint: str, state: dict[str, Any] | None, event: tuple[str, str, str] | None = None) -> None: ...
    def log(self, endpoint: str, kind: str, detail: str, actor: str) -> None: ...
    def events(self, endpoint: str | None = None, limit: int = 100) -> list[LoggedEvent]: ...
    def close(self) -> None: ...


class RoutingStore:
    """The SQLite store: this process's own (``--state-dir``)."""

    shared = False  # other processes do not change it under this one

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def load(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT endpoint, state FROM endpoints").fetchall()
        return {endpoint: json.loads(state) for endpoint, state in rows}

    def save(self, endpoint: str, state: dict[str, Any] | None, event: tuple[str, str, str] | None = None) -> None:
        """Replace (``None``: forget) an endpoint's state and log ``(kind,
        detail, actor)`` in the same transaction, so the log never disagrees
        with the state."""
        now = time.time()
        try:
            self._save(endpoint, state, event, now)
        except sqlite3.Error as exc:
            raise StoreFailed(str(exc)) from exc

    def _save(
        self, endpoint: str, state: dict[str, Any] | None, event: tuple[str, str, str] | None, now: float
    ) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            if state is None:
                self._db.execute("DELETE FROM endpoints WHERE endpoint = ?", (endpoint,))
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO endpoints (endpoint, state, updated_at) VALUES (?, ?, ?)",
                    (endpoint, json.dumps(state, sort_keys=True), now),
                )
            if event is not None:
                self._db.execute(
                    "INSERT INTO events (endpoint, at, kind, detail, actor) VALUES (?, ?, ?, ?, ?)",
                    (endpoint, now, *event),
                )

    def log(self, endpoint: str, kind: str, detail: str, actor: str) -> None:
        try:
            with self._lock, self._db:
                self._db.execute(
                    "INSERT INTO events (endpoint, at, kind, detail, actor) VALUES (?, ?, ?, ?, ?)",
                    (endpoint, time.time(), kind, detail, actor),
                )
        except sqlite3.Error as exc:
            raise StoreFailed(str(exc)) from exc

    def events(self, endpoint: str | None = None, limit: int = 100) -> list[LoggedEvent]:
        """The latest ``limit`` events, oldest first."""
        query = "SELECT id, endpoint, at, kind, detail, actor FROM events"
        args: tuple[Any, ...] = ()
        if endpoint is not None:
            query += " WHERE endpoint = ?"
            args = (endpoint,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [LoggedEvent(*row) for row in reversed(rows)]

    def close(self) -> None:
        with self._lock:
            self._db.close()
