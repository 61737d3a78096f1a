"""200 concurrent requests, each with its own rows, all answered correctly:
the batcher joins them and must hand every request back exactly its rows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc.aio as grpcaio

from tests.integration.reference import cancer_rows, run
from tests.support import ServerProcess

COUNT = 200


def _requests() -> list[np.ndarray]:
    data = cancer_rows(569)
    # sizes 1..4 so joined batches have uneven boundaries
    return [data[(i * 3) % 560 : (i * 3) % 560 + 1 + i % 4] for i in range(COUNT)]


def test_200_concurrent_rest_requests(server: ServerProcess, test_repo: Path) -> None:
    requests = _requests()

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=COUNT)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v2/models/breast_cancer/versions/1/infer",
                        json={
                            "id": str(i),
                            "inputs": [
                                {
                                    "name": "input",
                                    "datatype": "FP32",
                                    "shape": list(r.shape),
                                    "data": r.ravel().tolist(),
                                }
                            ],
                        },
                    )
                    for i, r in enumerate(requests)
                )
            )

    responses = asyncio.run(send_all())
    model = test_repo / "breast_cancer" / "1" / "model.onnx"
    expected = run(model, {"input": np.concatenate(requests)})
    offset = 0
    for i, (rows, response) in enumerate(zip(requests, responses, strict=True)):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == str(i)
        outputs = {o["name"]: o for o in body["outputs"]}
        n = len(rows)
        np.testing.assert_array_equal(outputs["label"]["data"], expected["label"][offset : offset + n])
        np.testing.assert_allclose(
            np.array(outputs["probabilities"]["data"], dtype=np.float32).reshape(n, 2),
            expected["probabilities"][offset : offset + n],
            rtol=1e-6,
        )
        offset += n


def test_200_concurrent_grpc_requests(server: ServerProcess, test_repo: Path) -> None:
    requests = _requests()

    async def send_all() -> list[np.ndarray]:
        client = grpcaio.InferenceServerClient(server.grpc_address)
        try:

            async def one(rows: np.ndarray, i: int) -> np.ndarray:
                tensor = grpcaio.InferInput("input", list(rows.shape), "FP32")
                tensor.set_data_from_numpy(rows)
                result = await client.infer("breast_cancer", [tensor], model_version="2", request_id=str(i))
                assert result.get_response().id == str(i)
                return result.as_numpy("probabilities")

            return await asyncio.gather(*(one(r, i) for i, r in enumerate(requests)))
        finally:
            await client.close()

    results = asyncio.run(send_all())
    expected = run(test_repo / "breast_cancer" / "2" / "model.onnx", {"input": np.concatenate(requests)})
    # batch composition may move the last bit of a tree-ensemble sum
    np.testing.assert_allclose(np.concatenate(results), expected["probabilities"], rtol=1e-5, atol=1e-6)
