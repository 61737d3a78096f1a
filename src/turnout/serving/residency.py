"""Which models stay in memory: a budget (a number of models and/or bytes)
kept by evicting the least recently used, and an idle time after which a
model is unloaded (scale to zero). Pure: the registry tells it what loaded,
unloaded and was used, and does the evicting it advises.

Bytes are an estimate: the artifacts' size on disk times the instances, which
is what ONNX Runtime's sessions hold in the main for tabular models and
transformers alike; the operator sets the budget with that in mind.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Budget:
    max_models: int | None = None
    max_bytes: int | None = None
    idle_seconds: float | None = None  # unload a model unused this long

    @property
    def limited(self) -> bool:
        return self.max_models is not None or self.max_bytes is not None


class Residency:
    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._loaded: OrderedDict[str, tuple[int, float]] = OrderedDict()  # name -> (bytes, last used); LRU first

    def loaded(self, name: str, size: int, now: float) -> None:
        self._loaded[name] = (size, now)
        self._loaded.move_to_end(name)

    def unloaded(self, name: str) -> None:
        self._loaded.pop(name, None)

    def used(self, name: str, now: float) -> None:
        entry = self._loaded.get(name)
        if entry is not None:
            self._loaded[name] = (entry[0], now)
            self._loaded.move_to_end(name)

    def to_evict(self, keep: str, busy: frozenset[str] = frozenset()) -> list[str]:
        """The least recently used models to unload so the rest fit the budget,
        never ``keep`` (just loaded) or a ``busy`` one (requests in flight)."""
        budget = self.budget
        count = len(self._loaded)
        size = sum(bytes_ for bytes_, _ in self._loaded.values())
        evict = []
        for name, (bytes_, _) in self._loaded.items():
            over_count = budget.max_models is not None and count > budget.max_models
            over_bytes = budget.max_bytes is not None and size > budget.max_bytes
            if not (over_count or over_bytes):
                break
            if name == keep or name in busy:
                continue
            evict.append(name)
            count -= 1
            size -= bytes_
        return evict

    def idle(self, now: float) -> list[str]:
        """Models unused for longer than the idle time."""
        limit = self.budget.idle_seconds
        if limit is None:
            return []
        return [name for name, (_, last) in self._loaded.items() if now - last >= limit]

    def fits(self, size: int) -> bool:
        """Whether one model of ``size`` bytes can ever fit alone."""
        return self.budget.max_bytes is None or size <= self.budget.max_bytes
