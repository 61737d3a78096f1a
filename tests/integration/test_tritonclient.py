"""Triton's own clients, unchanged, against turnout: HTTP with the binary
extension on and off, and gRPC; outputs compared with ONNX Runtime in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.reference import cancer_rows, diabetes_rows, run
from tests.support import ServerProcess

ALL_TYPES: dict[str, np.ndarray[Any, Any]] = {
    "BOOL": np.array([[True, False, True]]),
    "INT8": np.array([[-128, 0, 127]], dtype=np.int8),
    "INT16": np.array([[-32768, 1, 32767]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 2, 2**31 - 1]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 3, 2**63 - 1]], dtype=np.int64),
    "UINT8": np.array([[0, 1, 255]], dtype=np.uint8),
    "UINT16": np.array([[0, 2, 65535]], dtype=np.uint16),
    "UINT32": np.array([[0, 3, 2**32 - 1]], dtype=np.uint32),
    "UINT64": np.array([[0, 4, 2**64 - 1]], dtype=np.uint64),
    "FP16": np.array([[0.5, -1.0, 65504.0]], dtype=np.float16),
    "FP32": np.array([[1.5, -2.25, 3.0e38]], dtype=np.float32),
    "FP64": np.array([[1e-300, -2.5, 1e300]], dtype=np.float64),
    "BYTES": np.array([[b"a", b"", "héllo".encode()]], dtype=np.object_),
}


def http_client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")


def grpc_client(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_address)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_client_infer(server: ServerProcess, test_repo: Path, binary: bool) -> None:
    rows = cancer_rows(8)
    client = http_client(server)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("breast_cancer")
        assert client.get_model_metadata("breast_cancer")["versions"] == ["1", "2"]
        tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        outputs = [
            httpclient.InferRequestedOutput("label", binary_data=binary),
            httpclient.InferRequestedOutput("probabilities", binary_data=binary),
        ]
        for version in ("1", "2"):
            result = client.infer("breast_cancer", [tensor], model_version=version, outputs=outputs, request_id="7")
            expected = run(test_repo / "breast_cancer" / version / "model.onnx", {"input": rows})
            np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
            np.testing.assert_allclose(result.as_numpy("probabilities"), expected["probabilities"], rtol=1e-6)
            assert result.get_response()["id"] == "7"
        # no outputs named: the client asks for every output in binary
        result = client.infer("diabetes", [_http_input("input", diabetes_rows(3), binary)])
        expected = run(test_repo / "diabetes" / "1" / "model.onnx", {"input": diabetes_rows(3)})
        np.testing.assert_allclose(result.as_numpy("prediction"), expected["prediction"], rtol=1e-6)
    finally:
        client.close()


def _http_input(name: str, array: np.ndarray[Any, Any], binary: bool) -> httpclient.InferInput:
    datatype = "BYTES" if array.dtype == np.object_ else _triton_dtype(array)
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def _triton_dtype(array: np.ndarray[Any, Any]) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(array.dtype))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_client_every_datatype(server: ServerProcess, binary: bool) -> None:
    client = http_client(server)
    try:
        inputs = []
        for datatype, array in ALL_TYPES.items():
            if datatype == "FP16" and not binary:
                continue  # tritonclient cannot put FP16 in JSON
            inputs.append(_http_input(f"in_{datatype}", array, binary))
        if not binary:
            inputs.append(_http_input("in_FP16", ALL_TYPES["FP16"], True))
        outputs = [httpclient.InferRequestedOutput(f"out_{dt}", binary_data=binary) for dt in ALL_TYPES]
        result = client.infer("all_types", inputs, outputs=outputs)
        for datatype, array in ALL_TYPES.items():
            got = result.as_numpy(f"out_{datatype}")
            if datatype == "BYTES":
                assert [x if isinstance(x, bytes) else x.encode() for x in got.ravel()] == list(array.ravel())
            else:
                np.testing.assert_array_equal(got, array)
                assert got.dtype == array.dtype
    finally:
        client.close()


def test_grpc_client_infer_and_metadata(server: ServerProcess, test_repo: Path) -> None:
    rows = cancer_rows(6)
    client = grpc_client(server)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("breast_cancer", "1")
        metadata = client.get_model_metadata("breast_cancer", as_json=True)
        assert metadata["platform"] == "onnxruntime_onnx"
        assert [i["name"] for i in metadata["inputs"]] == ["input"]
        assert client.get_server_metadata(as_json=True)["name"] == "turnout"
        tensor = grpcclient.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        for version in ("1", "2"):
            result = client.infer("breast_cancer", [tensor], model_version=version, request_id="g1")
            expected = run(test_repo / "breast_cancer" / version / "model.onnx", {"input": rows})
            np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
            np.testing.assert_allclose(result.as_numpy("probabilities"), expected["probabilities"], rtol=1e-6)
            assert result.get_response().id == "g1"
            assert result.get_response().model_version == version
    finally:
        client.close()


def test_grpc_client_every_datatype(server: ServerProcess) -> None:
    client = grpc_client(server)
    try:
        inputs = []
        for datatype, array in ALL_TYPES.items():
            tensor = grpcclient.InferInput(f"in_{datatype}", list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = client.infer("all_types", inputs)
        for datatype, array in ALL_TYPES.items():
            got = result.as_numpy(f"out_{datatype}")
            if datatype == "BYTES":
                assert list(got.ravel()) == list(array.ravel())
            else:
                np.testing.assert_array_equal(got, array)
    finally:
        client.close()


GRPC_ERRORS = [
    ("unknown model", "nope", "FP32", [1, 30], "StatusCode.NOT_FOUND"),
    ("wrong datatype", "breast_cancer", "FP64", [1, 30], "StatusCode.INVALID_ARGUMENT"),
    ("wrong shape", "breast_cancer", "FP32", [1, 31], "StatusCode.INVALID_ARGUMENT"),
    ("broken model", "broken_file", "FP32", [1, 30], "StatusCode.UNAVAILABLE"),
]


@pytest.mark.parametrize(
    ("model", "datatype", "shape", "status"), [c[1:] for c in GRPC_ERRORS], ids=[c[0] for c in GRPC_ERRORS]
)
def test_grpc_errors_have_status_codes(
    server: ServerProcess, test_repo: Path, model: str, datatype: str, shape: list[int], status: str
) -> None:
    client = grpc_client(server)
    try:
        array = np.zeros(shape, dtype=np.float64 if datatype == "FP64" else np.float32)
        tensor = grpcclient.InferInput("input", shape, datatype)
        tensor.set_data_from_numpy(array)
        with pytest.raises(InferenceServerException) as caught:
            client.infer(model, [tensor])
        assert caught.value.status() == status
        rows = cancer_rows(1)
        good = grpcclient.InferInput("input", [1, 30], "FP32")
        good.set_data_from_numpy(rows)
        expected = run(test_repo / "breast_cancer" / "2" / "model.onnx", {"input": rows})
        np.testing.assert_array_equal(client.infer("breast_cancer", [good]).as_numpy("label"), expected["label"])
    finally:
        client.close()


def test_grpc_missing_and_unknown_inputs(server: ServerProcess) -> None:
    client = grpc_client(server)
    try:
        tensor = grpcclient.InferInput("in_FP32", [1, 3], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
        with pytest.raises(InferenceServerException, match="missing input") as caught:
            client.infer("all_types", [tensor])
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
        other = grpcclient.InferInput("features", [1, 10], "FP32")
        other.set_data_from_numpy(np.zeros((1, 10), dtype=np.float32))
        with pytest.raises(InferenceServerException, match="unknown input 'features'"):
            client.infer("diabetes", [other])
    finally:
        client.close()


def test_http_client_errors(server: ServerProcess) -> None:
    client = http_client(server)
    try:
        tensor = httpclient.InferInput("input", [1, 30], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 30), dtype=np.float32))
        with pytest.raises(InferenceServerException, match="unknown model") as caught:
            client.infer("nope", [tensor])
        assert caught.value.status() == "404"
        with pytest.raises(InferenceServerException, match="no version '5'"):
            client.infer("breast_cancer", [tensor], model_version="5")
    finally:
        client.close()


def test_http_model_config_in_tritons_shape(server: ServerProcess) -> None:
    client = http_client(server)
    try:
        config = client.get_model_config("breast_cancer")
        assert config["max_batch_size"] == 64
        assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [30]}]
        assert config["output"][1] == {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [2]}
        # a tensor with only the batch axis: Triton's dims are never empty
        assert config["output"][0] == {
            "name": "label",
            "data_type": "TYPE_INT64",
            "dims": [1],
            "reshape": {"shape": []},
        }
        assert config["backend"] == "onnxruntime"
        assert config["dynamic_batching"] == {"preferred_batch_size": [16, 32], "max_queue_delay_microseconds": 1000}
        assert config["version_policy"] == {"all": {}}
        fixed = client.get_model_config("fixed")
        assert fixed["max_batch_size"] == 0
        assert fixed["input"][0]["dims"] == [2, 2]
        assert "dynamic_batching" not in fixed
        with pytest.raises(InferenceServerException):
            client.get_model_config("nope")
    finally:
        client.close()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_grpc_compressed_requests(server: ServerProcess, test_repo: Path, algorithm: str) -> None:
    client = grpc_client(server)
    try:
        rows = cancer_rows(64)
        tensor = grpcclient.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = client.infer("breast_cancer", [tensor], compression_algorithm=algorithm)
        expected = run(test_repo / "breast_cancer" / "2" / "model.onnx", {"input": rows})
        np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
    finally:
        client.close()


def test_grpc_deadline_and_message_limit(server: ServerProcess) -> None:
    """The session server takes messages up to 1,000,000 bytes and ``slow`` takes tens of ms a row."""
    client = grpc_client(server)
    try:
        rows = np.zeros((8, 256, 256), dtype=np.float32)  # ~2 MB
        big = grpcclient.InferInput("x", list(rows.shape), "FP32")
        big.set_data_from_numpy(rows)
        with pytest.raises(InferenceServerException, match="larger than 1000000 bytes") as caught:
            client.infer("slow_queue", [big])
        assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        one = grpcclient.InferInput("x", [1, 256, 256], "FP32")
        one.set_data_from_numpy(rows[:1])
        with pytest.raises(InferenceServerException) as caught:
            client.infer("slow_queue", [one], client_timeout=0.001)
        assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        assert client.infer("slow_queue", [one], client_timeout=30).as_numpy("y").shape == (1, 256, 256)
    finally:
        client.close()
