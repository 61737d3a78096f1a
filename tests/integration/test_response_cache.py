"""The response cache in a real server (``[cache]`` in model.toml): a repeated
request is answered without the model, a bypass skips it, a new version (or
the same number loaded from new files) never gets an old version's answer, a
failure is never stored, a routed endpoint reports its variant, and the
counts are on /metrics."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support import ServerProcess

CACHE = "\n[cache]\nenabled = true\n"

# Answers with how many times it has run, so an answer from the cache shows; fails while ``fail`` exists.
COUNTING = """\
from pathlib import Path
import numpy as np
from turnout import PythonModel, Tensor

FAIL = Path(__file__).with_name("fail")

class Counting(PythonModel):
    inputs = (Tensor("x", "FP32", [-1, 2]),)
    outputs = (Tensor("runs", "FP32", [-1, 1]),)

    def load(self, context):
        self.runs = 0

    def predict(self, inputs, parameters):
        if FAIL.exists():
            raise RuntimeError("told to fail")
        self.runs += 1
        return {"runs": np.full((len(inputs["x"]), 1), self.runs, dtype=np.float32)}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, example_repo: Path) -> Iterator[tuple[ServerProcess, Path]]:
    root = tmp_path_factory.mktemp("cache") / "models"
    for name in ("diabetes", "wine"):
        shutil.copytree(example_repo / name, root / name)
        with (root / name / "model.toml").open("a") as toml:
            toml.write(CACHE)
    (root / "counting" / "1").mkdir(parents=True)
    (root / "counting" / "1" / "model.py").write_text(COUNTING)
    (root / "counting" / "model.toml").write_text(
        'runtime = "python"\ntrusted = true\nmax_batch_size = 8\n' + CACHE + "max_input_bytes = 16\n"
    )
    with ServerProcess(root, "--allow-trusted-models", log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server, root


def infer(server: ServerProcess, model: str, rows: list[list[float]], **parameters: object) -> httpx.Response:
    body = {"inputs": [{"name": "x" if model == "counting" else "input", "datatype": "FP32",
                        "shape": [len(rows), len(rows[0])], "data": rows}], "parameters": parameters}  # fmt: skip
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30)


def output(response: httpx.Response) -> list[float]:
    assert response.status_code == 200, response.text
    return [float(v) for v in response.json()["outputs"][0]["data"]]


def lookups(server: ServerProcess, model: str) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    found = {}
    for line in text.splitlines():
        if line.startswith("turnout_cache_lookups_total{") and f'model="{model}"' in line:
            result = line.split('result="')[1].split('"')[0]
            found[result] = found.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def test_a_repeated_request_is_answered_without_running_the_model(served: tuple[ServerProcess, Path]) -> None:
    server, _ = served
    first = output(infer(server, "counting", [[1.0, 2.0]]))
    assert output(infer(server, "counting", [[1.0, 2.0]])) == first  # not run again
    assert output(infer(server, "counting", [[1.0, 2.5]])) == [first[0] + 1]  # other inputs: run
    assert output(infer(server, "counting", [[1.0, 2.0]], cache=False)) == [first[0] + 2]  # bypassed: run
    assert output(infer(server, "counting", [[1.0, 2.0]], how="other")) == [first[0] + 3]  # a parameter is keyed
    assert output(infer(server, "counting", [[1.0, 2.0]], timeout=5000)) == first  # a timeout is not
    counts = lookups(server, "counting")
    assert counts["hit"] >= 2 and counts["miss"] >= 3 and counts["bypass"] >= 1
    three = [[3.0, 3.0]] * 3  # 24 bytes of input, over max_input_bytes: not hashed, not cached
    assert output(infer(server, "counting", three))[0] == first[0] + 4
    assert output(infer(server, "counting", three))[0] == first[0] + 5
    assert lookups(server, "counting")["bypass"] >= 3
    bad = infer(server, "counting", [[1.0, 2.0]], cache="off")
    assert bad.status_code == 400 and "'cache' must be a boolean" in bad.json()["error"]


def test_a_failure_is_never_stored(served: tuple[ServerProcess, Path]) -> None:
    server, root = served
    flag = root / "counting" / "1" / "fail"
    flag.touch()
    try:
        assert infer(server, "counting", [[7.0, 7.0]]).status_code >= 500
    finally:
        flag.unlink()
    answered = output(infer(server, "counting", [[7.0, 7.0]]))  # run now: the failure was not kept
    assert output(infer(server, "counting", [[7.0, 7.0]])) == answered  # and this answer was


def test_a_version_loaded_from_new_files_never_serves_the_old_answers(served: tuple[ServerProcess, Path]) -> None:
    server, root = served
    row = [[0.02, -0.04, 0.06, 0.0, 0.01, -0.02, 0.03, 0.0, 0.05, -0.01]]
    before = output(infer(server, "diabetes", row))
    assert output(infer(server, "diabetes", row)) == before
    assert infer(server, "diabetes", row).json()["model_version"] == "1"
    # version 2 appears (latest = 1: it replaces version 1), answering 100 more
    shutil.copytree(root / "diabetes" / "1", root / "diabetes" / "2")
    model = root / "diabetes" / "2" / "model.onnx"
    original = model.read_bytes()
    model.write_bytes(_offset_model(original, 100.0))
    with server.admin_client() as admin:
        assert admin.post("/v2/repository/models/diabetes/load").status_code == 200
        after = infer(server, "diabetes", row)
        assert after.json()["model_version"] == "2"
        assert output(after) == pytest.approx([before[0] + 100.0], abs=1e-3)
        assert output(infer(server, "diabetes", row)) == output(after)  # cached, in version 2's cache
        # the same version number, loaded again from new files
        model.write_bytes(_offset_model(original, 200.0))
        assert admin.post("/v2/repository/models/diabetes/load").status_code == 200
    again = infer(server, "diabetes", row)
    assert again.json()["model_version"] == "2"
    assert output(again) == pytest.approx([before[0] + 200.0], abs=1e-3)


def test_a_routed_endpoint_reports_the_variant_whose_answer_it_gives(served: tuple[ServerProcess, Path]) -> None:
    server, _ = served
    row = [[13.2, 1.8, 2.1, 17.0, 100.0, 2.6, 2.7, 0.3, 1.9, 5.0, 1.0, 3.0, 1000.0]]
    by_version = {}
    for _ in range(60):  # the canary sends 10% to version 2: both answer, each from its own cache
        response = infer(server, "wine", row)
        body = response.json()
        assert response.status_code == 200 and body["parameters"]["variant"] == body["model_version"]
        probabilities = next(o for o in body["outputs"] if o["name"] == "probabilities")["data"]
        assert by_version.setdefault(body["model_version"], probabilities) == probabilities
    assert set(by_version) == {"1", "2"} and not np.allclose(by_version["1"], by_version["2"])
    assert lookups(server, "wine")["hit"] >= 50


def _offset_model(data: bytes, offset: float) -> bytes:
    """The diabetes model with ``offset`` added to its prediction: same inputs, other answers."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    output_name = graph.output[0].name
    raw = output_name + "_before_offset"
    for node in graph.node:
        node.output[:] = [raw if name == output_name else name for name in node.output]
    graph.initializer.append(numpy_helper.from_array(np.array([offset], dtype=np.float32), "offset"))
    graph.node.append(helper.make_node("Add", [raw, "offset"], [output_name]))
    return model.SerializeToString()


def test_a_cached_answer_is_not_judged_by_a_rollout_guard(served: tuple[ServerProcess, Path]) -> None:
    """A hit says nothing of how the variant runs: a warm baseline cache against a
    cold candidate's would otherwise tilt the guard's windows."""
    server, _ = served
    row = [[12.0, 2.0, 2.3, 19.0, 90.0, 2.2, 2.0, 0.4, 1.5, 4.0, 1.0, 2.8, 800.0]]
    with server.admin_client() as admin:
        started = admin.post("/v2/routing/wine/rollout/start",
                             json={"candidate": "2", "baseline": "1", "steps": "50:600s,100:600s"})  # fmt: skip
        assert started.status_code == 200, started.text

        def judged() -> int:
            window = admin.get("/v2/routing/wine").json().get("window") or {}
            return sum(found["requests"] for found in window.values())

        for _ in range(40):
            assert infer(server, "wine", row).status_code == 200
        assert judged() <= 2  # each variant's first answer ran its model; the rest were hits
        for _ in range(5):
            assert infer(server, "wine", row, cache=False).status_code == 200
        assert judged() <= 7 and judged() >= 5
