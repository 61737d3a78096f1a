"""Tensors between the server and a Python model's worker through shared
memory: one block per direction, an anonymous file (``memfd_create``) that
the server makes and the worker inherits (no name in ``/dev/shm``, so
nothing is left behind however either side dies).

The writer lays each numeric array into its block, one ``memcpy``, and
sends only where it lies (a :class:`Slot`); the reader views it there. What
does not go through the block travels pickled with the message, as before:
BYTES arrays (Python objects), and anything past the block's end. Measured
against pickling every array through the socket (``bench/worker_transport.py``
in BENCHMARKS.md): about half the round trip for a small batch, a fifth to a
seventh for batches of 256 KiB and more.

One batch at a time per worker, so one block per direction is enough: the
server's inputs are read by the worker before it answers, and the server
copies the outputs out before it sends the next batch. The file is sparse:
memory is used only as far as the largest batch has reached.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

ARENA_BYTES = 64 * 2**20  # each direction's block; larger batches travel pickled
_ALIGN = 64


class Slot(NamedTuple):
    """Where one array lies in a block. A tuple, as it crosses with every
    batch: a dataclass pickles through ``dataclasses.fields`` both ways, a
    few microseconds of each round trip."""

    offset: int
    shape: tuple[int, ...]
    dtype: str


class Arena:
    """One direction's block, mapped by both sides."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self._map = mmap.mmap(fd, size)

    @classmethod
    def create(cls, name: str, size: int = ARENA_BYTES) -> Arena | None:
        """A new block, or None where this system has no ``memfd_create``
        (then every array travels pickled)."""
        if not hasattr(os, "memfd_create"):
            return None
        fd = os.memfd_create(name, os.MFD_CLOEXEC)  # the worker gets it through pass_fds, nothing else does
        os.ftruncate(fd, size)
        return cls(fd, size)

    def put(self, tensors: Mapping[str, Any]) -> dict[str, Any]:
        """The numeric arrays of ``tensors`` laid into the block, as slots; the rest as they are."""
        packed: dict[str, Any] = {}
        offset = 0
        for name, value in tensors.items():
            array = np.asarray(value)
            if array.dtype.hasobject or offset + array.nbytes > self.size:
                packed[name] = value
                continue
            np.ndarray(array.shape, array.dtype, buffer=self._map, offset=offset)[...] = array
            packed[name] = Slot(offset, array.shape, array.dtype.str)
            offset += -(-array.nbytes // _ALIGN) * _ALIGN
        return packed

    def take(self, packed: Mapping[str, Any], copy: bool) -> dict[str, Any]:
        """The arrays ``put`` laid out: views of the block (valid until the next
        ``put``), or copies of them."""
        taken: dict[str, Any] = {}
        for name, value in packed.items():
            if isinstance(value, Slot):
                view = np.ndarray(value.shape, np.dtype(value.dtype), buffer=self._map, offset=value.offset)
                taken[name] = view.copy() if copy else view
            else:
                taken[name] = value
        return taken

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # a view is still alive (the model kept one): it goes with the process
            self._map.close()
        os.close(self.fd)
