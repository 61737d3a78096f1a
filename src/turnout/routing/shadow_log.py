"""The shadow disagreement log: JSON lines appended from one writer task, in
order, without holding the event loop or unbounded memory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("turnout.shadow")

LOG_BACKLOG = 1000  # disagreement lines waiting for the disk; beyond, lines are lost (and counted)


def _json_default(value: object) -> str:
    """orjson's fallback: text outputs arrive as bytes; anything else odd is written as its str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


@dataclass(slots=True)
class JsonLines:
    """Appends JSON lines to a file from a thread, batching whatever queued up meanwhile.

    Lines are serialised on the loop (cheap: sampled and truncated) and appended
    by one writer task, so their order is kept. orjson writes nan and infinities
    as null. A disk that cannot keep up loses lines past ``LOG_BACKLOG`` (counted
    in ``lost``) rather than holding memory; a failing disk is logged, not raised.
    """

    path: Path
    lost: int = 0
    _pending: list[bytes] = field(default_factory=list)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _closing: bool = False
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="shadow-log-writer")

    def write(self, record: Mapping[str, Any]) -> None:
        if len(self._pending) >= LOG_BACKLOG:
            self.lost += 1
            return
        self._pending.append(orjson.dumps(record, default=_json_default) + b"\n")
        self._wake.set()

    async def close(self, deadline: float) -> None:
        """Write what is pending, until ``deadline`` (loop time)."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending:
                lines, self._pending = self._pending, []
                try:
                    await asyncio.to_thread(_append, self.path, b"".join(lines))
                except OSError as exc:
                    log.warning("cannot write the shadow disagreement log %s: %s", self.path, exc)
            if self._closing and not self._pending:
                return


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as file:
        file.write(data)
