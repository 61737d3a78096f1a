"""One (re)load of a model's versions, decided version by version: which
go live, which keep serving from the load before, which failed and why.

The rules, so a reload never makes things worse: a version whose files are
unchanged is kept as it is (no second copy in memory); a version that fails
to load keeps its earlier load serving if it had one; if any failed, the
live versions they were to replace keep serving; and if nothing at all can
serve (a restart, an eviction), the newest older version that loads does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from turnout.model.loader import LoadFailed
from turnout.model.repository import ModelSource
from turnout.serving.served import ServedVersion, State

log = logging.getLogger("turnout.registry")

Make = Callable[[int], Awaitable[ServedVersion]]  # load one version and make it servable; raises LoadFailed
Digests = Callable[[list[int]], Awaitable[dict[int, str]]]  # the versions' file digests


@dataclass(slots=True)
class Outcome:
    live: dict[int, ServedVersion] = field(default_factory=dict)
    states: dict[int | None, tuple[State, str]] = field(default_factory=dict)
    digests: dict[int, str] = field(default_factory=dict)  # each live version's files when loaded

    def keep(self, version: int, served: ServedVersion, digest: str, reason: str = "") -> None:
        self.live[version], self.digests[version] = served, digest
        self.states[version] = (State.READY, reason)

    def failures(self, wanted: set[int]) -> dict[int, str]:
        """The wanted versions that did not load as they are now, and why."""
        return {v: reason for v in wanted if (reason := self.states.get(v, (State.READY, ""))[1])}


async def load_versions(
    source: ModelSource,
    wanted: set[int],
    digests: dict[int, str],
    live: dict[int, ServedVersion],
    live_digests: dict[int, str],
    make: Make,
    failed_to_load: Callable[[int], object],
) -> Outcome:
    """Load the ``wanted`` versions (``digests``: their files now) beside
    what is ``live``, by the rules above. ``failed_to_load`` counts a failure."""
    name = source.name
    outcome = Outcome()
    for version in sorted(wanted):
        previous = live.get(version)
        if previous is not None and live_digests.get(version) == digests[version]:
            outcome.keep(version, previous, digests[version])
            continue
        try:
            served = await make(version)
        except LoadFailed as exc:
            log.error("model %s version %d not loaded: %s", name, version, exc)
            failed_to_load(version)
            if previous is not None:
                reason = f"reload failed, still serving the earlier load: {exc}"
                outcome.keep(version, previous, live_digests[version], reason)
            else:
                outcome.states[version] = (State.UNAVAILABLE, str(exc))
            continue
        outcome.keep(version, served, digests[version])
    newly_failed = [v for v in wanted if v not in outcome.live]
    if newly_failed:  # what they were to replace keeps serving (if its directory is still there)
        for version, served in live.items():
            if version not in outcome.live and version in source.on_disk:
                reason = f"kept serving: version(s) {newly_failed} failed to load"
                outcome.keep(version, served, live_digests[version], reason)
    return outcome


async def load_older(source: ModelSource, wanted: set[int], outcome: Outcome, make: Make, digests: Digests) -> None:
    """Every wanted version failed and none serves: the newest older version
    that loads (of the three newest) serves instead."""
    failed = sorted(v for v in wanted if v not in outcome.live)
    for version in sorted((v for v in source.on_disk if v not in wanted), reverse=True)[:3]:
        try:
            served = await make(version)
        except LoadFailed as exc:
            log.error("model %s: older version %d not loaded either: %s", source.name, version, exc)
            continue
        digest = (await digests([version]))[version]
        outcome.keep(version, served, digest, f"serving instead: version(s) {failed} failed to load")
        log.warning("model %s: version %d serves instead of %s, which failed to load", source.name, version, failed)
        return
