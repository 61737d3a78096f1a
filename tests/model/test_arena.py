"""The shared blocks a Python model's worker gets its tensors through: numeric
arrays go into the block and come back equal, in order, aligned; BYTES and
what does not fit travel as they are; views see the block, copies do not."""

from __future__ import annotations

import numpy as np

from turnout.model.runtimes.arena import Arena, Slot


def test_numbers_go_through_the_block_and_the_rest_as_they_are() -> None:
    arena = Arena.create("test", size=4096)
    assert arena is not None  # Linux has memfd_create
    try:
        text = np.array([b"caf\xc3\xa9", b""], dtype=object)
        tensors = {
            "rows": np.arange(12, dtype=np.float32).reshape(3, 4),
            "text": text,
            "flags": np.array([True, False]),
            "big": np.zeros(2048, dtype=np.float32),  # 8 KiB: past the block's end
            "ids": np.array([[7], [8]], dtype=np.int64),
        }
        packed = arena.put(tensors)
        assert [type(v).__name__ for v in packed.values()] == ["Slot", "ndarray", "Slot", "ndarray", "Slot"]
        assert all(v.offset % 64 == 0 for v in packed.values() if isinstance(v, Slot))
        copies, views = arena.take(packed, copy=True), arena.take(packed, copy=False)
        for name, array in tensors.items():
            np.testing.assert_array_equal(copies[name], array)
            assert copies[name].dtype == array.dtype
        assert copies["text"] is text
        arena.put({"rows": np.ones((3, 4), dtype=np.float32)})  # the next batch overwrites the block
        assert views["rows"][0, 0] == 1.0 and copies["rows"][0, 0] == 0.0
        del views
    finally:
        arena.close()


def test_a_second_mapping_of_the_same_file_sees_the_first_ones_writes() -> None:
    """What the worker does: map the server's file by its descriptor."""
    server = Arena.create("test", size=1024)
    assert server is not None
    worker = Arena(server.fd, server.size)
    try:
        packed = server.put({"x": np.array([1.5, 2.5], dtype=np.float64)})
        seen = worker.take(packed, copy=True)
        np.testing.assert_array_equal(seen["x"], [1.5, 2.5])
    finally:
        worker._map.close()
        server.close()
