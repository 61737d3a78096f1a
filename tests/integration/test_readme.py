"""The README's examples, run as printed (ports aside) against a real server,
must give the answers the README documents."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pytest
import redis
import skops.io as sio
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import xgboost
from sklearn.datasets import load_breast_cancer, load_iris

from tests.support import ServerProcess, free_port

pytestmark = [pytest.mark.programs("curl")]
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def block_after(marker: str, language: str) -> str:
    """The first fenced block of ``language`` after ``marker`` in the README."""
    start = README.index(marker)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(README, start)
    assert match, f"no {language} block after {marker!r}"
    return match.group(1)


def on_test_ports(text: str, server: ServerProcess) -> str:
    return text.replace("127.0.0.1:8080", f"127.0.0.1:{server.http_port}").replace(
        "127.0.0.1:8081", server.grpc_address
    )


def test_curl_example(server: ServerProcess) -> None:
    command = on_test_ports(block_after("### Try it with curl", "sh"), server)
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True)
    documented = json.loads(block_after("answers", "json"))
    assert approximately(json.loads(result.stdout)) == documented


def approximately(answer: dict[str, Any]) -> dict[str, Any]:
    """A V2 answer whose floats compare within float32's last digits: the
    README's were printed on one CPU, and another's ONNX Runtime kernels
    (AVX-512 or not) may round the last one differently."""
    for output in answer.get("outputs", []):
        if output["datatype"].startswith("FP"):
            output["data"] = pytest.approx(output["data"], rel=1e-6)
    return answer


def test_tritonclient_example(server: ServerProcess) -> None:
    script = on_test_ports(block_after("### Try it with Triton's Python client", "python"), server)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == block_after("prints", "text")


def test_security_walkthrough(example_repo: Path, tmp_path: Path) -> None:
    """The Security section as a new user follows it: keys made with the CLI,
    a server that needs them, and the status codes the section documents."""
    setup = block_after("**API keys.**", "sh")
    commands = [line for line in setup.splitlines() if line.strip() and " serve " not in line]
    script = "\n".join(commands).replace(".venv/bin/turnout", f"{sys.executable} -m turnout")
    subprocess.run(["bash", "-c", script], cwd=tmp_path, check=True, capture_output=True, timeout=120)
    assert " serve examples/models --api-keys keys.db" in setup
    server = ServerProcess(example_repo, "--api-keys", str(tmp_path / "keys.db"), log_dir=tmp_path, inference_auth=True)
    with server:
        calls = block_after("Clients send `Authorization: Bearer <key>`", "sh")
        command = on_test_ports(calls, server).replace("127.0.0.1:8082", server.admin_address)
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    documented = re.findall(r"# (\d{3})$", calls, re.M)
    assert documented == ["401", "200", "403", "200"]
    assert result.stdout.split() == documented, result.stderr


def test_traffic_control_walkthrough(repo: Path, tmp_path: Path) -> None:
    """The Traffic control section's commands, as printed, against a server of
    the example repository: the wine canary promoted, rolled back and rolled
    out; blue/green switches; a shadow; an A/B test with feedback."""
    blocks = {
        marker: block_after(marker, "sh")
        for marker in ("drive the canary:", "**Blue/green.**", "**Shadow.**", "**A/B test.**")
    }
    first = blocks["drive the canary:"]
    assert "turnout keys create --store keys.db --name ops --role admin > ops.key" in first
    assert "turnout serve examples/models --no-inference-auth --api-keys keys.db &" in first
    server = ServerProcess(repo, log_dir=tmp_path)
    env = {**os.environ, "TURNOUT_ADMIN_URL": server.admin_url, "TURNOUT_ADMIN_KEY": server.admin_key}
    outputs = []
    with server:
        for block in blocks.values():
            lines = [
                line
                for line in block.splitlines()
                if line.strip() and "keys create" not in line and " serve " not in line and "export " not in line
            ]
            script = on_test_ports("\n".join(lines), server).replace(
                ".venv/bin/turnout", f"{sys.executable} -m turnout"
            )
            result = subprocess.run(["bash", "-ec", script], env=env, capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout)
    canary, blue_green, shadow, ab = outputs
    assert "policy: canary (baseline=1, candidate=2, weight=10.0), set by model.toml" in canary
    assert "weight=100.0" in canary and "weight=0.0" in canary
    assert "rollout: 1 -> 2, running, candidate at 10% (step 1 of 3: 10% -> 50% -> 100%)" in canary
    events = [line.split()[1] for line in canary.splitlines() if line[:4].isdigit()]
    assert events == ["policy", "promoted", "rolled_back", "rollout"]
    assert "live=2" in blue_green and blue_green.rstrip().endswith("live=1), set by test-admin")
    assert "policy: shadow (primary=1, shadow=2, percent=100.0)" in shadow
    assert '"recorded":true' in ab and "A/B report for 'wine'" in ab
    assert "nothing to compare yet" in ab  # one user, one variant


def test_model_lifecycle_walkthrough(repo: Path, tmp_path: Path) -> None:
    """The Model lifecycle section as printed: a version dropped in goes live,
    then rollback, pin and unpin with the CLI."""
    server = ServerProcess(repo, "--poll-interval", "0.2", log_dir=tmp_path)
    env = {**os.environ, "TURNOUT_ADMIN_URL": server.admin_url, "TURNOUT_ADMIN_KEY": server.admin_key}
    drop = block_after("**Dropping in a new version.**", "sh").replace("examples/models", str(repo))
    steps = [line for line in block_after("**Rollback and pinning**", "sh").splitlines() if "export " not in line]
    turnout = f"{sys.executable} -m turnout"
    with server:
        subprocess.run(["bash", "-ec", drop], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while True:
            status = subprocess.run(
                [*turnout.split(), "models", "versions", "diabetes"], env=env, capture_output=True, text=True
            )
            if "default version 2" in status.stdout:
                break
            assert time.monotonic() < deadline, status.stdout + status.stderr
            time.sleep(0.1)
        outputs = []
        for line in steps:
            command = line.split("#")[0].replace(".venv/bin/turnout", turnout)
            result = subprocess.run(["bash", "-ec", command], env=env, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout)
    versions, rolled_back, pinned, unpinned = outputs
    assert "diabetes: default version 2" in versions and "earlier defaults: 1" in versions
    assert "default version 1 (pinned to 1)" in rolled_back
    assert "default version 2 (pinned to 2)" in pinned
    assert unpinned.startswith("diabetes: default version 2\n")


def test_streams_producer_example(example_repo: Path, tmp_path: Path) -> None:
    """The Streams section: Redis started as printed (on a free port), the
    server with --stream, and the producer script, whose output is documented."""
    setup = block_after("Try it with the example models and a local Redis", "sh")
    redis_line, serve_line = setup.strip().splitlines()
    assert serve_line == ".venv/bin/turnout serve examples/models --no-inference-auth --stream redis://127.0.0.1:6379/0"
    port = free_port()
    subprocess.run(redis_line.replace("6379", str(port)).split(), cwd=tmp_path, check=True, timeout=30)
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)  # the daemonized server is starting: nothing to wait on but its port
        with ServerProcess(example_repo, "--stream", f"redis://127.0.0.1:{port}/0", log_dir=tmp_path):
            script = block_after("A producer puts a V2 inference request", "python").replace("6379", str(port))
            result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout == block_after("the producer prints:", "text")
    finally:
        client.shutdown(nosave=True)


def test_batch_jobs_walkthrough(example_repo: Path, tmp_path: Path) -> None:
    """The Batch jobs section as printed: a Parquet file scored locally and on
    Ray, the two compared; and the bad-row message it documents, for a CSV."""
    python = str(Path(sys.executable).parent)
    examples = str(example_repo)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}

    def run(block: str) -> str:
        script = block.replace(".venv/bin", python).replace("examples/models", examples)
        result = subprocess.run(["bash", "-ec", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                                env=env)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    run(block_after("scored locally and then on Ray", "sh"))
    assert run(block_after("same rows in the same order:", "sh")) == block_after("The comparison prints:", "text")

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
    assert serve.split() == [".venv/bin/turnout", "serve", "examples/python_models", "--allow-trusted-models"]
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
    assert block_after(marker, "bash").split() == [".venv/bin/turnout", "serve", "sklearn_models"]
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
    assert block_after(marker, "bash").split() == [".venv/bin/turnout", "serve", "booster_models"]
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
    assert block_after(marker, "bash").split() == [".venv/bin/turnout", "serve", "torch_models"]
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
