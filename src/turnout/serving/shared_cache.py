"""The response cache's second level, shared by replicas: Redis
(``turnout serve --cache-redis URL``, and ``[cache] shared = true``).

- **Keys** name the model, the version and the digest of the version's files
  (``model/fingerprint.py``) before the request's key, so replicas share
  answers only for the very same files, and a version loaded again from new
  files starts with none.
- **Values** are a versioned record: a JSON header (``"v": 1``, each output's
  name, dtype and shape) and the arrays' bytes. Text (BYTES) outputs are not
  shared; they stay in the replica's own level.
- **Time to live**: the model's ``ttl_seconds``, else ``DEFAULT_TTL``, so the
  keys go even on a Redis without an eviction policy (give it one:
  ``maxmemory-policy allkeys-lru``).
- **Never in the way.** A read waits ``TIMEOUT`` at most, and a Redis that
  fails or is slow is left alone for ``BACKOFF`` seconds (those requests miss
  and run the model); writes go in the background, at most ``MAX_WRITES`` at
  once (beyond, an answer is not shared). A request is never failed by the
  shared level.

Event-loop only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
import orjson
import redis.asyncio as aredis

from turnout.model.tensors import Outputs

log = logging.getLogger("turnout.cache")

FORMAT = 1
DEFAULT_TTL = 3600.0
TIMEOUT = 0.05  # seconds a lookup may wait: longer than a small model's run is no saving
BACKOFF = 5.0
MAX_WRITES = 64


def encode(outputs: Outputs) -> bytes | None:
    """A record of the outputs; None when one cannot be shared (text)."""
    header = []
    for name, array in outputs.items():
        if array.dtype.kind == "O":
            return None
        header.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape)})
    head = orjson.dumps({"v": FORMAT, "outputs": header})
    return (
        len(head).to_bytes(4, "little") + head + b"".join(np.ascontiguousarray(a).tobytes() for a in outputs.values())
    )


def decode(record: bytes) -> Outputs | None:
    """The outputs of a record; None for one this replica cannot read (another format, damaged)."""
    try:
        size = int.from_bytes(record[:4], "little")
        head = orjson.loads(record[4 : 4 + size])
        if head.get("v") != FORMAT:
            return None
        outputs, offset = {}, 4 + size
        for tensor in head["outputs"]:
            dtype, shape = np.dtype(tensor["dtype"]), tuple(tensor["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            array = np.frombuffer(record, dtype=dtype, count=count, offset=offset).reshape(shape)
            outputs[tensor["name"]] = array  # read-only: a view of the immutable record
            offset += count * dtype.itemsize
        return outputs if offset == len(record) else None
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        return None


class SharedCache:
    """One Redis for every version's shared level; ``scope`` makes a version's view of it."""

    def __init__(self, url: str) -> None:
        self._redis = aredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._resting_until = 0.0
        self._writes: set[asyncio.Task[None]] = set()

    def scope(self, model: str, version: int, digest: str, ttl: float | None) -> VersionCache:
        return VersionCache(self, f"turnout:cache:{model}:{version}:{digest[:32]}:", ttl or DEFAULT_TTL)

    async def get(self, key: str) -> bytes | None:
        if time.monotonic() < self._resting_until:
            return None
        try:
            found = await asyncio.wait_for(self._redis.get(key), TIMEOUT)
        except Exception as exc:  # down, slow, refused: a miss, and a rest
            self._rest(exc)
            return None
        return found if isinstance(found, bytes) else None

    def put(self, key: str, record: bytes, ttl: float) -> None:
        if time.monotonic() < self._resting_until or len(self._writes) >= MAX_WRITES:
            return
        task = asyncio.get_running_loop().create_task(self._write(key, record, ttl))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, key: str, record: bytes, ttl: float) -> None:
        try:
            await self._redis.set(key, record, px=int(ttl * 1000))
        except Exception as exc:
            self._rest(exc)

    def _rest(self, exc: BaseException) -> None:
        if time.monotonic() >= self._resting_until:
            log.warning("shared response cache: Redis failed (%s); answering without it for %.0f s", exc, BACKOFF)
        self._resting_until = time.monotonic() + BACKOFF

    async def close(self) -> None:
        for task in list(self._writes):
            task.cancel()
        await asyncio.gather(*self._writes, return_exceptions=True)
        await self._redis.aclose()


class VersionCache:
    """A live version's keys in the shared level."""

    def __init__(self, shared: SharedCache, prefix: str, ttl: float) -> None:
        self._shared, self._prefix, self._ttl = shared, prefix, ttl

    async def get(self, key: bytes) -> Outputs | None:
        record = await self._shared.get(self._prefix + key.hex())
        return None if record is None else decode(record)

    def put(self, key: bytes, outputs: Any) -> None:
        record = encode(outputs)
        if record is not None:
            self._shared.put(self._prefix + key.hex(), record, self._ttl)
