"""What every step is to the graph and the executor: the tensors it reads
(``needs``: its own name for each, and the reference it is wired to), what it
accepts for each, what it produces, and ``run``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from turnout.model.signature import TensorSpec
from turnout.model.tensors import Outputs
from turnout.protocol.shapes import format_shape


@dataclass(frozen=True, slots=True)
class Accepts:
    """What a step takes for one of its inputs: one of ``datatypes``, of
    ``shape`` (-1: any size; None: any shape)."""

    datatypes: frozenset[str]
    shape: tuple[int, ...] | None

    @classmethod
    def spec(cls, spec: TensorSpec) -> Accepts:
        return cls(frozenset({spec.datatype}), spec.shape)

    def mismatch(self, given: TensorSpec) -> str | None:
        """Why a tensor of ``given``'s datatype and shape cannot be fed here; None if it can."""
        if given.datatype not in self.datatypes:
            wanted = " or ".join(sorted(self.datatypes))
            return f"is {given.datatype}, the step takes {wanted}"
        shape = self.shape
        if shape is not None and (
            len(shape) != len(given.shape)
            or any(a != -1 and b != -1 and a != b for a, b in zip(shape, given.shape, strict=True))
        ):
            return f"has shape {format_shape(given.shape)}, the step takes {format_shape(shape)}"
        return None


@dataclass(frozen=True, slots=True)
class Wiring:
    needs: Mapping[str, str]  # the step's own name for an input -> the reference it is fed from
    accepts: Mapping[str, Accepts]  # by the same names
    produces: Mapping[str, TensorSpec]  # by output name


class Node(Protocol):
    name: str
    kind: str
    wiring: Wiring
    calls: tuple[str, ...]  # the models it calls ("cancer_risk v1"; no version: the endpoint), for the dashboard

    async def run(
        self, feed: Mapping[str, np.ndarray[Any, Any]], wanted: frozenset[str], parameters: Mapping[str, Any]
    ) -> Outputs:
        """Run on ``feed`` (by the step's own input names); return at least the outputs in ``wanted``."""
        ...
