"""Routing state in Redis, shared by replicas (``--state redis://...``): each
endpoint's policy and rollout in one hash, the event log in streams (one for
all, one per endpoint, each capped), and a message on a channel at every
change so the other replicas take it up at once (``shared_routing.py``).

A change and its event are written by one script (atomic in Redis), so the
log never disagrees with the state, and only if the endpoint's state is
still what this replica last saw (loaded, saved, or taken up from another
replica's announcement: ``saw``). Else the save is ``StoreConflict`` and
nothing is written: two replicas deciding from the same state (an operator
pausing a rollout on one, the leader moving it on on another) cannot have
the later silently undo the earlier. Calls are synchronous and rare (an
operator's change, a rollout step), as with the SQLite store; a Redis that
does not answer within two seconds is ``StoreFailed``, and an operator's
change is then refused with a 503, as a full disk refuses it.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

import redis

from turnout.routing.state_store import LoggedEvent, StoreConflict, StoreFailed
from turnout.urls import without_password

MAX_EVENTS = 10_000  # per stream, approximately (XADD MAXLEN ~)

# KEYS: the endpoints' hash, the event streams (all, this endpoint's); ARGV: the
# endpoint, the state expected ("" none), the new state ("" forget it), the
# channel, the streams' length, then the event's fields (none: no event).
_SAVE = """
local current = redis.call('hget', KEYS[1], ARGV[1])
if (current or '') ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('hdel', KEYS[1], ARGV[1]) else redis.call('hset', KEYS[1], ARGV[1], ARGV[3]) end
if #ARGV > 5 then
  local fields = {unpack(ARGV, 6)}
  redis.call('xadd', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(fields))
  redis.call('xadd', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', unpack(fields))
end
redis.call('publish', ARGV[4], ARGV[1])
return 1
"""


class Keys:
    """The names under one namespace, so several deployments may share a Redis."""

    def __init__(self, namespace: str) -> None:
        self.endpoints = f"{namespace}:routing:endpoints"
        self.events = f"{namespace}:routing:events"
        self.changed = f"{namespace}:routing:changed"
        self.lease = f"{namespace}:routing:rollout-lease"
        self.pins = f"{namespace}:pins"  # model: pinned version (serving/shared_pins.py)
        self.pins_changed = f"{namespace}:pins:changed"
        self._namespace = namespace

    def events_of(self, endpoint: str) -> str:
        return f"{self._namespace}:routing:events:{endpoint}"

    def windows_of(self, endpoint: str) -> str:
        """Each replica's windows of the endpoint's running rollout (shared_routing.py)."""
        return f"{self._namespace}:routing:windows:{endpoint}"


class RedisRoutingStore:
    shared = True

    def __init__(self, url: str, namespace: str = "turnout") -> None:
        self.url = url
        self.keys = Keys(namespace)
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, decode_responses=True)
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            raise StoreFailed(f"Redis at {without_password(url)} does not answer: {exc}") from None
        self._save = self._redis.register_script(_SAVE)
        self._seen: dict[str, str] = {}  # endpoint: its state as this replica last saw it stored ("" none)
        self.saves = 0  # made here so far: a read of the store that a save here overtook is stale (SharedRouting)

    def saw(self, endpoint: str, stored: str | None) -> None:
        """``endpoint``'s state as stored (its JSON; None: none) was taken up here: what a save here replaces."""
        self._seen[endpoint] = stored or ""

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            found = cast(dict[str, str], self._redis.hgetall(self.keys.endpoints))  # decode_responses: str
        except redis.RedisError as exc:
            raise StoreFailed(str(exc)) from None
        self._seen.update(found)
        return {endpoint: json.loads(state) for endpoint, state in found.items()}

    def state_of(self, endpoint: str) -> dict[str, Any] | None:
        try:
            found = cast(str | None, self._redis.hget(self.keys.endpoints, endpoint))
        except redis.RedisError as exc:
            raise StoreFailed(str(exc)) from None
        return None if found is None else dict(json.loads(found))

    def save(self, endpoint: str, state: dict[str, Any] | None, event: tuple[str, str, str] | None = None) -> None:
        """Replace (``None``: forget) an endpoint's state, log ``(kind, detail,
        actor)``, and tell the other replicas, at once; ``StoreConflict`` (nothing
        written) when the state stored is no longer the one this replica last saw."""
        stored = "" if state is None else json.dumps(state, sort_keys=True)
        fields: list[str] = []
        if event is not None:
            kind, detail, actor = event
            fields = ["endpoint", endpoint, "at", repr(time.time()), "kind", kind, "detail", detail, "actor", actor]
        keys = [self.keys.endpoints, self.keys.events, self.keys.events_of(endpoint)]
        try:
            saved = self._save(keys, [endpoint, self._seen.get(endpoint, ""), stored, self.keys.changed, MAX_EVENTS,
                                      *fields])  # fmt: skip
        except redis.RedisError as exc:
            raise StoreFailed(str(exc)) from None
        if not saved:
            raise StoreConflict(f"another replica changed the routing of {endpoint} meanwhile")
        self._seen[endpoint] = stored
        self.saves += 1

    def log(self, endpoint: str, kind: str, detail: str, actor: str) -> None:
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                self._logged(pipe, endpoint, kind, detail, actor)
                pipe.execute()
        except redis.RedisError as exc:
            raise StoreFailed(str(exc)) from None

    def _logged(self, pipe: Any, endpoint: str, kind: str, detail: str, actor: str) -> None:
        fields = {"endpoint": endpoint, "at": repr(time.time()), "kind": kind, "detail": detail, "actor": actor}
        pipe.xadd(self.keys.events, fields, maxlen=MAX_EVENTS, approximate=True)
        pipe.xadd(self.keys.events_of(endpoint), fields, maxlen=MAX_EVENTS, approximate=True)

    def events(self, endpoint: str | None = None, limit: int = 100) -> list[LoggedEvent]:
        """The latest ``limit`` events, oldest first; an event's id is its stream entry's, as one number."""
        key = self.keys.events if endpoint is None else self.keys.events_of(endpoint)
        try:
            entries = cast(list[tuple[str, dict[str, str]]], self._redis.xrevrange(key, count=limit))
        except redis.RedisError as exc:
            raise StoreFailed(str(exc)) from None
        return [_event(entry_id, fields) for entry_id, fields in reversed(entries)]

    def close(self) -> None:
        self._redis.close()


def _event(entry_id: str, fields: dict[str, str]) -> LoggedEvent:
    milliseconds, _, sequence = entry_id.partition("-")
    return LoggedEvent(int(milliseconds) * 1000 + int(sequence), fields["endpoint"], float(fields["at"]),
                       fields["kind"], fields["detail"], fields["actor"])  # fmt: skip
