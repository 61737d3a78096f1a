"""The README's examples outside the walkthrough (tests/integration/test_walkthrough.py),
run as printed (ports aside) against a real server, must give the answers the
README documents."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pytest
import skops.io as sio
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import xgboost
from sklearn.datasets import load_breast_cancer, load_iris

from tests.support import ServerProcess

pytestmark = [pytest.mark.programs("curl")]
# the bring-your-own examples' servers run beside `make serve`, on ports of their own
BYO_PORTS = ["--http-port", "8090", "--grpc-port", "8091", "--no-admin", "--no-inference-auth"]
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def block_after(marker: str, language: str) -> str:
    """The first fenced block of ``language`` after ``marker`` in the README."""
    start = README.index(marker)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(README, start)
    assert match, f"no {language} block after {marker!r}"
    return match.group(1)


def on_test_ports(text: str, server: ServerProcess) -> str:
    """The README's ports (8080 and 8081 for `make serve`, 8090 and 8091 for the
    bring-your-own examples) as the test server's."""
    for rest, grpc in (("8080", "8081"), ("8090", "8091")):
        text = text.replace(f"127.0.0.1:{rest}", f"127.0.0.1:{server.http_port}").replace(
            f"127.0.0.1:{grpc}", server.grpc_address
        )
    return text


def approximately(answer: dict[str, Any]) -> dict[str, Any]:
    """A V2 answer whose floats compare within float32's last digits: the
    README's were printed on one CPU, and another's ONNX Runtime kernels
    (AVX-512 or not) round differently inside the model, by a few float32
    steps of the values there, not of the answer: 0.028703973 printed,
    0.028704122 on an AMD EPYC with AVX-512 (cancer_screening), 5e-6 apart
    relatively but 1.5e-7 absolutely. Hence an absolute bound beside the
    relative one."""
    for output in answer.get("outputs", []):
        if output["datatype"].startswith("FP"):
            output["data"] = pytest.approx(output["data"], rel=1e-6, abs=1e-6)
    return answer


def test_batch_bad_rows_are_reported_as_documented(example_repo: Path, tmp_path: Path) -> None:
    """The Batch jobs section's bad-row message, for a CSV with one bad value (the
    section's own commands run in tests/integration/test_walkthrough.py)."""
    python = str(Path(sys.executable).parent)
    examples = str(example_repo)
    rows = subprocess.run(
        [sys.executable, "-c", "from sklearn.datasets import load_breast_cancer\n"
         "f = load_breast_cancer(as_frame=True).data.astype(object)\nf.iloc[6, 0] = 'big'\n"
         "f.to_csv('cancer.csv', index=False)"],
        cwd=tmp_path, check=True, timeout=60,
    )  # fmt: skip
    assert rows.returncode == 0
    command = [python + "/turnout", "batch", "breast_cancer", "--repo", examples, "--input", "cancer.csv",
               "--output", "scored.csv", "--no-progress"]  # fmt: skip
    refused = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and not (tmp_path / "scored.csv").exists()
    assert refused.stderr == block_after("Bad rows are reported with their 1-based row", "text")


def test_python_model_example(tmp_path: Path) -> None:
    """ "Serve your own model: Python": the code and configuration shown are
    the example's files, and the request shown gets the answer shown."""
    example = Path(__file__).resolve().parents[2] / "examples" / "python_models"
    assert block_after("### Serve your own model: Python", "python") == (example / "text_stats/1/model.py").read_text()
    assert block_after("and its `model.toml`", "toml") == (example / "text_stats/model.toml").read_text()
    serve = block_after("Serve it (the server consents too)", "bash")
    assert serve.split() == [
        ".venv/bin/turnout",
        "serve",
        "examples/python_models",
        "--allow-trusted-models",
        *BYO_PORTS,
    ]
    with ServerProcess(example, "--allow-trusted-models", log_dir=tmp_path) as server:
        command = on_test_ports(block_after("Serve it (the server consents too)", "sh"), server)
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True)
    documented = json.loads(block_after("Serve it (the server consents too)", "json"))
    assert json.loads(result.stdout) == documented


def three_ways(server: ServerProcess, model: str, rows: np.ndarray) -> tuple[dict[str, Any], Any, Any]:
    """``rows`` (one FP32 input, ``input``) sent to ``model`` as a user would:
    curl with V2 JSON (its outputs by name), tritonclient's binary extension
    and tritonclient over gRPC (their results)."""
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}
    reply = subprocess.run(
        ["curl", "-s", f"{server.url}/v2/models/{model}/infer", "-d", json.dumps(body)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    over_json = {o["name"]: o for o in json.loads(reply.stdout)["outputs"]}
    given = httpclient.InferInput("input", list(rows.shape), "FP32")
    given.set_data_from_numpy(rows, binary_data=True)
    over_binary = httpclient.InferenceServerClient(server.url.removeprefix("http://")).infer(model, [given])
    given = grpcclient.InferInput("input", list(rows.shape), "FP32")
    given.set_data_from_numpy(rows)
    over_grpc = grpcclient.InferenceServerClient(server.grpc_address).infer(model, [given])
    return over_json, over_binary, over_grpc


def test_sklearn_example_serves_over_rest_binary_and_grpc(tmp_path: Path) -> None:
    """ "Serve your own model: scikit-learn": the snippet run as printed makes a
    repository whose forest answers its own labels and probabilities
    through REST, tritonclient's binary extension and gRPC."""
    marker = "### Serve your own model: scikit-learn"
    subprocess.run([sys.executable, "-c", block_after(marker, "python")], cwd=tmp_path, check=True, timeout=120)
    assert block_after(marker, "bash").split() == [".venv/bin/turnout", "serve", "sklearn_models", *BYO_PORTS]
    models = tmp_path / "sklearn_models"
    forest = sio.load(models / "cancer_forest/1/model.skops", trusted=["sklearn.tree._tree.Tree"])
    rows = load_breast_cancer().data[:8].astype(np.float32)
    with ServerProcess(models, log_dir=tmp_path) as server:
        outputs, over_binary, over_grpc = three_ways(server, "cancer_forest", rows)
    assert outputs["label"]["data"] == forest.predict(rows).tolist()
    np.testing.assert_allclose(over_binary.as_numpy("probabilities"), forest.predict_proba(rows), rtol=1e-6)
    assert over_grpc.as_numpy("label").tolist() == forest.predict(rows).tolist()


def test_booster_example_serves_over_rest_binary_and_grpc(tmp_path: Path) -> None:
    """ "Serve your own model: XGBoost and LightGBM": the snippet run as printed
    makes a repository whose two boosters answer their frameworks' own
    probabilities through REST, tritonclient's binary extension and gRPC."""
    marker = "### Serve your own model: XGBoost and LightGBM"
    subprocess.run([sys.executable, "-c", block_after(marker, "python")], cwd=tmp_path, check=True, timeout=120)
    assert block_after(marker, "bash").split() == [".venv/bin/turnout", "serve", "booster_models", *BYO_PORTS]
    models = tmp_path / "booster_models"
    rows = load_breast_cancer().data[:8].astype(np.float32)
    xgb = xgboost.Booster(model_file=str(models / "cancer_xgb/1/model.json")).inplace_predict(rows)
    lgb = lightgbm.Booster(model_file=str(models / "cancer_lgb/1/model.txt")).predict(rows)
    with ServerProcess(models, log_dir=tmp_path) as server:
        for name, expected in (("cancer_xgb", xgb), ("cancer_lgb", lgb)):
            outputs, over_binary, over_grpc = three_ways(server, name, rows)
            assert outputs["label"]["data"] == (expected > 0.5).astype(int).tolist()
            np.testing.assert_allclose(over_binary.as_numpy("probabilities")[:, 1], expected, rtol=1e-5)
            np.testing.assert_allclose(over_grpc.as_numpy("probabilities")[:, 1], expected, rtol=1e-5)


def test_pytorch_example_serves_over_rest_binary_and_grpc(tmp_path: Path) -> None:
    """ "Serve your own model: PyTorch": the snippet run as printed exports a
    network whose served answers are the program's own, through REST,
    tritonclient's binary extension and gRPC."""
    import torch

    marker = "### Serve your own model: PyTorch"
    subprocess.run([sys.executable, "-c", block_after(marker, "python")], cwd=tmp_path, check=True, timeout=120)
    assert block_after(marker, "bash").split() == [".venv/bin/turnout", "serve", "torch_models", *BYO_PORTS]
    models = tmp_path / "torch_models"
    rows = load_iris().data[::7].astype(np.float32)
    program = torch.export.load(str(models / "iris_net/1/model.pt2")).module()
    with torch.no_grad():
        expected = program(torch.from_numpy(rows)).numpy()
    assert (expected.argmax(axis=1) == load_iris().target[::7]).mean() > 0.9
    with ServerProcess(models, log_dir=tmp_path) as server:
        outputs, over_binary, over_grpc = three_ways(server, "iris_net", rows)
        platform = grpcclient.InferenceServerClient(server.grpc_address).get_model_metadata("iris_net").platform
    (output,) = outputs.values()
    assert output["name"] == "probabilities" and output["shape"] == [len(rows), 3]
    np.testing.assert_allclose(np.array(output["data"]).reshape(-1, 3), expected, rtol=1e-6)
    np.testing.assert_allclose(over_binary.as_numpy("probabilities"), expected, rtol=1e-6)
    np.testing.assert_allclose(over_grpc.as_numpy("probabilities"), expected, rtol=1e-6)
    assert platform == "pytorch"
