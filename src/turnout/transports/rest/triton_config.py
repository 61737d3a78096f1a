"""A served version's configuration in the shape of Triton's model configuration
(``GET /v2/models/{m}/config``), which Triton's tools (perf_analyzer, model
analyzer, client helpers) read to learn the batch size and tensor layout."""

from __future__ import annotations

from typing import Any

from turnout.model.signature import TensorSpec
from turnout.protocol.datatypes import BYTES
from turnout.serving.served import ServedVersion

_BACKENDS = {"onnx": "onnxruntime"}  # Triton's backend names


def _data_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == BYTES else f"TYPE_{datatype}"


def _tensor(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    # Triton's dims leave out the batch axis when the model batches, and are
    # never empty: a tensor with only the batch axis is dims [1] reshaped to [].
    dims = list(spec.shape[1:] if batched else spec.shape)
    tensor: dict[str, Any] = {"name": spec.name, "data_type": _data_type(spec.datatype), "dims": dims or [1]}
    if not dims:
        tensor["reshape"] = {"shape": []}
    return tensor


def triton_model_config(served: ServedVersion) -> dict[str, Any]:
    config = served.config
    batched = served.max_batch_size > 0
    policy = config.version_policy
    if policy.all:
        version_policy: dict[str, Any] = {"all": {}}
    elif policy.specific is not None:
        version_policy = {"specific": {"versions": list(policy.specific)}}
    else:
        version_policy = {"latest": {"num_versions": policy.latest}}
    document: dict[str, Any] = {
        "name": served.model,
        "platform": served.platform,
        "backend": _BACKENDS.get(config.runtime.name, config.runtime.name),
        "version_policy": version_policy,
        "max_batch_size": served.max_batch_size,
        "input": [_tensor(s, batched) for s in served.signature.inputs],
        "output": [_tensor(s, batched) for s in served.signature.outputs],
        "instance_group": [{"count": config.instances.count, "kind": "KIND_CPU"}],
    }
    if batched:
        document["dynamic_batching"] = {
            "preferred_batch_size": list(config.batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": round(config.batching.max_queue_delay_ms * 1000),
        }
    return document
