"""Custom Python models on a real server: the README's example
(``examples/python_models``) answers text over REST JSON, REST with the
binary extension and gRPC (tritonclient both), and a model whose predict
fails or answers wrongly gets a 500 naming it while the server serves on."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.support import ServerProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python_models"
FAILING = """\
from turnout import PythonModel, Tensor


class Failing(PythonModel):
    inputs = (Tensor("x", "FP32", [-1, 1]),)
    outputs = (Tensor("y", "FP32", [-1, 1]),)

    def predict(self, inputs, parameters):
        x = inputs["x"]
        if (x < 0).any():
            raise ArithmeticError("negative input")
        if (x > 100).any():
            return {"y": x[:1]}
        return {"y": x * 2}
"""


@pytest.fixture(scope="module")
def python_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("python_models")
    models = base / "models"
    shutil.copytree(EXAMPLES, models)
    (models / "failing" / "1").mkdir(parents=True)
    (models / "failing" / "1" / "model.py").write_text(FAILING)
    (models / "failing" / "model.toml").write_text('runtime = "python"\ntrusted = true\n')
    with ServerProcess(models, "--allow-trusted-models", log_dir=base) as server:
        yield server


def test_the_example_answers_text_over_rest_json(python_server: ServerProcess) -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["hello", "zoë"]}]}
    with httpx.Client(base_url=python_server.url, timeout=30) as client:
        metadata = client.get("/v2/models/text_stats").json()
        assert metadata["platform"] == "python"
        assert [(t["name"], t["datatype"]) for t in metadata["outputs"]] == [
            ("shouted", "BYTES"),
            ("characters", "INT64"),
        ]
        reply = client.post("/v2/models/text_stats/infer", json=body)
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    assert outputs["shouted"]["data"] == ["HELLO!", "ZOË!"]
    assert outputs["characters"]["data"] == [5, 3]


def test_the_example_answers_text_through_tritonclient_binary_and_grpc(python_server: ServerProcess) -> None:
    texts = np.array([b"a", "d\u00e9f".encode(), b""], dtype=object)
    over_http = httpclient.InferenceServerClient(python_server.url.removeprefix("http://"))
    text = httpclient.InferInput("text", [3], "BYTES")
    text.set_data_from_numpy(texts, binary_data=True)
    wanted = [httpclient.InferRequestedOutput(n, binary_data=True) for n in ("shouted", "characters")]
    result = over_http.infer("text_stats", [text], outputs=wanted)
    assert result.as_numpy("shouted").tolist() == [b"A!", "D\u00c9F!".encode(), b"!"]
    assert result.as_numpy("characters").tolist() == [1, 3, 0]
    over_grpc = grpcclient.InferenceServerClient(python_server.grpc_address)
    text = grpcclient.InferInput("text", [3], "BYTES")
    text.set_data_from_numpy(texts)
    result = over_grpc.infer("text_stats", [text])
    assert result.as_numpy("shouted").tolist() == [b"A!", "D\u00c9F!".encode(), b"!"]
    assert result.as_numpy("characters").tolist() == [1, 3, 0]


def test_a_failing_or_wrong_predict_is_a_500_naming_it_and_the_server_serves_on(
    python_server: ServerProcess,
) -> None:
    def call(value: float) -> httpx.Response:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1], "data": [value, 1.0]}]}
        return httpx.post(f"{python_server.url}/v2/models/failing/infer", json=body, timeout=30)

    failed = call(-1.0)
    assert failed.status_code == 500 and "negative input" in failed.json()["error"]
    wrong = call(1000.0)
    assert wrong.status_code == 500 and "output 'y' has 1 rows for 2 input rows" in wrong.json()["error"]
    fine = call(3.0)
    assert fine.status_code == 200 and fine.json()["outputs"][0]["data"] == [6.0, 2.0]


def test_bytes_that_are_not_text_are_answered_and_the_server_serves_on(python_server: ServerProcess) -> None:
    over_grpc = grpcclient.InferenceServerClient(python_server.grpc_address)
    text = grpcclient.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"\xff\xfeab", b"ok"], dtype=object))
    result = over_grpc.infer("text_stats", [text])
    assert result.as_numpy("shouted").tolist() == ["\ufffd\ufffdAB!".encode(), b"OK!"]
    assert result.as_numpy("characters").tolist() == [4, 2]
