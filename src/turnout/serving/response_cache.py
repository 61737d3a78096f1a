"""A model version's response cache (``model.toml``'s ``[cache]``): answers
kept by what was asked, so a repeated request skips the queue and the model.

- **What a key covers.** The model, the version that answers, every input's
  name, dtype, shape and bytes, the outputs asked for, and the request's
  parameters other than those that only schedule or encode the answer
  (``UNKEYED``): a Python model or a pipeline's condition may read a
  parameter, so a parameter that is not known to be harmless is in the key.
- **Versions.** A cache belongs to one live version (``ServedVersion``):
  a new version, or the same number loaded again from new files, starts
  with an empty one, so an old version's answer can never be served.
- **Bounds.** Entries are dropped least recently used first to keep the
  arrays held under ``max_bytes``; an entry older than ``ttl`` is never
  served. Only answers are stored: a failure never is.

Event-loop only (no lock): every call is made from the data plane's loop.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from turnout.errors import InvalidRequest
from turnout.model.tensors import Outputs, Tensors

#: the request parameter that bypasses the cache for one request: ``"cache": false``
BYPASS = "cache"
#: parameters that schedule or encode an answer, never change it: left out of the key
UNKEYED = frozenset({BYPASS, "timeout", "priority", "binary_data_output", "binary_data", "binary_data_size"})
_ENTRY_OVERHEAD = 256  # bytes an entry costs beyond its arrays (key, dict slot, array headers): roughly


def wanted(parameters: Mapping[str, Any]) -> bool:
    """Whether a request may be answered from (and stored in) the cache: not when it says ``"cache": false``."""
    value = parameters.get(BYPASS, True)
    if not isinstance(value, bool):
        raise InvalidRequest(f"parameter '{BYPASS}' must be a boolean (false: answer without the cache)")
    return value


def cache_key(
    model: str, version: int, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any]
) -> bytes:
    """A digest of everything an answer depends on (see the module's docstring)."""
    keyed = [(name, value) for name, value in parameters.items() if name not in UNKEYED]
    head = f"{model}\0{version}\0{tuple(outputs)!r}"  # a model's name holds no NUL (model/repository.py)
    if keyed:
        head += repr(sorted(keyed))
    digest = hashlib.sha256(head.encode())  # with SHA extensions, the fastest collision-resistant one here
    for name in sorted(inputs):
        array = inputs[name]
        digest.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        if array.dtype.kind == "O":  # BYTES: each element, length first, so ["ab", "c"] is not ["a", "bc"]
            for item in array.reshape(-1):
                data = item if isinstance(item, bytes) else str(item).encode()
                digest.update(len(data).to_bytes(8, "little"))
                digest.update(data)
        else:
            digest.update(np.ascontiguousarray(array).data)
    return digest.digest()


def input_bytes(inputs: Tensors) -> int:
    """The bytes a key would hash: a text (BYTES) tensor's elements counted by their length."""
    return sum(_text_bytes(array) if array.dtype.kind == "O" else array.nbytes for array in inputs.values())


def _text_bytes(array: np.ndarray[Any, Any]) -> int:
    return sum(len(item) if isinstance(item, (bytes, str)) else 64 for item in array.reshape(-1))


def _size(outputs: Outputs) -> int:
    size = _ENTRY_OVERHEAD
    for array in outputs.values():
        size += array.nbytes + (_text_bytes(array) if array.dtype.kind == "O" else 0)
    return size


class ResponseCache:
    """Least recently used answers by key, bounded in bytes, each served for ``ttl`` seconds at most."""

    def __init__(self, max_bytes: int, ttl: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, int, Outputs]] = OrderedDict()  # key: (stored at, size, outputs)
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Outputs | None:
        """The answer stored for ``key``, if fresh (an expired one is dropped); it is now the most recent."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, size, outputs = entry
        if self._ttl is not None and self._clock() - stored_at >= self._ttl:
            del self._entries[key]
            self.bytes -= size
            return None
        self._entries.move_to_end(key)
        return outputs

    def put(self, key: bytes, outputs: Outputs) -> int:
        """Store an answer (copied, read-only: it must not hold a whole batch's arrays, nor
        change under its readers); returns how many older entries were dropped to make room.
        An answer larger than the whole cache is not stored."""
        kept = {}
        for name, array in outputs.items():
            copy = array.copy()
            copy.flags.writeable = False
            kept[name] = copy
        size = _size(kept)
        if size > self.max_bytes:
            return 0
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        dropped = 0
        while self.bytes + size > self.max_bytes:
            _, (_, freed, _) = self._entries.popitem(last=False)
            self.bytes -= freed
            dropped += 1
        self._entries[key] = (self._clock(), size, kept)
        self.bytes += size
        return dropped
