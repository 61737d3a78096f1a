"""A live version's response cache on the data plane's path: a request's key
(or none, when it asks to bypass), its lookup and the answer's storing, each
counted (``turnout_cache_*``); a hit is recorded as an answer like any other."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from turnout.model.tensors import Outputs, Tensors
from turnout.observability.metrics import Metrics
from turnout.serving.outcomes import Outcomes
from turnout.serving.response_cache import cache_key, wanted
from turnout.serving.served import ServedVersion


class Caching:
    def __init__(self, metrics: Metrics, outcomes: Outcomes) -> None:
        self._metrics = metrics
        self._outcomes = outcomes

    def key(
        self, served: ServedVersion, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any]
    ) -> bytes | None:
        """The request's key in ``served``'s cache; None when it asks not to use it
        (raises ``InvalidRequest`` for a bypass parameter that is not a boolean)."""
        if wanted(parameters):
            return cache_key(served.model, served.version, inputs, outputs, parameters)
        self._metrics.cache_lookups(served.model, str(served.version), "bypass").inc()
        return None

    def lookup(
        self, served: ServedVersion, key: bytes, inputs: Tensors, protocol: str, variant: str, started: float
    ) -> Outputs | None:
        """The cached answer (counted and watched as answered), or None: a miss."""
        assert served.cache is not None  # a key is made only for a version with a cache
        found = served.cache.get(key)
        self._metrics.cache_lookups(served.model, str(served.version), "miss" if found is None else "hit").inc()
        if found is not None:
            self._outcomes.cached(served, inputs, found, protocol, variant, started)
        return found

    def store(self, served: ServedVersion, key: bytes, outputs: Outputs) -> None:
        """A miss's answer, kept (only answers reach here: a failure raised before)."""
        cache = served.cache
        assert cache is not None
        dropped = cache.put(key, outputs)
        version = str(served.version)
        if dropped:
            self._metrics.cache_evictions(served.model, version).inc(dropped)
        self._metrics.cache_bytes(served.model, version).set(cache.bytes)
