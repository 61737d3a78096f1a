"""Watching the repository: new, changed and removed model directories are
loaded, reloaded and unloaded while the server runs.

A change is acted on once it has settled: the same digest on two scans in a
row, so a version directory still being copied is not loaded half-written.
The registry's reload is incremental (unchanged versions stay as they are),
and a version that fails to load never replaces a working one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("turnout.watcher")

Digests = dict[str, str]  # model directory name -> digest of what it holds


@dataclass(frozen=True, slots=True)
class Changes:
    load: tuple[str, ...]  # new or changed, and settled
    remove: tuple[str, ...]  # gone, and still gone


def settled_changes(applied: Digests, previous: Digests, current: Digests) -> Changes:
    """What to do now, given the digests last acted on, the previous scan and this one."""
    load = tuple(
        name for name, digest in sorted(current.items()) if applied.get(name) != digest and previous.get(name) == digest
    )
    remove = tuple(name for name in sorted(applied) if name not in current and name not in previous)
    return Changes(load, remove)


class RepositoryWatcher:
    def __init__(
        self,
        scan: Callable[[Digests | None], Digests],
        load: Callable[[str], Awaitable[None]],
        remove: Callable[[str], Awaitable[None]],
        interval: float,
    ) -> None:
        self._scan = scan
        self._load = load
        self._remove = remove
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take the repository as it is now as the starting point (it was just loaded), then watch."""
        applied = await asyncio.to_thread(self._scan, None)
        self._task = asyncio.get_running_loop().create_task(self._run(applied))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, applied: Digests) -> None:
        previous = applied
        while True:
            await asyncio.sleep(self._interval)
            try:
                current = await asyncio.to_thread(self._scan, previous)
            except OSError as exc:  # the repository itself unreadable for a moment (a remount)
                log.warning("cannot scan the model repository: %s", exc)
                continue
            changes = settled_changes(applied, previous, current)
            for name in changes.load:
                log.info("model %s changed on disk: loading", name)
                await self._apply(self._load, name, "load")
                applied[name] = current[name]
            for name in changes.remove:
                log.info("model %s removed from the repository: unloading", name)
                await self._apply(self._remove, name, "unload")
                applied.pop(name, None)
            previous = current

    async def _apply(self, change: Callable[[str], Awaitable[None]], name: str, what: str) -> None:
        try:
            await change(name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one model's failure is logged; the watch goes on
            message = getattr(exc, "message", None) or str(exc)
            log.error("model %s: %s after a repository change failed: %s", name, what, message)
