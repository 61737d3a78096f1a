"""Pinned versions, the history of each model's default version, and the
signature clients last relied on, kept in a small JSON file (written whole,
then renamed into place) so pins, rollbacks and the signature check survive
a restart.

A pin is an operator's change: if it cannot be saved it is not made (the
error reaches the caller). The history and the signature are bookkeeping:
a failed save is logged and the server goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from turnout.files import write_json_atomically
from turnout.model.contract import Contract
from turnout.model.signature import Signature, TensorSpec

log = logging.getLogger("turnout.pins")

HISTORY = 20  # earlier defaults kept per model, for rollback


class PinStore:
    def __init__(self, path: Path | None = None, announce: Callable[[str, int | None], None] | None = None) -> None:
        self._path = path
        # shares a pin made here with the other replicas before it is made (shared_pins.RedisPins)
        self._announce = announce
        self._lock = threading.Lock()
        self._pins: dict[str, int] = {}
        self._history: dict[str, list[int]] = {}
        self._contracts: dict[str, dict[str, Any]] = {}
        # versions being pinned, not saved: loaded beside what serves, and pinned once live,
        # so the default goes from the version serving straight to the pinned one (issue 16)
        self._pinning: dict[str, int] = {}
        if path is not None and path.exists():
            document = json.loads(path.read_text(encoding="utf-8"))
            self._pins = {str(k): int(v) for k, v in document.get("pins", {}).items()}
            self._history = {str(k): [int(x) for x in v] for k, v in document.get("history", {}).items()}
            self._contracts = dict(document.get("contracts", {}))

    def pinned(self, model: str) -> int | None:
        return self._pins.get(model)

    def kept(self, model: str) -> set[int]:
        """The versions pins keep loaded whatever the version policy: the pinned one, one being pinned."""
        return {v for v in (self._pins.get(model), self._pinning.get(model)) if v is not None}

    @contextlib.contextmanager
    def pinning(self, model: str, version: int) -> Iterator[None]:
        """While a pin is under way: loads keep ``version`` beside what serves."""
        self._pinning[model] = version
        try:
            yield
        finally:
            self._pinning.pop(model, None)

    def all_pins(self) -> dict[str, int]:
        return dict(self._pins)

    def pin(self, model: str, version: int, announce: bool = True) -> None:
        self.restore(model, version, announce)

    def unpin(self, model: str, announce: bool = True) -> None:
        self.restore(model, None, announce)

    def restore(self, model: str, version: int | None, announce: bool = True) -> None:
        """Pin ``version`` (None: no pin); saved and shared (``announce``: not when it is
        another replica's pin taken up here) first, so a failed save changes nothing."""
        pins = dict(self._pins)
        if version is None:
            pins.pop(model, None)
        else:
            pins[model] = version
        if pins == self._pins:
            if announce and self._announce is not None:
                # unchanged here, but maybe not in Redis: this replica may not have taken up a newer pin yet
                self._announce(model, version)
            return
        self._write(pins, self._history, self._contracts)
        if announce and self._announce is not None:
            try:
                self._announce(model, version)
            except Exception:  # not shared, so not made: the file says what it said
                self._write(self._pins, self._history, self._contracts)
                raise
        self._pins = pins

    def history(self, model: str) -> list[int]:
        """Earlier default versions, oldest first."""
        return list(self._history.get(model, ()))

    def set_history(self, model: str, versions: list[int]) -> None:
        self._history[model] = list(versions)[-HISTORY:]
        self._save_quietly()

    def default_changed(self, model: str, previous: int) -> None:
        """``previous`` was the default until now."""
        earlier = self._history.setdefault(model, [])
        if earlier and earlier[-1] == previous:
            return
        earlier.append(previous)
        del earlier[:-HISTORY]
        self._save_quietly()

    def contract(self, model: str) -> Contract | None:

        saved = self._contracts.get(model)
        if saved is None:
            return None
        signature = Signature(
            tuple(TensorSpec(t["name"], t["datatype"], tuple(t["shape"])) for t in saved["inputs"]),
            tuple(TensorSpec(t["name"], t["datatype"], tuple(t["shape"])) for t in saved["outputs"]),
        )
        return Contract(int(saved["version"]), signature, int(saved["max_batch_size"]))

    def remember_contract(self, model: str, contract: Contract) -> None:
        saved = {
            "version": contract.version,
            "inputs": [t.as_metadata() for t in contract.signature.inputs],
            "outputs": [t.as_metadata() for t in contract.signature.outputs],
            "max_batch_size": contract.max_batch_size,
        }
        if self._contracts.get(model) != saved:
            self._contracts[model] = saved
            self._save_quietly()

    def _save_quietly(self) -> None:
        try:
            self._write(self._pins, self._history, self._contracts)
        except OSError as exc:
            log.error("cannot save the version history to %s: %s", self._path, exc)

    def _write(self, pins: dict[str, int], history: dict[str, list[int]], contracts: dict[str, Any]) -> None:
        if self._path is None:
            return
        with self._lock:
            write_json_atomically(self._path, {"pins": pins, "history": history, "contracts": contracts})
