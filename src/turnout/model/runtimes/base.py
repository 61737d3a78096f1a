"""The interface every model runtime implements.

A runtime turns a version directory into one :class:`LoadedModel` per instance.
``predict`` is called from a worker thread, never on the event loop, and never
concurrently on the same instance; it must release the GIL for real work to
overlap (ONNX Runtime does).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from turnout.model.config import ModelConfig
from turnout.model.signature import Signature

Tensors = Mapping[str, np.ndarray[Any, Any]]


class LoadedModel(abc.ABC):
    @property
    @abc.abstractmethod
    def signature(self) -> Signature:
        """The signature the artifact itself reports."""

    def prepare(self, inputs: Tensors) -> Tensors:
        """Check and convert one request's inputs before it is queued.

        Runs on the event loop for each request, so a request the runtime
        cannot take (text that is not UTF-8, say) is refused alone instead of
        failing the batch it would join. Raise ``InvalidRequest``.
        """
        return inputs

    @abc.abstractmethod
    def predict(self, inputs: Tensors, outputs: Sequence[str]) -> dict[str, np.ndarray[Any, Any]]:
        """Run once on whole tensors; return the named outputs."""

    def close(self) -> None:  # noqa: B027 - optional hook; most runtimes free on GC
        """Release resources held by this instance."""


class ModelRuntime(abc.ABC):
    #: reported as ``platform`` in model metadata, as Triton does
    platform: str
    #: the file a version directory must hold
    artifact: str
    #: whether loading the artifact runs code from it (pickle, joblib, torch.load of
    #: full objects): such models load only when trusted (see ``loader.check_safe_to_load``)
    executes_code_on_load: bool = False

    @abc.abstractmethod
    def load(self, version_dir: Path, config: ModelConfig) -> LoadedModel:
        """Load one instance; raise with a precise message when the artifact is broken."""
