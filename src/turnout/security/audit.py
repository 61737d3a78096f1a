"""The audit log: one JSON object per line, appended, never rewritten.

Every admin action (allowed or refused) and every authentication failure is
recorded with the time, the principal, the action, its target, the result and
the client's address. The file is opened with ``O_APPEND`` (each line lands
at the end in one ``write``, whatever else writes to it) and mode 0600; it is
never truncated or rewritten by turnout. Nothing secret is written: a
principal is its name, a failed credential is described, not quoted.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True, slots=True)
class AuditEvent:
    principal: str  # a name, "" when nobody was authenticated
    action: str  # "authenticate", "load", "unload", ...
    target: str  # a model name, a path
    result: str  # "allowed", "denied", "failed", "ok"
    source: str  # the client's address
    detail: str = ""  # why, for a refusal
    time: str = ""  # ISO 8601, UTC; filled in when recorded


class AuditLog:
    """Appends events to ``path``. Each ``record`` is one unbuffered write, so
    a crash loses no event that was recorded."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)

    def record(self, event: AuditEvent) -> None:
        stamped = asdict(event)
        stamped["time"] = datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="milliseconds")
        line = json.dumps(stamped, ensure_ascii=True, separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode())

    def close(self) -> None:
        os.close(self._fd)


class NoAudit:
    """For a server run without an audit log file."""

    def record(self, event: AuditEvent) -> None:
        pass

    def close(self) -> None:
        pass


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of the log, oldest first."""
    with path.open(encoding="utf-8", errors="replace") as log:
        return [line.rstrip("\n") for line in deque(log, maxlen=lines)]


def follow(path: Path, poll_seconds: float = 0.5) -> Iterator[str]:
    """Lines appended from now on, as they come (for ``turnout audit tail -f``).

    Polls the file's size: a CLI reader, not part of the server."""
    with path.open(encoding="utf-8", errors="replace") as log:
        log.seek(0, os.SEEK_END)
        pending = ""
        while True:
            chunk = log.read()
            if not chunk:
                time.sleep(poll_seconds)
                continue
            pending += chunk
            *complete, pending = pending.split("\n")
            yield from complete
