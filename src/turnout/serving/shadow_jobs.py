"""What a shadow copy of a request runs: the same request, checked and
queued at the shadow variant's live version when the mirror gets to it
(routing/shadow.py compares the outputs with the primary's)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from turnout.protocol.types import InferenceRequest, InferenceResponse
from turnout.routing.shadow import ShadowJob
from turnout.routing.variants import target
from turnout.serving.registry import ModelRegistry
from turnout.serving.validation import validate

_target = functools.lru_cache(maxsize=4096)(target)


def shadow_job(
    registry: ModelRegistry,
    endpoint: str,
    shadow: str,
    request: InferenceRequest,
    response: InferenceResponse,
    seconds: float,
) -> ShadowJob:
    where = _target(endpoint, shadow)

    async def run() -> Mapping[str, np.ndarray[Any, Any]]:
        served = registry.get(where.model, where.version)
        checked = validate(request, served.signature, served.max_batch_size)
        inputs = served.prepare(checked.inputs)
        result = await served.batcher.submit(inputs, checked.outputs, served.timeout, request.parameters)
        return result.outputs

    primary = {output.name: output.data for output in response.outputs}
    return ShadowJob(endpoint, shadow, response.id or "", run, primary, seconds)
