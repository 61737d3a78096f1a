"""Inputs a careless or hostile client sends: each gets a clear 4xx in the V2
error shape, and the server goes on answering good requests correctly."""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from tests.integration.reference import cancer_rows, run
from tests.support import ServerProcess


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        yield http


@pytest.fixture(autouse=True)
def still_serving(client: httpx.Client, test_repo: Path) -> Iterator[None]:
    yield
    rows = cancer_rows(2, start=30)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 30], "data": rows.ravel().tolist()}]}
    response = client.post("/v2/models/breast_cancer/versions/1/infer", json=body)
    assert response.status_code == 200, response.text
    expected = run(test_repo / "breast_cancer" / "1" / "model.onnx", {"input": rows})
    np.testing.assert_array_equal(response.json()["outputs"][0]["data"], expected["label"])


def assert_error(response: httpx.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]


@pytest.mark.parametrize("version", ["%C2%B2", "%D9%A1", "01", "9" * 5000, "-1"])
def test_odd_version_strings_are_unknown_versions(client: httpx.Client, version: str) -> None:
    assert_error(client.get(f"/v2/models/breast_cancer/versions/{version}"), 404, "has no version")


@pytest.mark.parametrize("value", ["\u00b2".encode(), b"9" * 5000, b"-3", b"1e3"])
def test_odd_header_lengths(client: httpx.Client, value: bytes) -> None:
    response = client.post(
        "/v2/models/diabetes/infer", content=b"{}", headers={"Inference-Header-Content-Length": value}
    )
    assert_error(response, 400, "Inference-Header-Content-Length")


def test_router_errors_are_json(client: httpx.Client) -> None:
    assert_error(client.post("/v2/health/live"), 405, "POST is not allowed")
    assert_error(client.get("/v2/models/breast_cancer/stats"), 404, "no such endpoint")


def test_deeply_nested_data(client: httpx.Client) -> None:
    for datatype, leaf in (("BYTES", '"a"'), ("FP32", "1.0")):
        data = "[" * 1000 + leaf + "]" * 1000
        body = f'{{"inputs": [{{"name": "input", "datatype": "{datatype}", "shape": [1], "data": {data}}}]}}'
        response = client.post("/v2/models/breast_cancer/infer", content=body)
        assert response.status_code == 400, response.text
        assert "input" in response.json()["error"]


def test_huge_shape_with_little_data(client: httpx.Client) -> None:
    """Refused by the shape alone (the element limit), before any data is read."""
    header = orjson.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [10**9, 30], "parameters": {"binary_data_size": 0}}]}
    )
    response = client.post(
        "/v2/models/breast_cancer/infer", content=header, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert_error(response, 413, "shape [1000000000, 30] has 30000000000 elements, over the server's limit")
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [10**9, 30], "data": [0.0] * 30}]}
    assert_error(client.post("/v2/models/breast_cancer/infer", json=body), 413, "--max-tensor-elements")
    # within the limit, a shape the data does not fill is the client's error as before
    header = orjson.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1000, 30], "parameters": {"binary_data_size": 0}}]}
    )
    response = client.post(
        "/v2/models/breast_cancer/infer", content=header, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert_error(response, 400, "needs 120000 bytes, got 0")


def test_booleans_are_not_numbers(client: httpx.Client) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": [True] + [0.1] * 9}]}
    assert_error(client.post("/v2/models/diabetes/infer", json=body), 400, "booleans")


def test_bool_bytes_must_be_zero_or_one(client: httpx.Client) -> None:
    header = orjson.dumps(
        {
            "inputs": [
                {"name": f"in_{dt}", "datatype": dt, "shape": [1, 3], "data": [0, 0, 0]}
                for dt in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16")
            ]
            + [
                {"name": f"in_{dt}", "datatype": dt, "shape": [1, 3], "data": [0.0, 0.0, 0.0]}
                for dt in ("FP32", "FP64")
            ]
            + [
                {"name": "in_BYTES", "datatype": "BYTES", "shape": [1, 3], "data": ["a", "b", "c"]},
                {"name": "in_BOOL", "datatype": "BOOL", "shape": [1, 3], "parameters": {"binary_data_size": 3}},
            ]
        }
    )
    response = client.post(
        "/v2/models/all_types/infer",
        content=header + b"\x00\x01\x02",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert_error(response, 400, "BOOL bytes must be 0 or 1")


def test_text_that_is_not_utf8_is_refused_alone(client: httpx.Client) -> None:
    inputs = [
        {"name": f"in_{dt}", "datatype": dt, "shape": [1, 3], "data": [0, 0, 0]}
        for dt in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64")
    ] + [{"name": "in_BOOL", "datatype": "BOOL", "shape": [1, 3], "data": [True, False, True]}]
    payload = b"".join(len(b).to_bytes(4, "little") + b for b in (b"ok", b"\xff\xfe", b"x"))
    header = orjson.dumps(
        {
            "inputs": [
                *inputs,
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
    assert_error(response, 400, "input 'in_BYTES': the model takes UTF-8 text")


def test_gzip_must_end_cleanly(client: httpx.Client) -> None:
    body = gzip.compress(b'{"inputs": []}')
    headers = {"Content-Encoding": "gzip"}
    assert_error(
        client.post("/v2/models/diabetes/infer", content=body + b"junk", headers=headers), 400, "after its end"
    )
    assert_error(client.post("/v2/models/diabetes/infer", content=body[:-6], headers=headers), 400, "truncated")


def test_unsupported_parameters_are_refused(client: httpx.Client, server: ServerProcess) -> None:
    rows = [0.0] * 10
    base = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": rows}]}
    classification = {**base, "outputs": [{"name": "prediction", "parameters": {"classification": 2}}]}
    assert_error(client.post("/v2/models/diabetes/infer", json=classification), 400, "classification")
    odd_flag = {**base, "outputs": [{"name": "prediction", "parameters": {"binary_data": "yes"}}]}
    assert_error(client.post("/v2/models/diabetes/infer", json=odd_flag), 400, "binary_data must be true or false")
    with server.admin_client() as admin:
        load = admin.post("/v2/repository/models/diabetes/load", json={"parameters": {"config": "{}"}})
    assert_error(load, 400, "load parameters ['config'] are not supported")


@pytest.mark.parametrize("name", ["..", "%2E%2E", "a" * 5000, ".hidden"])
def test_model_names_cannot_leave_the_repository(server: ServerProcess, name: str) -> None:
    with server.admin_client() as admin:
        response = admin.post(f"/v2/repository/models/{name}/load")
    assert response.status_code in (404, 405), response.text  # '..' may be normalised away by the client
    assert response.headers["content-type"] == "application/json"


def test_non_finite_outputs_are_written_as_triton_does(client: httpx.Client) -> None:
    values = [math.nan, math.inf, -math.inf]
    inputs = [
        {"name": f"in_{dt}", "datatype": dt, "shape": [1, 3], "data": [0, 0, 0]}
        for dt in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP64")
    ] + [
        {"name": "in_BOOL", "datatype": "BOOL", "shape": [1, 3], "data": [True, False, True]},
        {"name": "in_BYTES", "datatype": "BYTES", "shape": [1, 3], "data": ["a", "b", "c"]},
        {"name": "in_FP32", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}},
    ]
    header = orjson.dumps({"inputs": inputs, "outputs": [{"name": "out_FP32"}]})
    response = client.post(
        "/v2/models/all_types/infer",
        content=header + np.array(values, dtype="<f4").tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    assert b"[NaN,Infinity,-Infinity]" in response.content
    data = response.json()["outputs"][0]["data"]  # Python's json reads them back
    assert math.isnan(data[0]) and data[1:] == [math.inf, -math.inf]
