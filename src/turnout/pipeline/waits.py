"""Who waits for whom while pipelines load: a pipeline waits for the models
its steps call to finish loading, and a model may itself be a pipeline that
waits. Two pipelines that call each other, loading together, would each wait
out the load timeout for the other; with the waits kept as a graph, the
second to wait finds the loop at once (``cycle``) and its load says so.
Pure: the caller keeps one per server, on its event loop."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class Waits:
    def __init__(self) -> None:
        self._edges: dict[str, dict[str, int]] = {}  # waiter -> {awaited: how many waits}

    def cycle(self, waiter: str, awaited: str) -> list[str] | None:
        """The loop ``waiter`` would close by waiting for ``awaited``
        (``[waiter, awaited, ..., waiter]``), or None."""
        path = self._path(awaited, waiter, set())
        return None if path is None else [waiter, *path]

    @contextmanager
    def waiting(self, waiter: str, awaited: str) -> Iterator[None]:
        edges = self._edges.setdefault(waiter, {})
        edges[awaited] = edges.get(awaited, 0) + 1
        try:
            yield
        finally:
            edges[awaited] -= 1
            if not edges[awaited]:
                del edges[awaited]
            if not edges:
                del self._edges[waiter]

    def _path(self, start: str, goal: str, seen: set[str]) -> list[str] | None:
        if start == goal:
            return [goal]
        seen.add(start)
        for following in self._edges.get(start, ()):
            if following not in seen and (rest := self._path(following, goal, seen)) is not None:
                return [start, *rest]
        return None
