"""Running a checked graph for one request: level by level, the steps of a
level concurrently, each fed by reference from the request and from earlier
steps.

Each step is timed (``ModelCalls.step_done``: the per-step metrics) and, when
the request is traced, noted as a span of its own. The requests a step makes
to models are not spans of the pipeline's trace: they would overwrite its
timings (the data plane notes times on the trace current in its context), so
they run with none. An error is re-raised with its own code and the step's
name in front.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from turnout.errors import InferenceFailed, TurnoutError
from turnout.model.tensors import Outputs, Tensors
from turnout.observability import tracing
from turnout.pipeline.calls import ModelCalls
from turnout.pipeline.graph import Graph
from turnout.pipeline.node import Node
from turnout.pipeline.together import together


class Executor:
    def __init__(self, graph: Graph, calls: ModelCalls, pipeline: str, version: int) -> None:
        self._graph = graph
        self._calls = calls
        self._pipeline, self._version = pipeline, version
        # by step: what it is asked for, and where each of those goes among the request's values
        self._stores = {
            name: (wanted, tuple((tensor, f"{name}.{tensor}") for tensor in wanted))
            for name, wanted in graph.wanted.items()
        }

    async def run(self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any]) -> Outputs:
        values: dict[str, np.ndarray[Any, Any]] = dict(inputs)
        for level in self._graph.levels:
            if len(level) == 1:
                await self._step(level[0], values, parameters)
            else:
                await together([self._step(node, values, parameters) for node in level])
        returned = self._graph.outputs
        return {name: values[returned[name]] for name in outputs}

    async def _step(self, node: Node, values: dict[str, np.ndarray[Any, Any]], parameters: Mapping[str, Any]) -> None:
        feed = {local: values[reference] for local, reference in node.wiring.needs.items()}
        wanted, stores = self._stores[node.name]
        trace = tracing.CURRENT.get()
        token = None if trace is None else tracing.CURRENT.set(None)
        began_ns = 0 if trace is None else tracing.RequestTrace.now()
        began = time.perf_counter()
        status = "success"
        try:
            produced = await node.run(feed, wanted, parameters)
            missing = wanted - produced.keys()
            if missing:
                raise InferenceFailed(f"gave no {sorted(missing)}")
        except asyncio.CancelledError:  # the request's deadline passed, or its client left
            status = "cancelled"
            raise
        except TurnoutError as exc:
            status = exc.code.value
            raise type(exc)(_named(node.name, exc.message), retry_after=exc.retry_after) from None
        except Exception as exc:  # a bug in a step, or a tokenizer's surprise: the request fails, named
            status = "internal"
            raise InferenceFailed(_named(node.name, f"failed: {exc}")) from None
        finally:
            self._calls.step_done(self._pipeline, self._version, node.name, time.perf_counter() - began, status)
            if trace is not None:
                assert token is not None
                tracing.CURRENT.reset(token)
                trace.note_step(node.name, node.kind, began_ns, tracing.RequestTrace.now(), status)
        for name, key in stores:
            values[key] = produced[name]


def _named(step: str, message: str) -> str:
    prefix = f"step '{step}'"
    return message if message.startswith(prefix) else f"{prefix}: {message}"
