"""The feature lookup step: features for each row's entity id, read from an
online store, as one FP32 tensor.

The Redis backend reads the layout a feature store's Redis online store can
be materialised to, and the simplest one to write yourself: a hash per entity
(``key`` with ``{id}`` replaced), one field per feature, read by
``redis_store.py`` (one round trip for the lookups that arrive together). A
store that cannot be reached is a 503 naming it, never zeros; an entity
without the features, a 400 naming it (or the ``defaults``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import redis.exceptions

from turnout.errors import InvalidRequest, Unavailable
from turnout.model.signature import TensorSpec
from turnout.model.tensors import Outputs
from turnout.pipeline.definition import FeaturesStep
from turnout.pipeline.node import Accepts, Wiring
from turnout.pipeline.redis_store import RedisHashes


class FeaturesNode:
    kind = "features"
    calls: tuple[str, ...] = ()

    def __init__(self, step: FeaturesStep) -> None:
        self.name = step.name
        self._store = step.store
        self._fields = list(step.features)
        self._output = step.output
        self._defaults = None if step.defaults is None else np.asarray(step.defaults, dtype=np.float32)
        self.wiring = Wiring(
            {"entity": step.entity},
            {"entity": Accepts(frozenset({"BYTES", "INT64", "INT32"}), (-1,))},
            {step.output: TensorSpec(step.output, "FP32", (-1, len(step.features)))},
        )
        self._where = _without_password(step.store.url)
        self._hashes = RedisHashes(step.store.url, step.features, step.store.timeout_ms / 1000)

    async def run(
        self, feed: Mapping[str, np.ndarray[Any, Any]], wanted: frozenset[str], parameters: Mapping[str, Any]
    ) -> Outputs:
        ids = [_text(value) for value in feed["entity"].tolist()]
        keys = [self._store.key.replace("{id}", entity) for entity in ids]
        try:
            found = await self._hashes.read(keys)
        except TimeoutError:  # the builtin: the round trip's deadline (an OSError, so first)
            raise Unavailable(f"the feature store {self._where} did not answer within {self._store.timeout_ms:g} ms",
                              retry_after=1.0) from None  # fmt: skip
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise Unavailable(f"the feature store {self._where} cannot be reached: {exc}", retry_after=1.0) from None
        except redis.exceptions.RedisError as exc:
            raise Unavailable(f"the feature store {self._where} failed: {exc}", retry_after=1.0) from None
        try:
            if not any(None in fields for fields in found):  # the common case: one conversion for all rows
                return {self._output: np.array(found, dtype=np.bytes_).astype(np.float32)}
            values = np.empty((len(ids), len(self._fields)), dtype=np.float32)
            for row, (entity, fields) in enumerate(zip(ids, found, strict=True)):
                if None in fields and self._defaults is None:
                    raise InvalidRequest(self._missing(entity, keys[row], fields))
                values[row] = [self._defaults[i] if v is None else float(v) for i, v in enumerate(fields)]  # type: ignore[index]
        except ValueError:
            raise Unavailable(f"the feature store {self._where} holds a value that is not a number among "
                              f"{keys[:3]}") from None  # fmt: skip
        return {self._output: values}

    def _missing(self, entity: str, key: str, fields: list[Any]) -> str:
        absent = [name for name, value in zip(self._fields, fields, strict=True) if value is None]
        if len(absent) == len(self._fields):
            return f"no features for entity '{entity[:200]}' (key '{key[:200]}' in {self._where})"
        return f"entity '{entity[:200]}' lacks feature(s) {absent[:5]} (key '{key[:200]}' in {self._where})"

    async def aclose(self) -> None:
        await self._hashes.aclose()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("an entity id is not UTF-8 text") from None
    return str(value)


def _without_password(url: str) -> str:
    """A Redis URL as shown in errors: never its password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
