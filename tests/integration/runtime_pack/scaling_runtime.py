"""Two runtimes from outside turnout, as a user's package would ship them:
``tests/integration/test_runtime_plugins.py`` installs this module on the
server's path with an entry point, or names a class in ``model.toml``. Only
turnout's public runtime protocol is used.

``ScalingRuntime``: a linear model whose weights are a ``weights.npy`` file
(numpy's own format, read without pickle); its signature comes from
``model.toml``; ``[runtime.options] scale`` multiplies the result; the request
parameter ``offset`` is added to it; each row is answered with the index of
the instance that computed it.

``ShoutingRuntime``: text in, text out, with ``predict_async`` on the event
loop and its own signature; its ``collate`` and ``split`` keep each request's
strings in a list (a ragged batch no axis could hold).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from turnout.model.runtimes.base import NO_PARAMETERS, LoadContext, LoadedModel, ModelRuntime, Outputs, Tensors
from turnout.model.signature import Signature, TensorSpec


class ScalingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: float = 1.0


class ScalingRuntime(ModelRuntime):
    platform = "test_scaling"
    artifacts = ("weights.npy",)
    options = ScalingOptions

    def load(self, context: LoadContext) -> LoadedModel:
        weights = np.load(context.version_dir / "weights.npy", allow_pickle=False)
        return _Scaling(weights, context.options.scale, context.instance)


class _Scaling(LoadedModel):
    parameters = frozenset({"offset"})

    def __init__(self, weights: np.ndarray[Any, Any], scale: float, instance: int) -> None:
        self._weights, self._scale, self._instance = weights, scale, instance

    def predict(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        offset = float(parameters.get("offset", 0.0))
        rows = inputs["x"].shape[0]
        return {
            "y": (inputs["x"] @ self._weights * self._scale + offset).astype(np.float32),
            "instance": np.full((rows, 1), self._instance, dtype=np.int32),
        }


class ShoutingRuntime(ModelRuntime):
    platform = "test_shouting"

    def load(self, context: LoadContext) -> LoadedModel:
        return _Shouting()


class _Shouting(LoadedModel):
    asynchronous = True

    @property
    def signature(self) -> Signature:
        return Signature((TensorSpec("text", "BYTES", (-1,)),), (TensorSpec("shout", "BYTES", (-1,)),))

    def collate(self, requests: Sequence[Tensors]) -> Tensors:
        joined = np.empty(len(requests), dtype=object)
        joined[:] = [list(request["text"]) for request in requests]
        return {"text": joined}

    def split(self, outputs: Tensors, rows: Sequence[int]) -> list[Outputs]:
        return [{"shout": np.array(part, dtype=object)} for part in outputs["shout"]]

    async def predict_async(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        await asyncio.sleep(0)  # on the event loop: it may wait, never block
        texts = inputs["text"]
        shouted = np.empty(len(texts), dtype=object)
        if texts.size and isinstance(texts[0], list):  # a collated batch: one list per request
            shouted[:] = [[_shout(item) for item in request] for request in texts]
        else:  # the warm-up's one request, as it comes
            shouted[:] = [_shout(item) for item in texts]
        return {"shout": shouted}


def _shout(item: bytes | str) -> bytes:
    text = item.decode() if isinstance(item, bytes) else item
    return (text.upper() + "!").encode()
