"""Pinned versions and the history of each model's default version, kept in
a small JSON file (written whole, then renamed into place) so a pin and a
rollback survive a restart."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

HISTORY = 20  # earlier defaults kept per model, for rollback


class PinStore:
    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._pins: dict[str, int] = {}
        self._history: dict[str, list[int]] = {}
        if path is not None and path.exists():
            document = json.loads(path.read_text(encoding="utf-8"))
            self._pins = {str(k): int(v) for k, v in document.get("pins", {}).items()}
            self._history = {str(k): [int(x) for x in v] for k, v in document.get("history", {}).items()}

    def pinned(self, model: str) -> int | None:
        return self._pins.get(model)

    def pin(self, model: str, version: int) -> None:
        self._pins[model] = version
        self._save()

    def unpin(self, model: str) -> None:
        if self._pins.pop(model, None) is not None:
            self._save()

    def history(self, model: str) -> list[int]:
        """Earlier default versions, oldest first."""
        return list(self._history.get(model, ()))

    def default_changed(self, model: str, previous: int) -> None:
        """``previous`` was the default until now."""
        earlier = self._history.setdefault(model, [])
        if earlier and earlier[-1] == previous:
            return
        earlier.append(previous)
        del earlier[:-HISTORY]
        self._save()

    def forget_last(self, model: str) -> None:
        """The last earlier default is the default again (a rollback)."""
        earlier = self._history.get(model)
        if earlier:
            earlier.pop()
            self._save()

    def _save(self) -> None:
        if self._path is None:
            return
        with self._lock:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps({"pins": self._pins, "history": self._history}, indent=1, sort_keys=True)
            temporary = self._path.with_name(self._path.name + ".tmp")
            temporary.write_text(text, encoding="utf-8")
            os.replace(temporary, self._path)
