"""Limits on what one request may carry, checked by the codecs as soon as a
tensor's shape is read (before its data is decoded) and on each BYTES
element: a request within the body size limit can still describe a tensor
too large to batch and run, or one huge string."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from turnout.errors import PayloadTooLarge
from turnout.protocol.shapes import element_count, format_shape


@dataclass(frozen=True, slots=True)
class InputLimits:
    max_tensor_elements: int = 1 << 26  # 64 Mi elements: 256 MiB of FP32
    max_bytes_element: int = 1 << 24  # 16 MiB in one BYTES element

    def check_shape(self, name: str, shape: Sequence[int]) -> None:
        # the product of the non-zero dimensions: a [0, 10**12, 10**12] tensor is
        # empty, but no array library can even describe it
        extent = element_count([d for d in shape if d])
        if extent > self.max_tensor_elements:
            count = element_count(shape)
            raise PayloadTooLarge(
                f"input '{name}': shape {format_shape(shape)} has {count} elements"
                + ("" if count else f" but spans {extent}")
                + f", over the server's limit of {self.max_tensor_elements} (--max-tensor-elements)"
            )

    def check_bytes(self, name: str, sizes: Iterable[int]) -> None:
        largest = max(sizes, default=0)
        if largest > self.max_bytes_element:
            raise PayloadTooLarge(
                f"input '{name}': a BYTES element of {largest} bytes is over the server's limit of "
                f"{self.max_bytes_element} (--max-bytes-element)"
            )


DEFAULT_LIMITS = InputLimits()
