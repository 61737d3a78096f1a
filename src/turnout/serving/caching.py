"""A live version's response cache on the data plane's path: a request's key
(or none, when it asks to bypass), its lookup and the answer's storing, each
counted (``turnout_cache_*``); a hit is recorded as an answer like any other."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from turnout.model.tensors import Outputs, Tensors
from turnout.observability.metrics import Metrics
from turnout.serving.outcomes import Outcomes
from turnout.serving.response_cache import cache_key, input_bytes, wanted
from turnout.serving.served import ServedVersion


class Caching:
    def __init__(self, metrics: Metrics, outcomes: Outcomes) -> None:
        self._metrics = metrics
        self._outcomes = outcomes

    def key(
        self, served: ServedVersion, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any]
    ) -> bytes | None:
        """The request's key in ``served``'s cache; None when it asks not to use it, or its
        inputs are larger than ``max_input_bytes`` (raises ``InvalidRequest`` for a bypass
        parameter that is not a boolean)."""
        if wanted(parameters) and input_bytes(inputs) <= served.config.cache.max_input_bytes:
            return cache_key(served.model, served.version, inputs, outputs, parameters)
        self._metrics.cache_lookups(served.model, str(served.version), "bypass").inc()
        return None

    def lookup(
        self, served: ServedVersion, key: bytes, inputs: Tensors, protocol: str, variant: str, started: float
    ) -> Outputs | None:
        """The answer in this replica's level (counted and watched as answered), or None:
        then, for a version with a shared level, ``lookup_shared``; else a miss."""
        assert served.cache is not None  # a key is made only for a version with a cache
        found = served.cache.get(key)
        if found is not None:
            self._metrics.cache_lookups(served.model, str(served.version), "hit").inc()
            self._outcomes.cached(served, inputs, found, protocol, variant, started)
        elif served.shared_cache is None:
            self._metrics.cache_lookups(served.model, str(served.version), "miss").inc()
        return found

    async def lookup_shared(
        self,
        served: ServedVersion,
        key: bytes,
        inputs: Tensors,
        outputs: Sequence[str],
        protocol: str,
        variant: str,
        started: float,
    ) -> Outputs | None:
        """The answer another replica (or this one) put in the shared level, kept in this
        replica's level too; None: a miss (Redis down or slow included)."""
        assert served.cache is not None and served.shared_cache is not None
        found = await served.shared_cache.get(key)
        version = str(served.version)
        if found is not None and set(found) != set(outputs):
            found = None  # not what a replica stores for this key (the outputs asked are keyed): never served
        if found is None:
            self._metrics.cache_lookups(served.model, version, "miss").inc()
            return None
        self._metrics.cache_lookups(served.model, version, "shared_hit").inc()
        self._stored(served, served.cache.put(key, found))
        self._outcomes.cached(served, inputs, found, protocol, variant, started)
        return found

    def store(self, served: ServedVersion, key: bytes, outputs: Outputs) -> None:
        """A miss's answer, kept (only answers reach here: a failure raised before)."""
        assert served.cache is not None
        self._stored(served, served.cache.put(key, outputs))
        if served.shared_cache is not None:
            served.shared_cache.put(key, outputs)

    def _stored(self, served: ServedVersion, dropped: int) -> None:
        assert served.cache is not None
        version = str(served.version)
        if dropped:
            self._metrics.cache_evictions(served.model, version).inc(dropped)
        self._metrics.cache_bytes(served.model, version).set(served.cache.bytes)
