"""Sampled payload logging: a share of the requests, with their inputs and
outputs, to rotated JSON Lines files, for building the next training set.

The sampling is decided per request on the event loop (one random draw);
only a sampled request is serialised (orjson, numpy arrays natively) and
handed to a writer thread, which appends and rotates.
"""

from __future__ import annotations

import base64
import logging
import logging.handlers
import queue
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from turnout.protocol.types import InferenceRequest, InferenceResponse, InferInput, InferOutput

FILE = "payloads.jsonl"
log = logging.getLogger("turnout.payloads")

Typed = Mapping[str, tuple[str, np.ndarray[Any, Any]]]  # by name: (V2 datatype, tensor)


class _Line(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return str(record.msg)


class PayloadLog:
    def __init__(self, directory: Path, sample: float, max_bytes: int = 64 * 1024 * 1024, backups: int = 5) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / FILE
        self._sample = sample
        self._random = random.random
        handler = logging.handlers.RotatingFileHandler(self.path, maxBytes=max_bytes, backupCount=backups)
        handler.setFormatter(_Line())
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._handler = handler
        self._listener = logging.handlers.QueueListener(self._queue, handler)
        self._listener.start()

    def offer(self, request: InferenceRequest, response: InferenceResponse) -> None:
        """Write this exchange if it is drawn in the sample; never fails the request."""
        if self._random() >= self._sample:
            return
        try:
            self._write(request, response)
        except Exception as exc:  # an odd tensor (byte order, complex): that sample is skipped
            log.warning("payload of request %s not logged: %s", response.id, exc)

    def offer_tensors(self, model: str, version: str, inputs: Typed, outputs: Typed) -> None:
        """The same for an exchange that never was V2 objects (a pipeline's
        step): each tensor by name, with its datatype."""
        if self._random() >= self._sample:
            return
        request = InferenceRequest(model, version, [InferInput(n, d, a.shape, a) for n, (d, a) in inputs.items()])
        response = InferenceResponse(model, version, [InferOutput(n, d, a.shape, a) for n, (d, a) in outputs.items()])
        try:
            self._write(request, response)
        except Exception as exc:  # as in offer
            log.warning("payload of a request to %s not logged: %s", model, exc)

    def _write(self, request: InferenceRequest, response: InferenceResponse) -> None:
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "id": response.id,
            "model": response.model_name,
            "version": response.model_version,
            "variant": response.parameters.get("variant", ""),
            "inputs": {
                i.name: {"datatype": i.datatype, "shape": list(i.shape), "data": i.data} for i in request.inputs
            },
            "outputs": {
                o.name: {"datatype": o.datatype, "shape": list(o.shape), "data": o.data} for o in response.outputs
            },
        }
        line = orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY, default=_plain).decode()
        self._queue.put(logging.LogRecord("turnout.payloads", logging.INFO, "", 0, line, None, None))

    def close(self) -> None:
        self._listener.stop()  # everything queued is written first
        self._handler.close()


def _tensor(datatype: str, shape: tuple[int, ...], data: object) -> dict[str, object]:
    return {"datatype": datatype, "shape": list(shape), "data": data}


def _plain(value: object) -> object:
    """What orjson cannot write itself: bytes (BYTES tensors), numpy scalars and object arrays as lists."""
    if isinstance(value, bytes):  # text as text; anything else kept exactly, as base64
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return tolist()
    raise TypeError(f"cannot write {type(value).__name__} to the payload log")
