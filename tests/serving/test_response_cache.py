"""The response cache's core (no server): what a key covers, the byte bound
(least recently used dropped first), the time to live, and what is stored."""

from __future__ import annotations

import numpy as np
import pytest

from turnout.errors import InvalidRequest
from turnout.serving.response_cache import ResponseCache, cache_key, wanted

ROW = np.arange(10, dtype=np.float32).reshape(1, 10)


def key(**changes: object) -> bytes:
    asked = {"model": "m", "version": 1, "inputs": {"input": ROW}, "outputs": ("y",), "parameters": {}}
    asked.update(changes)
    return cache_key(**asked)  # type: ignore[arg-type]


def test_the_key_changes_with_everything_an_answer_depends_on() -> None:
    base = key()
    assert key() == base
    assert key(inputs={"input": ROW.copy()}) == base  # the bytes, not the object
    assert key(parameters={"timeout": 5, "priority": 1, "binary_data_output": True, "cache": True}) == base
    different = [
        key(model="other"),
        key(version=2),
        key(outputs=("y", "z")),
        key(parameters={"how": "text"}),  # a Python model may read it
        key(inputs={"input": ROW + 1}),
        key(inputs={"input": ROW.astype(np.float64)}),  # the same numbers, another datatype
        key(inputs={"input": ROW.reshape(2, 5)}),  # the same bytes, another shape
        key(inputs={"other": ROW}),
    ]
    assert len({base, *different}) == len(different) + 1


def test_bytes_tensors_are_keyed_element_by_element() -> None:
    split = np.array([b"ab", b"c"], dtype=object)
    moved = np.array([b"a", b"bc"], dtype=object)
    assert key(inputs={"text": split}) != key(inputs={"text": moved})
    assert key(inputs={"text": split}) == key(inputs={"text": np.array([b"ab", b"c"], dtype=object)})


def test_a_non_contiguous_input_keys_as_its_values() -> None:
    wide = np.arange(20, dtype=np.float32).reshape(2, 10)
    assert key(inputs={"input": wide[:, ::2]}) == key(inputs={"input": np.ascontiguousarray(wide[:, ::2])})


def test_bypass_is_a_boolean_parameter() -> None:
    assert wanted({}) and wanted({"cache": True})
    assert not wanted({"cache": False})
    with pytest.raises(InvalidRequest, match="'cache' must be a boolean"):
        wanted({"cache": "no"})


def test_least_recently_used_answers_go_first_to_keep_within_max_bytes() -> None:
    answer = {"y": np.zeros(100, dtype=np.float32)}  # 400 bytes and the entry's overhead
    cache = ResponseCache(max_bytes=2000, ttl=None)
    dropped = [cache.put(bytes([i]), answer) for i in range(3)]
    assert dropped == [0, 0, 0] and len(cache) == 3 and cache.bytes <= 2000
    assert cache.get(b"\x00") is not None  # now the most recent: 1 is the least
    assert cache.put(b"\x03", answer) == 1
    assert cache.get(b"\x01") is None
    assert all(cache.get(bytes([i])) is not None for i in (0, 2, 3))
    assert cache.bytes <= cache.max_bytes


def test_an_answer_larger_than_the_cache_is_not_stored() -> None:
    cache = ResponseCache(max_bytes=1024, ttl=None)
    assert cache.put(b"k", {"y": np.zeros(1024, dtype=np.float32)}) == 0
    assert cache.get(b"k") is None and cache.bytes == 0


def test_an_expired_answer_is_never_served() -> None:
    now = [100.0]
    cache = ResponseCache(max_bytes=10_000, ttl=5.0, clock=lambda: now[0])
    cache.put(b"k", {"y": np.ones(2, dtype=np.float32)})
    now[0] = 104.9
    assert cache.get(b"k") is not None
    now[0] = 105.0
    assert cache.get(b"k") is None
    assert len(cache) == 0 and cache.bytes == 0


def test_what_is_stored_is_a_read_only_copy() -> None:
    batch = np.arange(8, dtype=np.float32).reshape(4, 2)
    cache = ResponseCache(max_bytes=10_000, ttl=None)
    cache.put(b"k", {"y": batch[1:2]})  # one request's rows of a batch's output
    batch[1] = -1  # the batch's array reused: the stored answer must not change
    found = cache.get(b"k")
    assert found is not None
    assert found["y"].tolist() == [[2.0, 3.0]]
    assert found["y"].base is None or found["y"].base is not batch
    with pytest.raises(ValueError):
        found["y"][0, 0] = 9
