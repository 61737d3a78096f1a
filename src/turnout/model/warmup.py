"""Inputs for the warm-up run at load: zeros shaped by the signature, so the
first real request does not pay for ONNX Runtime's lazy allocations."""

from __future__ import annotations

from typing import Any

import numpy as np

from turnout.model.signature import Signature
from turnout.protocol.datatypes import BYTES, to_numpy


def sample_inputs(signature: Signature) -> dict[str, np.ndarray[Any, Any]]:
    """One row: every variable dimension is 1."""
    inputs = {}
    for spec in signature.inputs:
        shape = tuple(1 if d == -1 else d for d in spec.shape)
        if spec.datatype == BYTES:
            array = np.empty(shape, dtype=object)
            array.fill(b"")
        else:
            array = np.zeros(shape, dtype=to_numpy(spec.datatype))
        inputs[spec.name] = array
    return inputs
