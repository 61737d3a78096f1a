"""Request bodies for the load generator, built once and sent many times.

Inputs come from the model's V2 metadata (random values of the right datatype
and shape, variable dimensions set to 1) or from a V2 JSON request file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from turnout.protocol import raw
from turnout.protocol.datatypes import BYTES, to_numpy
from turnout.protocol.json_data import decode as decode_json_data

Tensors = dict[str, tuple[str, np.ndarray[Any, Any]]]  # name -> (datatype, array)


@dataclass(frozen=True, slots=True)
class HttpPayload:
    body: bytes
    headers: dict[str, str]


def tensors_from_metadata(metadata: dict[str, Any], batch: int = 1, seed: int = 0) -> Tensors:
    rng = np.random.default_rng(seed)
    tensors: Tensors = {}
    for spec in metadata["inputs"]:
        shape = tuple(batch if (i == 0 and d == -1) else (1 if d == -1 else d) for i, d in enumerate(spec["shape"]))
        datatype = spec["datatype"]
        if datatype == BYTES:
            array = np.array([b"turnout"] * int(np.prod(shape)), dtype=object).reshape(shape)
        elif datatype == "BOOL":
            array = rng.integers(0, 2, shape).astype(bool)
        elif to_numpy(datatype).kind in "iu":
            array = rng.integers(0, 100, shape).astype(to_numpy(datatype))
        else:
            array = rng.standard_normal(shape).astype(to_numpy(datatype))
        tensors[spec["name"]] = (datatype, array)
    return tensors


def tensors_from_file(path: Path) -> Tensors:
    """Inputs from a V2 JSON request body (``{"inputs": [...]}``)."""
    document = json.loads(path.read_text())
    tensors: Tensors = {}
    for item in document["inputs"]:
        shape = tuple(item["shape"])
        tensors[item["name"]] = (
            item["datatype"],
            decode_json_data(item["data"], item["datatype"], shape, item["name"]),
        )
    return tensors


def rest_json(tensors: Tensors) -> HttpPayload:
    inputs = [
        {"name": name, "datatype": datatype, "shape": list(array.shape), "data": _json_values(array, datatype)}
        for name, (datatype, array) in tensors.items()
    ]
    return HttpPayload(orjson.dumps({"inputs": inputs}), {"Content-Type": "application/json"})


def grpc_message(model: str, version: str, tensors: Tensors) -> bytes:
    """A serialized ModelInferRequest, inputs as raw contents (as tritonclient sends them)."""
    from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for name, (datatype, array) in tensors.items():
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(raw.encode(array, datatype))
    return bytes(request.SerializeToString())


def rest_binary(tensors: Tensors) -> HttpPayload:
    """Triton's binary extension, inputs and outputs, as tritonclient sends it."""
    chunks = [raw.encode(array, datatype) for datatype, array in tensors.values()]
    inputs = [
        {
            "name": name,
            "datatype": datatype,
            "shape": list(array.shape),
            "parameters": {"binary_data_size": len(chunk)},
        }
        for (name, (datatype, array)), chunk in zip(tensors.items(), chunks, strict=True)
    ]
    header = orjson.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}})
    return HttpPayload(
        header + b"".join(chunks),
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
    )


def _json_values(array: np.ndarray[Any, Any], datatype: str) -> list[Any]:
    flat = array.reshape(-1)
    if datatype == BYTES:
        return [raw.as_bytes(item).decode() for item in flat]
    values: list[Any] = flat.tolist()
    return values
