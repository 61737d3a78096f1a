"""Decoded V2 inference messages: what the codecs produce and consume.

Tensors are numpy arrays already shaped as the request declared; the wire forms
(JSON, binary extension, protobuf) live in the codecs and transports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Parameters = dict[str, Any]


@dataclass(slots=True)
class InferInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray[Any, Any]
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferenceRequest:
    model_name: str
    model_version: str | None
    inputs: list[InferInput]
    id: str | None = None
    outputs: list[RequestedOutput] | None = None  # None: every output
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferOutput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray[Any, Any]
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    model_version: str
    outputs: list[InferOutput]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
