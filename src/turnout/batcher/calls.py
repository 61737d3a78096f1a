"""One call of a model instance, as the batcher makes it: timed, its outputs
checked and its errors given their codes; and the moving estimate of what a
call costs, by which a lone request may run on the event loop itself.
Apart from the queue (queue.py), which decides when and with what to call."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from turnout.errors import InferenceFailed, TurnoutError
from turnout.model.runtimes.base import LoadedModel, Outputs, Tensors

# A lone request for a model whose predict is expected to take less than this
# runs on the event loop itself (see queue.Batcher._run_at_once).
INLINE_BELOW_SECONDS = 0.0002
# "Lone": no other request arrived for this long. Under load, requests arrive
# in bursts microseconds apart and must queue to form batches; a client alone
# sends one per round trip (~0.3 ms on loopback here).
LONE_AFTER_SECONDS = 0.00015


class BatchCost:
    """A moving estimate of how long the model's predict takes, to decide
    whether a lone request may run on the loop (see ``_run_at_once``).

    Unknown until the first batch (which runs in the instance's thread, as every
    batch does); an exponential average after, so one slow call moves it but
    does not rule it.
    """

    def __init__(self, inline_below: float) -> None:
        self._inline_below = inline_below
        self._average: float | None = None

    def observe(self, seconds: float) -> None:
        self._average = seconds if self._average is None else 0.8 * self._average + 0.2 * seconds

    def cheap(self) -> bool:
        return self._average is not None and self._average < self._inline_below


def as_error(exc: Exception) -> TurnoutError:
    """A model's own error (a TurnoutError) keeps its code; anything else is a failed inference."""
    return exc if isinstance(exc, TurnoutError) else InferenceFailed(f"inference failed: {exc}")


def predict(
    instance: LoadedModel, inputs: Tensors, names: tuple[str, ...], parameters: Mapping[str, Any]
) -> tuple[Outputs, float]:
    """The model alone, timed: this is what may run in a worker thread."""
    started = time.perf_counter()
    outputs = instance.predict(inputs, names, parameters)
    return checked(outputs, names), time.perf_counter() - started


async def predict_async(
    instance: LoadedModel,
    inputs: Tensors,
    names: tuple[str, ...],
    parameters: Mapping[str, Any],
    lone: bool = False,
) -> tuple[Outputs, float]:
    started = time.perf_counter()
    if lone:
        outputs = await instance.predict_lone(inputs, names, parameters)
    else:
        outputs = await instance.predict_async(inputs, names, parameters)
    return checked(outputs, names), time.perf_counter() - started


def checked(outputs: Outputs, names: tuple[str, ...]) -> Outputs:
    """Checked here, so a broken model fails its batch instead of the worker."""
    missing = [name for name in names if name not in outputs]
    if missing:
        raise ValueError(f"the model did not return output(s) {missing}")
    return outputs
