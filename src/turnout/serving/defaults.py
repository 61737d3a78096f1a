"""A model's default version, moved on purpose: pin a version (loading it
first if the version policy left it out), unpin, roll back to the default
before. The registry decides the default (a pin, else ``default_version``,
else the highest live version) and keeps pins and history in its PinStore;
this module is the operations that move it.

Concurrency: event loop only. A pin loads its version beside what serves and
pins it once live, so requests go from the version serving straight to the
pinned one, never through a third.
"""

from __future__ import annotations

from turnout.errors import InvalidRequest, NotFound, Unavailable
from turnout.serving.registry import ModelRegistry
from turnout.serving.served import VersionsFailed


class DefaultVersions:
    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry
        self._pins = registry.pins

    async def pin(self, name: str, version: int, announce: bool = True) -> None:
        """Make ``version`` the default, loading it if the version policy left it out
        (``announce``: shared with the other replicas, when they share pins)."""
        registry = self._registry
        registry.require(name)
        if version not in registry.versions(name):
            on_disk = await registry.on_disk(name)
            if version not in on_disk:
                raise NotFound(f"model '{name}' has no version {version} on disk (it has {on_disk})")
        before = registry.default_version(name)
        earlier_pin = self._pins.pinned(name)
        with self._pins.pinning(name, version):
            if version not in registry.versions(name):
                try:
                    await registry.load(name)
                except VersionsFailed as exc:
                    if version in exc.reasons:  # the pin cannot serve: nothing changes
                        raise
            if version not in registry.versions(name):
                raise Unavailable(f"model '{name}' version {version} could not be loaded; nothing was pinned")
            self._pins.pin(name, version, announce)
        registry.note_default(name, before)
        if earlier_pin not in (None, version) and earlier_pin not in set(registry.policy_versions(name)):
            await registry.load(name)  # the earlier pin's version leaves with its pin

    async def unpin(self, name: str, announce: bool = True) -> None:
        registry = self._registry
        registry.require(name)
        before = registry.default_version(name)
        pinned = self._pins.pinned(name)
        self._pins.unpin(name, announce)
        if pinned is not None and pinned not in set(registry.policy_versions(name)):
            await registry.load(name)  # the pinned version leaves with its pin
        registry.note_default(name, before)

    async def rollback(self, name: str) -> int:
        """Back to the default before the current one (pinned); returns its version."""
        self._registry.require(name)
        current = self._registry.default_version(name)
        history = self._pins.history(name)
        earlier = [v for v in history if v != current]
        if not earlier:
            raise InvalidRequest(f"model '{name}' has no earlier default version to roll back to")
        target = earlier[-1]
        await self.pin(name, target)
        self._pins.set_history(name, history[: len(history) - 1 - history[::-1].index(target)])  # before target
        return target

    async def follow(self, name: str, version: int | None) -> None:
        """Another replica's pin (None: its unpin), taken up here and not announced
        again (``shared_pins``); a model this replica does not serve is left alone."""
        if not self._registry.known(name) or self._pins.pinned(name) == version:
            return
        if version is None:
            await self.unpin(name, announce=False)
        else:
            await self.pin(name, version, announce=False)

    def pinned(self, name: str) -> int | None:
        return self._pins.pinned(name)

    def history(self, name: str) -> list[int]:
        return self._pins.history(name)

    def default_version(self, name: str) -> int | None:
        return self._registry.default_version(name)
