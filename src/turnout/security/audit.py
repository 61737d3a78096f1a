"""The audit log: one JSON object per line, appended, never rewritten.

Every admin action (allowed or refused) and every authentication failure is
recorded with the time, the principal, the action, its target, the result and
the client's address. The file is opened with ``O_APPEND`` (each line lands
at the end in one ``write``, whatever else writes to it) and mode 0600; it is
never truncated or rewritten by turnout. Nothing secret is written: a
principal is its name, a failed credential is described, not quoted.

Anyone can cause an authentication failure, so the log is bounded against a
client without a credential (issue 15: 30 KB model names made 52 MB/s of
log; a 1 MB ``model_name`` made a 1 MB line):

- every field is cut to ``max_field_chars`` (with a marker saying how long it
  was) and the whole line to ``max_line_bytes``;
- authentication failures pass a token bucket (``failures_per_second``,
  ``failure_burst``); those over it are counted and written later as one
  record, ``"<n> authentication failures not recorded"``, before the next line
  that is written (or at close). Admin actions are never throttled;
- the file is rotated once it would pass ``max_bytes``: ``audit.log`` becomes
  ``audit.log.1`` (``.1`` becomes ``.2``, ... up to ``keep`` old files; the
  oldest is deleted). Renames are atomic, so a crash at any point loses no
  line that was written.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from turnout.security.ratelimit import Rate, TokenBucket

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_SHORTEST_FIELD = 16  # the least a field is cut to while a line is made to fit
# the longest line of fields cut to _SHORTEST_FIELD (12 escaped bytes a character) fits this
_LEAST_LINE = 1536


@dataclass(frozen=True, slots=True)
class AuditEvent:
    principal: str  # a name, "" when nobody was authenticated
    action: str  # "authenticate", "load", "unload", ...
    target: str  # a model name, a path
    result: str  # "allowed", "denied", "failed", "ok"
    source: str  # the client's address
    detail: str = ""  # why, for a refusal
    time: str = ""  # ISO 8601, UTC; filled in when recorded

    @property
    def is_auth_failure(self) -> bool:
        """What a client without a credential can cause at will: throttled."""
        return self.action.startswith("authenticate") and self.result != "ok"


class AuditLog:
    """Appends events to ``path``. Each line is one unbuffered ``write``, so a
    crash loses no event that was recorded.

    Thread-safe (a lock around each record): the event loop records, and so
    may a worker thread. A record costs one ``write`` (two when a summary of
    dropped failures goes first, a few renames when the file rotates)."""

    def __init__(
        self,
        path: Path,
        clock: Callable[[], float] = time.time,
        *,
        max_field_chars: int = 256,
        max_line_bytes: int = 2048,
        failures_per_second: float = 10.0,
        failure_burst: int = 100,
        max_bytes: int = 64 << 20,
        keep: int = 5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_field_chars < _SHORTEST_FIELD or max_line_bytes < _LEAST_LINE or keep < 1 or max_bytes < 0:
            raise ValueError(
                f"the audit log needs max_field_chars >= {_SHORTEST_FIELD}, max_line_bytes >= {_LEAST_LINE}, keep >= 1"
            )
        self.path = path
        self._clock = clock
        self._monotonic = monotonic
        self._max_field = max_field_chars
        self._max_line = max_line_bytes
        self._max_bytes = max_bytes  # 0: never rotate
        self._keep = keep
        self._rate = Rate(failures_per_second, failure_burst)
        self._failures = TokenBucket(self._rate, monotonic())
        self._dropped = 0  # failures not recorded since the last summary
        self._dropped_since = ""  # the time of the first of them
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, _OPEN_FLAGS, 0o600)
        self._size = os.fstat(self._fd).st_size

    def record(self, event: AuditEvent) -> None:
        with self._lock:
            now = self._clock()
            if event.is_auth_failure and self._failures.take(self._monotonic()) > 0:
                if not self._dropped:
                    self._dropped_since = _timestamp(now)
                self._dropped += 1
                return
            self._write_summary(now)
            self._write(event, now)

    def close(self) -> None:
        with self._lock:
            self._write_summary(self._clock())
            os.close(self._fd)

    def _write_summary(self, now: float) -> None:
        if not self._dropped:
            return
        detail = (
            f"{self._dropped} authentication failures not recorded since {self._dropped_since} "
            f"(over {self._rate.per_second:g}/s, burst {self._rate.burst})"
        )
        self._dropped = 0
        self._write(AuditEvent("", "authenticate", "", "not recorded", "", detail), now)

    def _write(self, event: AuditEvent, now: float) -> None:
        line = self._line(event, now)
        if self._max_bytes and self._size and self._size + len(line) > self._max_bytes:
            self._rotate()
        os.write(self._fd, line)
        self._size += len(line)

    def _line(self, event: AuditEvent, now: float) -> bytes:
        """The event as one JSON line of at most ``max_line_bytes``: fields are
        cut to ``max_field_chars``, then shorter while the escaped line is
        still too long (``\\uXXXX`` escapes make a character up to 12 bytes)."""
        stamped = asdict(event)
        stamped["time"] = _timestamp(now)
        limit = self._max_field
        while True:
            fields = {key: value if key == "time" else _clip(value, limit) for key, value in stamped.items()}
            line = (json.dumps(fields, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
            if len(line) <= self._max_line or limit <= _SHORTEST_FIELD:
                return line
            limit = max(_SHORTEST_FIELD, limit // 2)

    def _rotate(self) -> None:
        """``audit.log.{k}`` -> ``.{k+1}`` from the oldest down, the live file
        -> ``.1``, and a fresh live file. Every step is a rename, so each line
        is in exactly one file whenever the process stops."""
        for number in range(self._keep - 1, 0, -1):
            older = _numbered(self.path, number)
            if older.exists():
                os.replace(older, _numbered(self.path, number + 1))
        os.replace(self.path, _numbered(self.path, 1))
        fresh = os.open(self.path, _OPEN_FLAGS, 0o600)
        os.close(self._fd)
        self._fd, self._size = fresh, 0


class NoAudit:
    """For a server run without an audit log file."""

    def record(self, event: AuditEvent) -> None:
        pass

    def close(self) -> None:
        pass


def _timestamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text)} chars]"


def _numbered(path: Path, number: int) -> Path:
    return path.with_name(f"{path.name}.{number}")


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of the log, oldest first, reaching into the
    rotated files (``.1``, ``.2``, ...) when the live one holds fewer."""
    found: deque[str] = deque(maxlen=lines)
    with path.open(encoding="utf-8", errors="replace") as log:
        found.extend(line.rstrip("\n") for line in log)
    number = 1
    while len(found) < lines and _numbered(path, number).is_file():
        with _numbered(path, number).open(encoding="utf-8", errors="replace") as log:
            older = [line.rstrip("\n") for line in deque(log, maxlen=lines - len(found))]
        found.extendleft(reversed(older))
        number += 1
    return list(found)


def follow(path: Path, poll_seconds: float = 0.5) -> Iterator[str]:
    """Lines appended from now on (the file's end is found before this returns),
    as they come (for ``turnout audit tail -f``), following the live file
    across rotation: the old file is read to its end, then the new one from
    its start.

    Polls the file's size: a CLI reader, not part of the server."""
    log = path.open(encoding="utf-8", errors="replace")
    log.seek(0, os.SEEK_END)
    return _follow(path, log, poll_seconds)


def _follow(path: Path, log: IO[str], poll_seconds: float) -> Iterator[str]:
    try:
        pending = ""
        while True:
            chunk = log.read()
            if chunk:
                pending += chunk
                *complete, pending = pending.split("\n")
                yield from complete
                continue
            if _replaced(path, log):
                rest = pending + log.read()  # what was written before the rename
                yield from (line for line in rest.split("\n") if line)
                pending = ""
                log.close()
                log = path.open(encoding="utf-8", errors="replace")
                continue
            time.sleep(poll_seconds)
    finally:
        log.close()


def _replaced(path: Path, log: IO[str]) -> bool:
    """Whether ``path`` now names another file than the one open (rotated)."""
    try:
        return os.stat(path).st_ino != os.fstat(log.fileno()).st_ino
    except FileNotFoundError:  # between the rename and the new file: not yet
        return False
