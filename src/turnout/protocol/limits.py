"""Limits on what one request may carry, checked by the codecs as soon as a
tensor's name and shape are read (before its data is decoded) and on each
BYTES element: a request within the body size limit can still describe a
tensor too large to batch and run, or one huge string. And how much of a
client's value an error message repeats (``shown``): never all of it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from turnout.errors import InvalidRequest, PayloadTooLarge
from turnout.protocol.shapes import element_count, format_shape

MAX_DIMENSIONS = 64  # numpy's own limit: no model takes a tensor of more
_SHOWN_CHARS = 64


@dataclass(frozen=True, slots=True)
class InputLimits:
    max_tensor_elements: int = 1 << 26  # 64 Mi elements: 256 MiB of FP32
    max_bytes_element: int = 1 << 24  # 16 MiB in one BYTES element
    # A tensor's name is repeated in every error about it, and in the server's
    # answer: a megabyte name made every such answer a megabyte.
    max_name_chars: int = 1024

    def check_name(self, name: str, kind: str, position: int) -> None:
        """Before ``name`` is used in any message: the name of ``kind`` ("inputs",
        "outputs") number ``position`` (the message is made only when it fails)."""
        if len(name) > self.max_name_chars:
            raise InvalidRequest(
                f"{kind}[{position}]: a name of {len(name)} characters, over the limit of {self.max_name_chars}"
            )

    def check_shape(self, name: str, shape: Sequence[int]) -> None:
        if len(shape) > MAX_DIMENSIONS:
            raise InvalidRequest(f"input '{name}': a shape of {len(shape)} dimensions, over {MAX_DIMENSIONS}")
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


def clipped(text: str, most: int = 200) -> str:
    """A client's text (a path, say) as a message repeats it: never unbounded."""
    return text if len(text) <= most else text[:most] + "..."


def shown(value: object) -> str:
    """A client's value as an error message may repeat it: a string or a
    number cut to 64 characters, anything else by its type (a nested list's
    repr costs time and, 1,000 levels deep, a RecursionError)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**_SHOWN_CHARS:
        return "a very large integer"
    if value is None or isinstance(value, (str, int, float)):
        text = repr(value)
        return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}... ({len(text)} characters)"
    return f"a {type(value).__name__}"
