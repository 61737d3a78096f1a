"""Pipelines served for real: the example repository's cancer_screening
(features from a real redis-server, scaling, an ensemble of two versions) and
text_embedding (a tokenizer and the MiniLM sentence-transformer), through
REST, gRPC and tritonclient; the load-time checks that refuse bad graphs;
and a canary from one pipeline version to the next under the rollout guard.

Every expected answer is computed here by hand: the same ONNX files run by
ONNX Runtime in-process, on features taken from scikit-learn's data."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import build_models  # examples/ is on the path (tests/conftest.py)
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from load_features import load as load_features
from sklearn.datasets import load_breast_cancer
from tokenizers import Tokenizer

from tests.integration.reference import run
from tests.integration.slow_client import SLOW_INPUT, post_slow, slow_output
from tests.onnx_models import slow, write_model
from tests.support import RedisServer, ServerProcess, SteadyLoad, free_port, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

CANCER = load_breast_cancer()
BAD = {
    "bad_cycle": """
[[steps]]
name = "a"
model = "cancer_scaler"
inputs = { input = "b.scaled" }
[[steps]]
name = "b"
model = "cancer_scaler"
inputs = { input = "a.scaled" }
[[outputs]]
name = "out"
from = "b.scaled"
""",
    "bad_model": """
[[steps]]
name = "a"
model = "no_such_model"
inputs = { input = "x" }
[[outputs]]
name = "out"
from = "a.scaled"
""",
    "bad_tensor": """
[[steps]]
name = "a"
model = "cancer_scaler"
inputs = { input = "x" }
[[outputs]]
name = "out"
from = "a.standardised"
""",
    "bad_datatype": """
[[steps]]
name = "a"
model = "cancer_risk"
version = 1
inputs = { input = "x" }
[[steps]]
name = "b"
model = "cancer_scaler"
inputs = { input = "a.label" }
[[outputs]]
name = "out"
from = "b.scaled"
""",
    "bad_shape": """
[[steps]]
name = "a"
model = "cancer_risk"
version = 1
inputs = { input = "x" }
[[steps]]
name = "b"
model = "cancer_scaler"
inputs = { input = "a.probabilities" }
[[outputs]]
name = "out"
from = "b.scaled"
""",
}
# patient ids in, their features read from the test's Redis
LOOKUP = """
[[inputs]]
name = "patient_id"
datatype = "BYTES"
shape = [-1]
[[steps]]
name = "features"
kind = "features"
entity = "patient_id"
store = { backend = "redis", url = "REDIS", key = "patient:{id}" }
features = FEATURES
"""
SWITCH = (
    LOOKUP
    + """[[steps]]
name = "scale"
model = "cancer_scaler"
inputs = { input = "features.features" }
[[steps]]
name = "pick"
kind = "switch"
inputs = { input = "scale.scaled" }
branches = [
  { model = "cancer_risk", version = 1, when = { parameter = "model", equals = "simple" } },
  { model = "cancer_risk", version = 2, when = { tensor = "features.features", column = 0, above = 15.0 } },
  { model = "cancer_risk", version = 1 },
]
[[outputs]]
name = "probabilities"
from = "pick.probabilities"
"""
)
PYTHON = (
    LOOKUP
    + """[[steps]]
name = "standardise"
kind = "python"
function = "steps.py:standardise"
inputs = { rows = "features.features" }
outputs = [{ name = "scaled", datatype = "FP32", shape = [-1, 30] }]
[[steps]]
name = "risk"
kind = "ensemble"
members = [{ model = "cancer_risk", version = 1 }, { model = "cancer_risk", version = 2 }]
inputs = { input = "standardise.scaled" }
combine = { probabilities = "steps.py:geometric_mean" }
[[outputs]]
name = "probabilities"
from = "risk.probabilities"
"""
)
STEPS_PY = """
import numpy as np

_saved = np.load(__file__.replace("steps.py", "scaler.npz"))


def standardise(inputs, parameters):
    return {"scaled": ((inputs["rows"] - _saved["mean"]) / _saved["scale"]).astype(np.float32)}


def geometric_mean(values, weights):
    product = np.prod(np.stack(values), axis=0) ** (1.0 / len(values))
    return (product / product.sum(axis=1, keepdims=True)).astype(np.float32)
"""
# a step that names no version: the endpoint, with whatever policy routes it
ROUTED = (
    LOOKUP
    + """[[steps]]
name = "scale"
model = "cancer_scaler"
inputs = { input = "features.features" }
[[steps]]
name = "risk"
model = "cancer_risk"
inputs = { input = "scale.scaled" }
[[outputs]]
name = "probabilities"
from = "risk.probabilities"
"""
)
# two pipelines that call each other: each would wait for the other's load
CALLS_OTHER = """
[[inputs]]
name = "x"
datatype = "FP32"
shape = [-1, 30]
[[steps]]
name = "other"
model = "OTHER"
inputs = { x = "x" }
[[outputs]]
name = "y"
from = "other.y"
"""
# a pipeline over the test's slow model (~50 ms a row, a queue of one): overloaded at once
OVER_SLOW = """
[[inputs]]
name = "x"
datatype = "FP32"
shape = [-1, 256, 256]
[[steps]]
name = "heavy"
model = "slow"
inputs = { x = "x" }
[[outputs]]
name = "y"
from = "heavy.y"
"""
BAD_INPUT = '[[inputs]]\nname = "x"\ndatatype = "FP32"\nshape = [-1, 30]\n'


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        load_features(server.url)
        yield server


@pytest.fixture(scope="module")
def restarting_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A feature store the test starts, stops and starts again on the same port."""
    store = RedisServer(tmp_path_factory.mktemp("restarting"))
    yield store
    store.stop()


@pytest.fixture(scope="module")
def pipeline_repo(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, restarting_redis: RedisServer
) -> Path:
    """The whole example repository (text pipeline included), its feature store
    the test's Redis; beside it, bad pipelines and one whose store is down."""
    root = tmp_path_factory.mktemp("pipelines") / "models"
    build_models.build(root)
    for pipeline in (root / "cancer_screening").glob("*/pipeline.toml"):
        pipeline.write_text(pipeline.read_text().replace("redis://127.0.0.1:6379/0", redis_server.url))
    for name, url in (
        ("cancer_offline", f"redis://127.0.0.1:{free_port()}/0"),
        ("cancer_restart", restarting_redis.url),
    ):
        shutil.copytree(root / "cancer_screening", root / name)
        for pipeline in (root / name).glob("*/pipeline.toml"):
            pipeline.write_text(pipeline.read_text().replace(redis_server.url, url))
    features = "[" + ", ".join(f'"{name}"' for name in CANCER.feature_names) + "]"
    for name, text, trusted in (("cancer_switch", SWITCH, False), ("cancer_python", PYTHON, True),
                                ("cancer_python_untrusted", PYTHON, False),
                                ("cancer_routed", ROUTED, False)):  # fmt: skip
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "pipeline.toml").write_text(
            text.replace("REDIS", redis_server.url).replace("FEATURES", features)
        )
        (root / name / "model.toml").write_text('runtime = "pipeline"\n' + ("trusted = true\n" if trusted else ""))
        if name.startswith("cancer_python"):
            (root / name / "1" / "steps.py").write_text(STEPS_PY)
            scaler = _session(root, "cancer_scaler", 1)
            mean, scale = _scaler_constants(scaler)
            np.savez(root / name / "1" / "scaler.npz", mean=mean, scale=scale)
    write_model(root / "slow" / "1" / "model.onnx", slow())
    (root / "slow" / "model.toml").write_text(
        "max_batch_size = 1\n[batching]\nmax_queue_size = 1\n[runtime.options]\nintra_op_threads = 1\n"
    )
    for name, other in (("loop_a", "loop_b"), ("loop_b", "loop_a")):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "pipeline.toml").write_text(CALLS_OTHER.replace("OTHER", other))
        (root / name / "model.toml").write_text('runtime = "pipeline"\n')
    (root / "over_slow" / "1").mkdir(parents=True)
    (root / "over_slow" / "1" / "pipeline.toml").write_text(OVER_SLOW)
    (root / "over_slow" / "model.toml").write_text('runtime = "pipeline"\nmax_batch_size = 1\n')
    for name, steps in BAD.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "pipeline.toml").write_text(BAD_INPUT + steps)
        (root / name / "model.toml").write_text('runtime = "pipeline"\n')
    return root


@pytest.fixture(scope="module")
def server(pipeline_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # a load timeout past the module's length: a wait for a model that never comes would show
    arguments = ("--no-strict-readiness", "--allow-trusted-models", "--load-timeout", "300")
    with ServerProcess(pipeline_repo, *arguments, log_dir=tmp_path_factory.mktemp("logs")) as process:
        wait_until(lambda: _state(process, "text_embedding", "1") == "READY", "the pipelines loaded", 60)
        yield process


def _index(server: ServerProcess) -> list[dict[str, str]]:
    with server.admin_client() as admin:
        entries: list[dict[str, str]] = admin.post("/v2/repository/index").json()
    return entries


def _state(server: ServerProcess, name: str, version: str) -> str:
    return next((e["state"] for e in _index(server) if e["name"] == name and e.get("version") == version), "")


def _session(repo: Path, model: str, version: int) -> ort.InferenceSession:
    return ort.InferenceSession(str(repo / model / str(version) / "model.onnx"), providers=["CPUExecutionProvider"])


def expected_screening(repo: Path, patients: list[int], weights: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The pipeline done by hand: the patients' rows, scaled, both risk models, averaged."""
    rows = CANCER.data[patients].astype(np.float32)
    scaled = _session(repo, "cancer_scaler", 1).run(None, {"input": rows})[0]
    first, second = (_session(repo, "cancer_risk", v).run(["probabilities"], {"input": scaled})[0] for v in (1, 2))
    probabilities = ((weights[0] * first + weights[1] * second) / sum(weights)).astype(np.float32)
    return probabilities.argmax(axis=1), probabilities


def screening_body(patients: list[int]) -> dict[str, Any]:
    ids = [str(p) for p in patients]
    return {"inputs": [{"name": "patient_id", "datatype": "BYTES", "shape": [len(ids)], "data": ids}]}


PATIENTS = [0, 1, 19, 20, 200, 568]


def test_cancer_screening_over_rest_matches_the_steps_run_by_hand(server: ServerProcess, pipeline_repo: Path) -> None:
    for version, weights in (("1", (1.0, 1.0)), ("2", (1.0, 2.0))):
        answer = httpx.post(f"{server.url}/v2/models/cancer_screening/versions/{version}/infer",
                            json=screening_body(PATIENTS))  # fmt: skip
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o for o in answer.json()["outputs"]}
        labels, probabilities = expected_screening(pipeline_repo, PATIENTS, weights)
        assert outputs["label"]["data"] == labels.tolist()
        assert outputs["probabilities"]["shape"] == [len(PATIENTS), 2]
        np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], (-1, 2)), probabilities, atol=1e-6)
    assert labels.tolist() == CANCER.target[PATIENTS].tolist()  # and it is right about these patients


def test_cancer_screening_through_tritonclient_http_and_grpc(server: ServerProcess, pipeline_repo: Path) -> None:
    ids = np.array([str(p).encode() for p in PATIENTS], dtype=np.object_)
    labels, probabilities = expected_screening(pipeline_repo, PATIENTS, (1.0, 1.0))
    with httpclient.InferenceServerClient(server.url.removeprefix("http://")) as client:
        given = httpclient.InferInput("patient_id", [len(ids)], "BYTES")
        given.set_data_from_numpy(ids, binary_data=True)
        result = client.infer("cancer_screening", [given], model_version="1")
        assert result.as_numpy("label").tolist() == labels.tolist()
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=1e-6)
        metadata = client.get_model_metadata("cancer_screening")
        assert metadata["platform"] == "pipeline"
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        given = grpcclient.InferInput("patient_id", [len(ids)], "BYTES")
        given.set_data_from_numpy(ids)
        result = client.infer("cancer_screening", [given], model_version="1")
        assert result.as_numpy("label").tolist() == labels.tolist()
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=1e-6)


def test_feature_lookup_failures_are_clear_and_the_server_serves_on(server: ServerProcess) -> None:
    missing = httpx.post(f"{server.url}/v2/models/cancer_screening/infer", json=screening_body([3, 9999]))
    assert missing.status_code == 400
    assert missing.json()["error"].startswith("step 'features': no features for entity '9999' (key 'patient:9999'")
    down = httpx.post(f"{server.url}/v2/models/cancer_offline/infer", json=screening_body([3]))
    assert down.status_code == 503
    assert "step 'features': the feature store redis://127.0.0.1:" in down.json()["error"]
    assert "cannot be reached" in down.json()["error"]
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        given = grpcclient.InferInput("patient_id", [1], "BYTES")
        given.set_data_from_numpy(np.array([b"9999"], dtype=np.object_))
        with pytest.raises(Exception, match="no features for entity '9999'") as caught:
            client.infer("cancer_screening", [given])
        assert "INVALID_ARGUMENT" in str(caught.value.status())  # type: ignore[attr-defined]
    not_text = grpcclient.InferInput("patient_id", [1], "BYTES")
    not_text.set_data_from_numpy(np.array([b"\xff\xfe"], dtype=np.object_))
    with grpcclient.InferenceServerClient(server.grpc_address) as client, pytest.raises(Exception) as caught:
        client.infer("cancer_screening", [not_text])
    assert "step 'features': an entity id is not UTF-8 text" in str(caught.value)
    assert httpx.post(f"{server.url}/v2/models/cancer_screening/infer", json=screening_body([3])).status_code == 200


def test_a_feature_store_that_restarts_is_read_again_without_a_failed_request(
    server: ServerProcess, restarting_redis: RedisServer
) -> None:
    url = f"{server.url}/v2/models/cancer_restart/infer"
    restarting_redis.start()
    load_features(restarting_redis.url)
    assert httpx.post(url, json=screening_body([5])).status_code == 200  # a pooled connection now
    restarting_redis.stop()  # while no request comes: the pooled connection goes stale
    restarting_redis.start()
    load_features(restarting_redis.url)
    answers = [httpx.post(url, json=screening_body([5])).status_code for _ in range(3)]
    assert answers == [200, 200, 200]
    restarting_redis.stop()
    assert httpx.post(url, json=screening_body([5])).status_code == 503


def test_each_step_is_counted_and_its_model_requests_are_the_models_own(server: ServerProcess) -> None:
    before = _samples(server)
    for _ in range(5):
        assert httpx.post(f"{server.url}/v2/models/cancer_screening/versions/1/infer",
                          json=screening_body([7])).status_code == 200  # fmt: skip
    after = _samples(server)
    for step in ("features", "scale", "risk", "label"):
        key = f'turnout_pipeline_steps_total{{model="cancer_screening",status="success",step="{step}",version="1"}}'
        assert after.get(key, 0) - before.get(key, 0) == 5, key
        count = f'turnout_pipeline_step_duration_seconds_count{{model="cancer_screening",step="{step}",version="1"}}'
        assert after.get(count, 0) - before.get(count, 0) == 5, count
    scaler = 'turnout_requests_total{model="cancer_scaler",protocol="pipeline",status="success",variant="",version="1"}'
    assert after.get(scaler, 0) - before.get(scaler, 0) == 5
    for version in ("1", "2"):  # each member of the ensemble answered once per request
        risk = scaler.replace('"cancer_scaler"', '"cancer_risk"').replace('version="1"', f'version="{version}"')
        assert after.get(risk, 0) - before.get(risk, 0) == 5


def _samples(server: ServerProcess) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    samples = {}
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def test_bad_graphs_are_refused_at_load_with_their_reasons(server: ServerProcess) -> None:
    reasons = {e["name"]: (e["state"], e.get("reason", "")) for e in _index(server) if e["name"].startswith("bad_")}
    assert {name: state for name, (state, _) in reasons.items()} == dict.fromkeys(BAD, "UNAVAILABLE")
    assert "the steps form a cycle: a -> b -> a" in reasons["bad_cycle"][1]
    assert "step 'a': unknown model 'no_such_model'" in reasons["bad_model"][1]
    assert "output 'out': no step produces 'a.standardised': step 'a' gives ['scaled']" in reasons["bad_tensor"][1]
    assert "step 'b' input 'input': 'a.label' is INT64, the step takes FP32" in reasons["bad_datatype"][1]
    assert (
        "step 'b' input 'input': 'a.probabilities' has shape [-1, 2], the step takes [-1, 30]"
        in reasons["bad_shape"][1]
    )
    loops = wait_until(
        lambda: (
            (found := {e["name"]: e for e in _index(server) if e["name"].startswith("loop_")})
            and all(e["state"] == "UNAVAILABLE" for e in found.values())
            and found
        ),
        "pipelines calling each other refused, not waiting out the load timeout",
        20,
    )
    named = [e["reason"] for e in loops.values() if "pipelines that call each other" in e["reason"]]
    assert any("loop_a -> loop_b -> loop_a" in r or "loop_b -> loop_a -> loop_b" in r for r in named), loops
    refused = httpx.post(f"{server.url}/v2/models/bad_cycle/infer", json={"inputs": []})
    assert refused.status_code == 503 and "cycle" in refused.json()["error"]
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert _state(server, "cancer_screening", "1") == "READY"


def _scaler_constants(scaler: ort.InferenceSession) -> tuple[np.ndarray, np.ndarray]:
    """The scaler's mean and scale, read back from what it does to 0 and 1."""
    zero = scaler.run(None, {"input": np.zeros((1, 30), np.float32)})[0][0]
    one = scaler.run(None, {"input": np.ones((1, 30), np.float32)})[0][0]
    scale = 1.0 / (one - zero)
    return (-zero * scale).astype(np.float32), scale.astype(np.float32)


def _risks(repo: Path, patients: list[int]) -> tuple[np.ndarray, np.ndarray]:
    rows = CANCER.data[patients].astype(np.float32)
    scaled = _session(repo, "cancer_scaler", 1).run(None, {"input": rows})[0]
    first, second = (_session(repo, "cancer_risk", v).run(["probabilities"], {"input": scaled})[0] for v in (1, 2))
    return first, second


def test_a_switch_sends_each_row_to_its_branch_and_a_parameter_the_whole_request(
    server: ServerProcess, pipeline_repo: Path
) -> None:
    radius = CANCER.data[PATIENTS, 0]
    assert 0 < (radius > 15.0).sum() < len(PATIENTS)  # both branches get rows
    first, second = _risks(pipeline_repo, PATIENTS)
    answer = httpx.post(f"{server.url}/v2/models/cancer_switch/infer", json=screening_body(PATIENTS))
    assert answer.status_code == 200, answer.text
    got = np.reshape(answer.json()["outputs"][0]["data"], (-1, 2))
    np.testing.assert_allclose(got, np.where((radius > 15.0)[:, None], second, first), atol=1e-6)
    simple = {**screening_body(PATIENTS), "parameters": {"model": "simple"}}
    answer = httpx.post(f"{server.url}/v2/models/cancer_switch/infer", json=simple)
    got = np.reshape(answer.json()["outputs"][0]["data"], (-1, 2))
    np.testing.assert_allclose(got, first, atol=1e-6)


def test_python_steps_and_combiners_run_in_a_trusted_pipeline_only(server: ServerProcess, pipeline_repo: Path) -> None:
    first, second = _risks(pipeline_repo, PATIENTS)
    product = np.sqrt(first * second)
    expected = product / product.sum(axis=1, keepdims=True)
    answer = httpx.post(f"{server.url}/v2/models/cancer_python/infer", json=screening_body(PATIENTS))
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(np.reshape(answer.json()["outputs"][0]["data"], (-1, 2)), expected, atol=1e-5)
    reason = next(e for e in _index(server) if e["name"] == "cancer_python_untrusted")["reason"]
    assert (
        "pipeline.toml runs Python from steps.py, which runs code when loaded: refused without `trusted = true`"
        in reason
    )


SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A cheetah is running behind its prey across a field.",
    "Ünïcödé text and emoji 🚀 are tokenized too.",
]


def expected_embeddings(repo: Path, texts: list[str]) -> np.ndarray:
    tokenizer = Tokenizer.from_file(str(repo / "text_embedding" / "1" / "tokenizer.json"))
    tokenizer.enable_truncation(128)
    tokenizer.enable_padding(pad_to_multiple_of=16)
    encoded = tokenizer.encode_batch(texts)
    feed = {
        "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
    }
    embeddings: np.ndarray = _session(repo, "minilm", 1).run(None, feed)[0]
    return embeddings


def test_text_embedding_takes_strings_over_rest_grpc_and_tritonclient(
    server: ServerProcess, pipeline_repo: Path
) -> None:
    expected = expected_embeddings(pipeline_repo, SENTENCES)
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(SENTENCES)], "data": SENTENCES}]}
    answer = httpx.post(f"{server.url}/v2/models/text_embedding/infer", json=body)
    assert answer.status_code == 200, answer.text
    rest = np.reshape(answer.json()["outputs"][0]["data"], (len(SENTENCES), 384))
    np.testing.assert_allclose(rest, expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(rest, axis=1), 1.0, atol=1e-5)
    similar, unrelated = rest[0] @ rest[1], rest[0] @ rest[3]
    assert similar > 0.6 > 0.2 > unrelated  # the model's sense, not only its arithmetic
    texts = np.array([s.encode() for s in SENTENCES], dtype=np.object_)
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        given = grpcclient.InferInput("text", [len(SENTENCES)], "BYTES")
        given.set_data_from_numpy(texts)
        np.testing.assert_allclose(client.infer("text_embedding", [given]).as_numpy("embedding"), expected, atol=1e-5)
    with httpclient.InferenceServerClient(server.url.removeprefix("http://")) as client:
        given = httpclient.InferInput("text", [len(SENTENCES)], "BYTES")
        given.set_data_from_numpy(texts, binary_data=True)
        np.testing.assert_allclose(client.infer("text_embedding", [given]).as_numpy("embedding"), expected, atol=1e-5)
    bad = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [12]}]}
    assert httpx.post(f"{server.url}/v2/models/text_embedding/infer", json=bad).status_code == 400


def test_a_step_naming_no_version_follows_its_models_routing_policy(server: ServerProcess, pipeline_repo: Path) -> None:
    """The step's requests are routed like direct ones: a blue/green switch of
    cancer_risk moves them, and the step model's metrics name the variant."""
    scaled = _session(pipeline_repo, "cancer_scaler", 1).run(None, {"input": CANCER.data[PATIENTS].astype(np.float32)})
    by_version = {v: _session(pipeline_repo, "cancer_risk", v).run(["probabilities"], {"input": scaled[0]})[0]
                  for v in (1, 2)}  # fmt: skip
    assert not np.allclose(by_version[1], by_version[2])
    with server.admin_client() as admin:
        try:
            for live in (1, 2):
                policy = {"policy": "blue_green", "blue": "1", "green": "2", "live": str(live)}
                assert admin.put("/v2/routing/cancer_risk", json=policy).status_code == 200
                answer = httpx.post(f"{server.url}/v2/models/cancer_routed/infer", json=screening_body(PATIENTS))
                assert answer.status_code == 200, answer.text
                probabilities = np.array(answer.json()["outputs"][0]["data"], dtype=np.float32).reshape(-1, 2)
                np.testing.assert_allclose(probabilities, by_version[live], rtol=1e-5, atol=1e-6)
        finally:
            admin.delete("/v2/routing/cancer_risk")
    metrics = httpx.get(f"{server.url}/metrics").text
    for live in (1, 2):
        counted = f'turnout_requests_total{{model="cancer_risk",protocol="pipeline",status="success",variant="{live}",'
        assert counted in metrics


def test_an_overloaded_step_sheds_with_retry_after_and_the_rest_is_served(
    server: ServerProcess, pipeline_repo: Path
) -> None:
    """Sixteen at once into a pipeline whose step model runs one and queues
    one: the rest are refused at that step (503, Retry-After, named), never
    queued without bound nor failed as 500s; the answered are right, and
    other models answer meanwhile."""
    with ThreadPoolExecutor(17) as pool:
        flood = [pool.submit(post_slow, server.url, model="over_slow") for _ in range(16)]
        other = httpx.post(f"{server.url}/v2/models/cancer_screening/infer", json=screening_body([7]), timeout=10)
        responses = [future.result() for future in flood]
    assert other.status_code == 200, other.text
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, [r.text for r in responses]
    expected = run(pipeline_repo / "slow" / "1" / "model.onnx", {"x": SLOW_INPUT})["y"]
    for response in responses:
        if response.status_code == 200:
            np.testing.assert_allclose(slow_output(response), expected, rtol=1e-5)
        else:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"].startswith("step 'heavy': the queue is full"), response.text
    assert post_slow(server.url, model="over_slow").status_code == 200  # and served again after


def test_a_canary_from_one_pipeline_version_to_the_next_is_promoted_under_load(server: ServerProcess) -> None:
    load = SteadyLoad(
        server.url,
        "/v2/models/cancer_screening/infer",
        lambda request: screening_body([request % 569]),
        lambda response: response.headers.get("turnout-variant", ""),
    )
    with server.admin_client() as admin, load:
        started = admin.post(
            "/v2/routing/cancer_screening/rollout/start",
            json={"candidate": "2", "baseline": "1", "steps": "20:0.5s:30r,60:0.5s:30r,100:0.5s:20r",
                  "guard": {"min_samples": 10, "max_p99_ratio": 50}},
        )  # fmt: skip
        assert started.status_code == 200, started.text
        status = wait_until(
            lambda: (s := admin.get("/v2/routing/cancer_screening").json())["rollout"]["state"] == "promoted" and s,
            "the promotion",
            60,
        )
        after_promotion = load.after(time.monotonic(), 50)
        events = admin.get("/v2/routing/cancer_screening/events").json()
        admin.delete("/v2/routing/cancer_screening")
    assert load.failures == []
    assert status["policy"]["weight"] == 100.0
    assert set(after_promotion) == {"2"}
    assert [e["kind"] for e in events][-4:] == ["rollout", "step", "step", "promoted"]
