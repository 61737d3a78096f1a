"""The routing in force, per endpoint, and its record: a change is saved
with its event and swapped in (one dict assignment on the event loop, so a
request sees the old route or the new, never half of one).

Two kinds of change. An operator's (``required``) is not made when it
cannot be saved (503), so what is in force is what a restart brings back.
The file's policy and the rollout guard's decisions take effect regardless,
and their save is retried at each tick. Either is not made at all when a
shared store says another replica changed the endpoint since this one last
saw it (``StoreConflict``): an operator's change is then a 409, a guard's
decision is judged again on the newer state once it is taken up here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from turnout.errors import Conflict, Unavailable
from turnout.routing.route import Route, mirrors
from turnout.routing.state_store import LoggedEvent, StateStore, StoreConflict, StoreFailed
from turnout.routing.windows import RolloutWindows

log = logging.getLogger("turnout.routing")

Event = tuple[str, str, str]  # (kind, detail, actor)


class RouteTable:
    def __init__(
        self,
        store: StateStore,
        windows: RolloutWindows,
        stop_mirroring: Callable[[str, frozenset[str]], object] | None = None,
    ) -> None:
        self.routes: dict[str, Route] = {}
        self.store = store
        self._windows = windows
        # an endpoint no longer mirrors to some shadows: (endpoint, those it still mirrors to)
        self.stop_mirroring = stop_mirroring or (lambda endpoint, keep: None)
        self._unsaved: dict[str, Event] = {}  # changes in force but not yet saved: retried
        self._retry_at = 0.0
        self._retry_every = 1.0

    def set(
        self,
        endpoint: str,
        route: Route | None,
        event: Event,
        required: bool = True,
        keep_windows: bool = False,
        local: bool = False,
    ) -> bool:
        """Persist with its event and swap in (see the module's note on
        ``required``); False: not made, a shared store holding a newer state.
        ``local``: a decision about this process's own models (a variant it
        could not load): not written to a store other replicas share."""
        if local and self.store.shared:
            self.install(endpoint, route, keep_windows)
            return True
        state = None if route is None else route.as_state()
        if required:
            self.save(endpoint, state, event)
            self.install(endpoint, route, keep_windows)
            return True
        try:
            self.store.save(endpoint, state, event)
        except StoreConflict as exc:
            log.info("routing of %s not changed (%s): %s; judged again on the newer state", endpoint, event[0], exc)
            return False
        except StoreFailed as exc:
            log.error("routing of %s changed (%s) but not saved, retrying: %s", endpoint, event[0], exc)
            self._unsaved[endpoint] = event
        else:
            self._unsaved.pop(endpoint, None)
        self.install(endpoint, route, keep_windows)
        return True

    def save(self, endpoint: str, state: dict[str, Any] | None, event: Event) -> None:
        """Save an operator's change, or refuse it (503, 409) without changing anything."""
        try:
            self.store.save(endpoint, state, event)
        except StoreConflict as exc:
            raise Conflict(f"{exc}; nothing was changed here (read the routing again, then change it)") from None
        except StoreFailed as exc:
            log.error("routing of %s not changed: the state store failed: %s", endpoint, exc)
            raise Unavailable(f"the routing state could not be saved ({exc}); nothing was changed") from None
        self._unsaved.pop(endpoint, None)

    def install(self, endpoint: str, route: Route | None, keep_windows: bool = False) -> None:
        """Swap in, unsaved; a new or changed rollout judges its own requests
        only; copies still on their way to a shadow the new route leaves out are stopped."""
        before = mirrors(self.routes.get(endpoint))
        if before and not before <= mirrors(route):
            self.stop_mirroring(endpoint, mirrors(route))
        if route is None:
            self.routes.pop(endpoint, None)
        else:
            self.routes[endpoint] = route
        self._windows.follow(endpoint, route, keep_windows)

    def log(self, endpoint: str, kind: str, detail: str, actor: str) -> None:
        """An event without a change (a refusal): logged if the store can."""
        try:
            self.store.log(endpoint, kind, detail, actor)
        except StoreFailed as exc:
            log.error("routing event for %s not logged (%s): %s %s", endpoint, exc, kind, detail)

    def retry_unsaved(self, now: float) -> None:
        """Save again what could not be saved, at most every ``_retry_every`` seconds (doubling to a minute
        while the store fails: a store that hangs holds the loop for its timeout at each try)."""
        if not self._unsaved or now < self._retry_at:
            return
        failed = False
        for endpoint, pending in list(self._unsaved.items()):
            in_force = self.routes.get(endpoint)
            try:
                self.store.save(endpoint, None if in_force is None else in_force.as_state(), pending)
            except StoreConflict:
                pass  # another replica's newer state stands: taken up here as any change is
            except StoreFailed:
                failed = True
                break
            self._unsaved.pop(endpoint, None)
        self._retry_every = min(self._retry_every * 2, 60.0) if failed else 1.0
        self._retry_at = now + self._retry_every

    def events(self, endpoint: str | None, limit: int) -> list[LoggedEvent]:
        return self.store.events(endpoint, limit)
