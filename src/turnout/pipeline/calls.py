"""What a pipeline needs from the server it runs in: the models its steps
call. The serving layer implements it (``serving/step_calls.py``), so a
step's request goes through the data plane like any other: the step model's
validation, routing policy, batcher, metrics and drift."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from turnout.model.signature import Signature
from turnout.model.tensors import Outputs


@dataclass(frozen=True, slots=True)
class CalledModel:
    """A step model as a pipeline sees it when it loads."""

    signature: Signature
    max_batch_size: int


class StepFailed(LookupError):
    """A step model cannot be called (unknown, or no version ready): the message says why."""


class ModelCalls(Protocol):
    def describe(self, caller: str, model: str, version: int | None) -> CalledModel:
        """The model's signature, for the pipeline ``caller``, waiting for its first load if it is under way.
        Blocking: called from the thread that loads the pipeline. Raises
        ``StepFailed``."""
        ...

    async def wait_ready(self, caller: str, model: str, version: int | None) -> None:
        """Wait (on the event loop) until ``model`` serves or cannot, as the
        pipeline ``caller`` loads; never raises. A model that waits for
        ``caller`` is not waited for: ``describe`` then says they call each other."""
        ...

    async def infer(
        self,
        model: str,
        version: int | None,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        outputs: Sequence[str],
        parameters: Mapping[str, Any],
        checked: Signature,
    ) -> Outputs:
        """One request to ``model`` (its ``version``, or the endpoint with its
        routing policy when None), whose ``inputs`` the graph checked against
        ``checked``, the signature ``describe`` gave; raises what the data
        plane raises."""
        ...

    def infer_now(
        self,
        model: str,
        version: int | None,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        outputs: Sequence[str],
        parameters: Mapping[str, Any],
        checked: Signature,
    ) -> Outputs | None:
        """``infer`` answered at once, without awaiting, when the model would
        run it inline (a lone request to a cheap model); None, with nothing
        done, when it would wait: then ``infer`` it."""
        ...

    def step_done(self, pipeline: str, version: int, step: str, seconds: float, status: str) -> None:
        """A step of a pipeline's request ended (``status``: "success" or an error code)."""
        ...
