"""Requests for the test repository's ``slow`` model (~50 ms a request), sent
with the binary extension since its input is 256 KB."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import orjson

SLOW_INPUT = np.random.default_rng(1).standard_normal((1, 256, 256)).astype(np.float32)


def post_slow(
    base_url: str,
    parameters: dict[str, Any] | None = None,
    timeout: float = 60.0,
    model: str = "slow",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 256, 256],
                    "parameters": {"binary_data_size": SLOW_INPUT.nbytes},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
            "parameters": parameters or {},
        }
    )
    return httpx.post(
        f"{base_url}/v2/models/{model}/infer",
        content=header + SLOW_INPUT.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), **(headers or {})},
        timeout=timeout,
    )


def slow_output(response: httpx.Response) -> np.ndarray[Any, Any]:
    length = int(response.headers["inference-header-content-length"])
    return np.frombuffer(response.content[length:], dtype="<f4").reshape(1, 256, 256)
