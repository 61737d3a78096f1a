"""The load-time checks of a pipeline's graph and the way it runs, on small
stand-in steps (the real steps run against real models in
tests/integration/test_pipelines.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from turnout.errors import InvalidRequest, Unavailable
from turnout.model.signature import TensorSpec
from turnout.model.tensors import Outputs
from turnout.pipeline.definition import DefinitionError, read_definition
from turnout.pipeline.executor import Executor
from turnout.pipeline.features import FeaturesNode
from turnout.pipeline.graph import GraphError, check
from turnout.pipeline.node import Accepts, Wiring
from turnout.pipeline.steps import combine

FP32_ROWS = TensorSpec("x", "FP32", (-1, 4))


@dataclass
class Step:
    """A step that adds one to what it reads (or fails with ``error``)."""

    name: str
    needs: dict[str, str]
    gives: tuple[str, ...] = ("y",)
    takes: TensorSpec = FP32_ROWS
    error: Exception | None = None
    kind: str = "model"
    ran: list[float] = field(default_factory=list)

    @property
    def wiring(self) -> Wiring:
        accepts = {local: Accepts.spec(self.takes) for local in self.needs}
        return Wiring(self.needs, accepts, {g: TensorSpec(g, "FP32", (-1, 4)) for g in self.gives})

    async def run(self, feed: Mapping[str, np.ndarray[Any, Any]], wanted: frozenset[str], parameters: Any) -> Outputs:
        self.ran.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.01)
        if self.error is not None:
            raise self.error
        total = sum(feed.values())
        return {g: total + 1 for g in self.gives}


def test_a_cycle_is_refused_and_named_step_by_step() -> None:
    steps = [Step("a", {"x": "x", "z": "c.y"}), Step("b", {"x": "a.y"}), Step("c", {"x": "b.y"})]
    with pytest.raises(GraphError, match=r"the steps form a cycle: a -> c -> b -> a"):
        check([FP32_ROWS], steps, [("out", "c.y")])


def test_a_tensor_nothing_produces_is_refused_with_what_there_is() -> None:
    with pytest.raises(GraphError, match=r"step 'a' input 'x': no step produces 'nope.y': there is no step 'nope'"):
        check([FP32_ROWS], [Step("a", {"x": "nope.y"})], [("out", "a.y")])
    with pytest.raises(GraphError, match=r"step 'b' input 'x': no step produces 'a.z': step 'a' gives \['y'\]"):
        check([FP32_ROWS], [Step("a", {"x": "x"}), Step("b", {"x": "a.z"})], [("out", "b.y")])
    with pytest.raises(GraphError, match=r"no step produces 'w' and it is not a pipeline input"):
        check([FP32_ROWS], [Step("a", {"x": "w"})], [("out", "a.y")])
    with pytest.raises(GraphError, match=r"output 'out': no step produces 'a.q'"):
        check([FP32_ROWS], [Step("a", {"x": "x"})], [("out", "a.q")])


def test_mismatched_datatypes_and_shapes_are_refused() -> None:
    ints = TensorSpec("x", "INT64", (-1, 4))
    with pytest.raises(GraphError, match=r"step 'a' input 'x': 'x' is INT64, the step takes FP32"):
        check([ints], [Step("a", {"x": "x"})], [("out", "a.y")])
    narrow = Step("b", {"x": "a.y"}, takes=TensorSpec("x", "FP32", (-1, 3)))
    with pytest.raises(GraphError, match=r"step 'b' input 'x': 'a.y' has shape \[-1, 4\], the step takes \[-1, 3\]"):
        check([FP32_ROWS], [Step("a", {"x": "x"}), narrow], [("out", "b.y")])


def test_a_step_whose_outputs_nothing_reads_is_refused() -> None:
    with pytest.raises(GraphError, match=r"step\(s\) \['idle'\]: nothing reads their outputs"):
        check([FP32_ROWS], [Step("a", {"x": "x"}), Step("idle", {"x": "x"})], [("out", "a.y")])


def test_independent_steps_share_a_level_and_run_at_once() -> None:
    a, b = Step("a", {"x": "x"}), Step("b", {"x": "x"})
    join = Step("join", {"p": "a.y", "q": "b.y"})
    graph = check([FP32_ROWS], [join, a, b], [("out", "join.y")])
    assert [[n.name for n in level] for level in graph.levels] == [["a", "b"], ["join"]]
    assert graph.signature.outputs == (TensorSpec("out", "FP32", (-1, 4)),)
    calls = Recorder()
    out = asyncio.run(Executor(graph, calls, "p", 1).run({"x": np.zeros((2, 4), np.float32)}, ["out"], {}))
    assert out["out"].tolist() == [[3.0] * 4] * 2  # (0 + 1) + (0 + 1) + 1
    assert abs(a.ran[0] - b.ran[0]) < 0.005  # together, not one after the other (each sleeps 10 ms)
    assert [(s, status) for s, _, status in calls.steps] == [("a", "success"), ("b", "success"), ("join", "success")]


def test_a_failing_step_is_named_and_keeps_its_code() -> None:
    steps = [
        Step("lookup", {"x": "x"}, error=InvalidRequest("no features for entity '7'")),
        Step("b", {"x": "lookup.y"}),
    ]
    graph = check([FP32_ROWS], steps, [("out", "b.y")])
    calls = Recorder()
    with pytest.raises(InvalidRequest, match=r"^step 'lookup': no features for entity '7'$"):
        asyncio.run(Executor(graph, calls, "p", 1).run({"x": np.zeros((1, 4), np.float32)}, ["out"], {}))
    assert [(s, status) for s, _, status in calls.steps] == [("lookup", "invalid")]
    broken = check([FP32_ROWS], [Step("a", {"x": "x"}, error=RuntimeError("boom"))], [("out", "a.y")])
    with pytest.raises(Exception, match=r"step 'a': failed: boom") as caught:
        asyncio.run(Executor(broken, calls, "p", 1).run({"x": np.zeros((1, 4), np.float32)}, ["out"], {}))
    assert caught.value.code.value == "internal"  # type: ignore[attr-defined]
    down = check([FP32_ROWS], [Step("a", {"x": "x"}, error=Unavailable("store down", retry_after=1.0))], [("o", "a.y")])
    with pytest.raises(Unavailable) as unavailable:
        asyncio.run(Executor(down, calls, "p", 1).run({"x": np.zeros((1, 4), np.float32)}, ["o"], {}))
    assert unavailable.value.retry_after == 1.0


class Recorder:
    def __init__(self) -> None:
        self.steps: list[tuple[str, float, str]] = []

    def describe(self, caller: str, model: str, version: int | None) -> Any:
        raise AssertionError("not called")

    async def infer(self, *args: Any) -> Outputs:
        raise AssertionError("not called")

    def infer_now(self, *args: Any) -> Outputs | None:
        raise AssertionError("not called")

    def step_done(self, pipeline: str, version: int, step: str, seconds: float, status: str) -> None:
        self.steps.append((step, seconds, status))


def test_combining_members_outputs() -> None:
    weights = np.array([1.0, 1.0, 3.0])
    probabilities = [
        np.array([[0.2, 0.8]], np.float32),
        np.array([[0.6, 0.4]], np.float32),
        np.array([[1.0, 0.0]], np.float32),
    ]
    assert combine("average", probabilities, weights)[0].tolist() == pytest.approx([0.6, 0.4])
    assert combine("weighted", probabilities, weights)[0].tolist() == pytest.approx([0.76, 0.24])
    assert combine("average", probabilities, weights).dtype == np.float32
    labels = [np.array([1, 0, 2]), np.array([1, 1, 2]), np.array([0, 1, 1])]
    assert combine("vote", labels, np.ones(3)).tolist() == [1, 1, 2]  # a majority per row
    assert combine("vote", labels, weights).tolist() == [0, 1, 1]  # the third member outweighs the other two


def _definition(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text('[[inputs]]\nname = "x"\ndatatype = "FP32"\nshape = [-1, 4]\n' + text)
    return path


def test_the_definition_file_is_checked_for_form(tmp_path: Path) -> None:
    outputs = '[[outputs]]\nname = "out"\nfrom = "a.y"\n'
    ok = read_definition(_definition(tmp_path, '[[steps]]\nname = "a"\nmodel = "m"\ninputs = { x = "x" }\n' + outputs))
    assert ok.steps[0].kind == "model"  # the default kind
    step = '[[steps]]\nname = "a"\n'
    model = step + 'model = "m"\ninputs = {}\n'
    branches = '[{model = "m"}, {model = "n", when = {parameter = "p", equals = 1}}]'
    cases = {
        model + model: "used twice",
        step + 'kind = "magic"\n': "kind",
        step + f'kind = "switch"\ninputs = {{}}\nbranches = {branches}\n': "only the last branch",
        step
        + 'kind = "features"\nentity = "x"\nfeatures = ["f"]\nstore = { backend = "redis", key = "k" }\n': "'{id}'",
        '[[steps]]\nname = "a b"\nmodel = "m"\ninputs = {}\n': "steps[0].name",
        step + 'kind = "features"\nentity = "x"\nfeatures = ["f"]\nstore = { backend = "feast", join_key = "id" }\n': (
            "'view:feature'"
        ),
        step + 'kind = "features"\nentity = "x"\nfeatures = ["v:f"]\nstore = { backend = "feast" }\n': "join_key",
        step + 'kind = "features"\nentity = "x"\nfeatures = ["v:f"]\n'
        'store = { backend = "feast", join_key = "id", url = "grpc://h:1" }\n': "http://",
    }
    for text, expected in cases.items():
        with pytest.raises(DefinitionError, match=r"pipeline.toml: ") as caught:
            read_definition(_definition(tmp_path, text + outputs))
        assert expected in str(caught.value), str(caught.value)
    (tmp_path / "pipeline.toml").write_text("[[steps]\n")
    with pytest.raises(DefinitionError, match="not valid TOML"):
        read_definition(tmp_path / "pipeline.toml")


def test_a_feature_store_url_that_cannot_be_used_is_refused_at_load_naming_the_step(tmp_path: Path) -> None:
    """The store's URL and TLS options are read when the step loads, so a
    mistake is the version's load error, not a failure of every request."""
    cases = {
        "ftp://127.0.0.1:1/0": "Redis URL must specify one of",
        "rediss://127.0.0.1:1/0?ssl_cert_reqs=sometimes": "Invalid SSL Certificate Requirements Flag",
        f"rediss://127.0.0.1:1/0?ssl_ca_certs={tmp_path / 'no-such-ca.pem'}": "No such file",
    }
    outputs = '[[outputs]]\nname = "out"\nfrom = "a.features"\n'
    for url, expected in cases.items():
        step = '[[steps]]\nname = "a"\nkind = "features"\nentity = "x"\nfeatures = ["f"]\n'
        step += f'store = {{ backend = "redis", url = "{url}" }}\n'
        definition = read_definition(_definition(tmp_path, step + outputs))
        with pytest.raises(GraphError, match=r"^step 'a': the feature store cannot be used: ") as caught:
            FeaturesNode(definition.steps[0])  # type: ignore[arg-type]
        assert expected in str(caught.value), str(caught.value)
