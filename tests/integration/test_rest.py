"""V2 REST driven with raw HTTP (httpx): health, metadata, JSON and binary
inference compared with ONNX Runtime in-process, and bad inputs."""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests.integration.reference import cancer_rows, diabetes_rows, run
from tests.support import ServerProcess


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        yield http


def infer_body(rows: np.ndarray[Any, Any], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}],
        **extra,
    }


def assert_still_serving(client: httpx.Client, test_repo: Path) -> None:
    rows = cancer_rows(2, start=10)
    response = client.post("/v2/models/breast_cancer/infer", json=infer_body(rows))
    assert response.status_code == 200, response.text
    expected = run(test_repo / "breast_cancer" / "2" / "model.onnx", {"input": rows})
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    np.testing.assert_array_equal(outputs["label"]["data"], expected["label"])


def test_health_and_server_metadata(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    metadata = client.get("/v2").json()
    assert metadata["name"] == "turnout"
    assert "binary_tensor_data" in metadata["extensions"]
    assert client.get("/v2/").json() == metadata


def test_model_metadata_comes_from_config_and_graph(client: httpx.Client) -> None:
    metadata = client.get("/v2/models/breast_cancer").json()
    assert metadata == {
        "name": "breast_cancer",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
        ],
    }
    assert client.get("/v2/models/breast_cancer/versions/1").json()["name"] == "breast_cancer"
    diabetes = client.get("/v2/models/diabetes").json()  # no signature in its model.toml: inferred
    assert diabetes["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 10]}]
    assert diabetes["outputs"] == [{"name": "prediction", "datatype": "FP32", "shape": [-1, 1]}]


def test_model_readiness(client: httpx.Client) -> None:
    assert client.get("/v2/models/breast_cancer/ready").status_code == 200
    assert client.get("/v2/models/breast_cancer/versions/1/ready").status_code == 200
    assert client.get("/v2/models/broken_file/ready").status_code == 503
    assert client.get("/v2/models/nope/ready").status_code == 404
    assert client.get("/v2/models/breast_cancer/versions/7/ready").status_code == 404


@pytest.mark.parametrize("version", [None, "1", "2"])
def test_json_inference_matches_onnx_runtime(client: httpx.Client, test_repo: Path, version: str | None) -> None:
    rows = cancer_rows(5)
    path = "/v2/models/breast_cancer" + (f"/versions/{version}" if version else "") + "/infer"
    response = client.post(path, json=infer_body(rows, id="req-42"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    served = version or "2"  # the highest version is the default
    assert body["model_name"] == "breast_cancer"
    assert body["model_version"] == served
    assert body["id"] == "req-42"
    expected = run(test_repo / "breast_cancer" / served / "model.onnx", {"input": rows})
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["label"]["datatype"] == "INT64"
    assert outputs["label"]["shape"] == [5]
    np.testing.assert_array_equal(outputs["label"]["data"], expected["label"])
    assert outputs["probabilities"]["shape"] == [5, 2]
    np.testing.assert_allclose(
        np.array(outputs["probabilities"]["data"], dtype=np.float32).reshape(5, 2), expected["probabilities"], rtol=1e-6
    )


def test_nested_data_and_requested_outputs(client: httpx.Client, test_repo: Path) -> None:
    rows = diabetes_rows(3)
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 10], "data": rows.tolist()}],
        "outputs": [{"name": "prediction"}],
    }
    response = client.post("/v2/models/diabetes/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    expected = run(test_repo / "diabetes" / "1" / "model.onnx", {"input": rows})["prediction"]
    np.testing.assert_allclose(np.array(output["data"], dtype=np.float32), expected.ravel(), rtol=1e-6)


def split_binary(response: httpx.Response) -> tuple[dict[str, Any], bytes]:
    header_length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:header_length]), response.content[header_length:]


def test_binary_extension_both_ways(client: httpx.Client, test_repo: Path) -> None:
    rows = cancer_rows(4)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [4, 30],
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label"}],
        }
    )
    response = client.post(
        "/v2/models/breast_cancer/versions/1/infer",
        content=header + rows.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    document, binary = split_binary(response)
    expected = run(test_repo / "breast_cancer" / "1" / "model.onnx", {"input": rows})
    outputs = {o["name"]: o for o in document["outputs"]}
    assert outputs["probabilities"]["parameters"]["binary_data_size"] == len(binary) == 4 * 2 * 4
    assert "data" not in outputs["probabilities"]
    np.testing.assert_array_equal(np.frombuffer(binary, dtype="<f4").reshape(4, 2), expected["probabilities"])
    np.testing.assert_array_equal(outputs["label"]["data"], expected["label"])  # asked for JSON


def test_binary_data_output_for_all_datatypes(client: httpx.Client) -> None:
    data = {
        "BOOL": [True, False, True],
        "INT8": [-128, 0, 127],
        "INT16": [-32768, 1, 32767],
        "INT32": [-(2**31), 2, 2**31 - 1],
        "INT64": [-(2**63), 3, 2**63 - 1],
        "UINT8": [0, 1, 255],
        "UINT16": [0, 2, 65535],
        "UINT32": [0, 3, 2**32 - 1],
        "UINT64": [0, 4, 2**64 - 1],
        "FP16": [0.5, -1.0, 65504.0],
        "FP32": [1.5, -2.25, 3.0e38],
        "FP64": [1e-300, -2.5, 1e300],
        "BYTES": ["a", "", "héllo"],
    }
    body = {
        "inputs": [
            {"name": f"in_{dt}", "datatype": dt, "shape": [1, 3], "data": values} for dt, values in data.items()
        ],
        "parameters": {"binary_data_output": True},
    }
    response = client.post("/v2/models/all_types/infer", json=body)
    assert response.status_code == 200, response.text
    document, binary = split_binary(response)
    offset = 0
    from turnout.protocol import raw  # the codec under test decodes what the server encoded

    for output in document["outputs"]:
        size = output["parameters"]["binary_data_size"]
        dt = output["datatype"]
        decoded = raw.decode(binary[offset : offset + size], dt, tuple(output["shape"]), output["name"])
        offset += size
        expected = data[dt]
        if dt == "BYTES":
            assert [b.decode() for b in decoded.ravel()] == expected
        else:
            np.testing.assert_array_equal(decoded.ravel(), np.array(expected, dtype=decoded.dtype))
    assert offset == len(binary)
    # and the same tensors answered as JSON
    body.pop("parameters")
    as_json = client.post("/v2/models/all_types/infer", json=body).json()
    for output in as_json["outputs"]:
        assert (
            output["data"] == pytest.approx(data[output["datatype"]])
            if output["datatype"]
            not in (
                "BYTES",
                "BOOL",
            )
            else output["data"] == data[output["datatype"]]
        )


def test_gzip_request_body(client: httpx.Client, test_repo: Path) -> None:
    rows = cancer_rows(2)
    response = client.post(
        "/v2/models/breast_cancer/infer",
        content=gzip.compress(orjson.dumps(infer_body(rows))),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    expected = run(test_repo / "breast_cancer" / "2" / "model.onnx", {"input": rows})
    np.testing.assert_array_equal(response.json()["outputs"][0]["data"], expected["label"])


def test_model_without_batch_axis(client: httpx.Client) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}]}
    response = client.post("/v2/models/fixed/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [2, 3, 4, 5]
    body["inputs"][0]["shape"] = [1, 4]
    assert client.post("/v2/models/fixed/infer", json=body).status_code == 400


BINARY_HEADER = orjson.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "parameters": {"binary_data_size": 40}}]}
)
BAD_REQUESTS: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
    ("malformed JSON", "breast_cancer", b'{"inputs": [', {}, 400, "malformed JSON"),
    ("not an object", "breast_cancer", b"[1, 2]", {}, 400, "JSON object"),
    ("no inputs", "breast_cancer", b'{"inputs": []}', {}, 400, "inputs"),
    (
        "wrong datatype",
        "breast_cancer",
        orjson.dumps({"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 30], "data": [0.0] * 30}]}),
        {},
        400,
        "must be FP32",
    ),
    (
        "wrong shape",
        "breast_cancer",
        orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 29], "data": [0.0] * 29}]}),
        {},
        400,
        "expects [-1, 30]",
    ),
    (
        "data shorter than shape",
        "breast_cancer",
        orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 30], "data": [0.0] * 30}]}),
        {},
        400,
        "60 elements but data has 30",
    ),
    (
        "strings as FP32",
        "diabetes",
        orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": ["x"] * 10}]}),
        {},
        400,
        "not FP32",
    ),
    (
        "missing input",
        "all_types",
        orjson.dumps({"inputs": [{"name": "in_FP32", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}),
        {},
        400,
        "missing input",
    ),
    (
        "unknown input",
        "diabetes",
        orjson.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 10], "data": [0] * 10}]}),
        {},
        400,
        "unknown input 'features'",
    ),
    (
        "unknown output",
        "diabetes",
        orjson.dumps(
            {
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": [0] * 10}],
                "outputs": [{"name": "nope"}],
            }
        ),
        {},
        400,
        "unknown output",
    ),
    (
        "batch over max_batch_size",
        "diabetes",
        orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [65, 10], "data": [0] * 650}]}),
        {},
        400,
        "max_batch_size 64",
    ),
    (
        "binary size beyond body",
        "diabetes",
        BINARY_HEADER + b"\0" * 8,
        {"Inference-Header-Content-Length": str(len(BINARY_HEADER))},
        400,
        "binary_data_size 40",
    ),
    ("bad header length", "diabetes", b"{}", {"Inference-Header-Content-Length": "abc"}, 400, "integer"),
    ("unknown model", "nope", orjson.dumps({"inputs": []}), {}, 404, "unknown model 'nope'"),
    ("broken model", "broken_file", b"{}", {}, 503, "ONNX Runtime cannot load"),
    ("bad config", "bad_config", b"{}", {}, 503, "max_batch_sise"),
    ("oversized body", "diabetes", b"[" + b"0," * 600_000 + b"0]", {}, 413, "exceeds the limit"),
    ("unsupported encoding", "diabetes", b"{}", {"Content-Encoding": "br"}, 400, "Content-Encoding"),
]


@pytest.mark.parametrize(
    ("model", "body", "headers", "status", "message"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request_gets_clear_error_and_server_keeps_serving(
    client: httpx.Client,
    test_repo: Path,
    model: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    response = client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]
    assert_still_serving(client, test_repo)


def test_unknown_version_is_404(client: httpx.Client) -> None:
    body = infer_body(cancer_rows(1))
    response = client.post("/v2/models/breast_cancer/versions/9/infer", json=body)
    assert response.status_code == 404
    assert "no version '9'" in response.json()["error"]
    assert client.get("/v2/models/breast_cancer/versions/abc").status_code == 404


def test_gzip_bomb_is_refused(client: httpx.Client, test_repo: Path) -> None:
    bomb = gzip.compress(b" " * 5_000_000)  # 5 MB of spaces, ~5 KB compressed, over the 1 MB limit
    response = client.post("/v2/models/diabetes/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert_still_serving(client, test_repo)


def test_bytes_binary_input_framing_errors(client: httpx.Client) -> None:
    element = b"abc"
    payload = struct.pack("<I", 10) + element  # declares 10 bytes, has 3
    header = orjson.dumps(
        {
            "inputs": [
                {"name": f"in_{dt}", "datatype": dt, "shape": [1, 3], "data": [0, 0, 0]}
                for dt in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP32", "FP64")
            ]
            + [
                {"name": "in_BOOL", "datatype": "BOOL", "shape": [1, 3], "data": [True, True, False]},
                {"name": "in_FP16", "datatype": "FP16", "shape": [1, 3], "data": [1, 2, 3]},
                {
                    "name": "in_BYTES",
                    "datatype": "BYTES",
                    "shape": [1, 3],
                    "parameters": {"binary_data_size": len(payload)},
                },
            ]
        }
    )
    response = client.post(
        "/v2/models/all_types/infer",
        content=header + payload,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert "in_BYTES" in response.json()["error"]
