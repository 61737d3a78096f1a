"""How a pipeline's steps reach the models they call: through the data plane,
as requests of the protocol ``pipeline``. So a step is routed by the
endpoint's policy (when it names no version), queued in that model's own
batcher with the direct requests, and counted in that model's metrics, drift
and SLO windows like any request. It is validated as any request only when
the model it reaches is not the one the pipeline's graph was checked against
at load (a policy chose another variant, the model was reloaded): otherwise
it goes in as it is (``DataPlane.infer_checked``).

Made before the data plane exists (the model catalog needs it first), and
bound to it, and to the loop it serves on, when the server starts. A pipeline
first waits on the loop for the models it calls (``wait_ready``), then loads in
a worker thread, whose ``describe`` finds them there: a thread that waited for
a model's load could hold the very thread that load needs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from turnout.errors import TurnoutError
from turnout.model.signature import Signature
from turnout.model.tensors import Outputs
from turnout.observability.metrics import Metrics
from turnout.pipeline.calls import CalledModel, StepFailed
from turnout.pipeline.waits import Waits
from turnout.protocol.types import InferenceRequest, InferInput, RequestedOutput

if TYPE_CHECKING:
    from turnout.serving.dataplane import DataPlane
    from turnout.serving.served import ServedVersion

PROTOCOL = "pipeline"


class DataPlaneCalls:
    def __init__(self, metrics: Metrics, load_timeout: float = 60.0) -> None:
        self._metrics = metrics
        self._load_timeout = load_timeout
        self._dataplane: DataPlane | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waits = Waits()  # on the loop: which loading pipeline waits for which model
        self._loops: dict[tuple[str, str], list[str]] = {}  # (pipeline, model) found to call each other

    def bind(self, dataplane: DataPlane, loop: asyncio.AbstractEventLoop) -> None:
        self._dataplane, self._loop = dataplane, loop

    def describe(self, caller: str, model: str, version: int | None) -> CalledModel:
        if self._loop is None or self._dataplane is None:
            raise StepFailed(f"model '{model}' cannot be called: pipelines run only inside a server")
        loop = self._loops.get((caller, model))  # set on the loop before this load began
        if loop is not None:
            raise StepFailed(f"pipelines that call each other: {' -> '.join(loop)}")
        future = asyncio.run_coroutine_threadsafe(self._describe(self._dataplane, model, version), self._loop)
        try:
            return future.result(self._load_timeout + 1.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise StepFailed(f"model '{model}' was not ready within {self._load_timeout:g} s") from None

    async def wait_ready(self, caller: str, model: str, version: int | None) -> None:
        if self._dataplane is None:
            return
        self._loops.pop((caller, model), None)
        loop = self._waits.cycle(caller, model)
        if loop is not None:  # ``model`` waits, through others maybe, for ``caller``: neither would load
            self._loops[(caller, model)] = loop
            return
        with self._waits.waiting(caller, model), contextlib.suppress(TurnoutError):  # describe() says why
            await self._dataplane.served_version(model, None if version is None else str(version))

    @staticmethod
    async def _describe(dataplane: DataPlane, model: str, version: int | None) -> CalledModel:
        try:
            served = await dataplane.served_version(model, None if version is None else str(version))
        except TurnoutError as exc:
            raise StepFailed(exc.message) from None
        return CalledModel(served.signature, served.max_batch_size)

    async def infer(
        self,
        model: str,
        version: int | None,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        outputs: Sequence[str],
        parameters: Mapping[str, Any],
        checked: Signature,
    ) -> Outputs:
        dataplane = self._dataplane
        assert dataplane is not None and self._loop is not None  # a pipeline loads only once bound
        if asyncio.get_running_loop() is not self._loop:  # a loop of a thread's own (a warm-up, a test)
            call = self.infer(model, version, inputs, outputs, parameters, checked)
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, self._loop))
        shown = None if version is None else str(version)
        served = await dataplane.unrouted_version(model, shown, PROTOCOL)
        if _lean(served, inputs, checked):
            return await dataplane.infer_checked(served, inputs, tuple(outputs), parameters, PROTOCOL)
        # Routed by a policy, or the model changed since the pipeline loaded: a V2
        # request, validated as any (a changed model's mismatch is named), routed.
        request = InferenceRequest(
            model,
            shown,
            [InferInput(name, _datatype(checked, name), array.shape, array) for name, array in inputs.items()],
            outputs=[RequestedOutput(name) for name in outputs],
            parameters=dict(parameters),
        )
        answer = await dataplane.infer(request, PROTOCOL)
        return {output.name: output.data for output in answer.outputs}

    def infer_now(
        self,
        model: str,
        version: int | None,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        outputs: Sequence[str],
        parameters: Mapping[str, Any],
        checked: Signature,
    ) -> Outputs | None:
        dataplane = self._dataplane
        if dataplane is None or asyncio.get_running_loop() is not self._loop:
            return None
        served = dataplane.unrouted_now(model, None if version is None else str(version))
        if not _lean(served, inputs, checked):
            return None
        return dataplane.infer_checked_now(served, inputs, tuple(outputs), parameters, PROTOCOL)

    def step_done(self, pipeline: str, version: int, step: str, seconds: float, status: str) -> None:
        shown = str(version)
        self._metrics.step_time(pipeline, shown, step).observe(seconds)
        self._metrics.step_outcome(pipeline, shown, step, status).inc()


def _lean(
    served: ServedVersion | None, inputs: Mapping[str, np.ndarray[Any, Any]], checked: Signature
) -> TypeGuard[ServedVersion]:
    """Whether a step goes into the data plane as it is: to the very model its graph was checked against."""
    return served is not None and served.signature is checked and _fits(inputs, served.max_batch_size)


def _fits(inputs: Mapping[str, np.ndarray[Any, Any]], max_batch_size: int) -> bool:
    """Rows a batching model takes: the graph checked names, datatypes and
    shapes against the signature, but a Python step may change the row count."""
    if max_batch_size == 0:
        return True
    rows = {array.shape[0] if array.ndim else 0 for array in inputs.values()}
    return len(rows) == 1 and 0 < rows.pop() <= max_batch_size


def _datatype(signature: Signature, name: str) -> str:
    spec = signature.input(name)
    return "BYTES" if spec is None else spec.datatype  # an unknown name: validation names it
