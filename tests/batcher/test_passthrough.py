"""The dispatcher of a model that queues nothing (a pipeline): requests run at
once and together, bounded in number and in time, drained on close."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pytest

from turnout.batcher.passthrough import Passthrough
from turnout.errors import DeadlineExceeded, InferenceFailed, InvalidRequest, Overloaded, Unavailable
from turnout.model.runtimes.base import LoadedModel, Outputs, Tensors


class Waiting(LoadedModel):
    """Answers once released; counts how many run at once."""

    asynchronous: ClassVar[bool] = True
    concurrent: ClassVar[bool] = True

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.running = self.most = 0
        self.closed = False
        self.cancelled = 0

    async def predict_async(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = {}
    ) -> Outputs:
        if "fail" in parameters:
            raise parameters["fail"]
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        return {"y": inputs["x"] * 2}

    async def aclose(self) -> None:
        self.closed = True


X = {"x": np.ones((1, 2), np.float32)}


def test_requests_run_together_up_to_the_bound_then_503() -> None:
    async def scenario() -> None:
        model = Waiting()
        dispatch = Passthrough([model], max_in_flight=3)
        running = [asyncio.create_task(dispatch.submit(X, ["y"])) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert model.running == 3 and dispatch.queue_depth == 3
        with pytest.raises(Overloaded):
            await dispatch.submit(X, ["y"])
        model.release.set()
        results = await asyncio.gather(*running)
        assert all(r.outputs["y"].tolist() == [[2.0, 2.0]] for r in results)
        assert dispatch.queue_depth == 0

    asyncio.run(scenario())


def test_a_request_past_its_timeout_is_cancelled_and_answered_with_a_timeout() -> None:
    async def scenario() -> None:
        model = Waiting()
        dispatch = Passthrough([model], max_in_flight=3)
        with pytest.raises(DeadlineExceeded, match=r"no answer within 0\.05 s"):
            await dispatch.submit(X, ["y"], timeout=0.05)
        assert model.cancelled == 1 and model.running == 0

    asyncio.run(scenario())


def test_errors_keep_their_code_and_surprises_are_internal() -> None:
    async def scenario() -> None:
        dispatch = Passthrough([Waiting()], max_in_flight=3)
        with pytest.raises(InvalidRequest, match="bad"):
            await dispatch.submit(X, ["y"], parameters={"fail": InvalidRequest("bad")})
        with pytest.raises(InferenceFailed, match="inference failed: boom"):
            await dispatch.submit(X, ["y"], parameters={"fail": RuntimeError("boom")})
        assert dispatch.queue_depth == 0

    asyncio.run(scenario())


def test_close_refuses_new_requests_and_waits_for_those_running() -> None:
    async def scenario() -> None:
        model = Waiting()
        dispatch = Passthrough([model], max_in_flight=3)
        running = asyncio.create_task(dispatch.submit(X, ["y"]))
        await asyncio.sleep(0.01)
        closing = asyncio.create_task(dispatch.close(grace=5.0))
        await asyncio.sleep(0.01)
        with pytest.raises(Unavailable):
            await dispatch.submit(X, ["y"])
        assert not closing.done() and not model.closed
        model.release.set()
        await closing
        assert (await running).outputs["y"].shape == (1, 2) and model.closed

    asyncio.run(scenario())
