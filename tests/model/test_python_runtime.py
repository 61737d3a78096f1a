"""The Python runtime in-process: ``model.py`` found and loaded as the
repository reads it, the signature from the class or from ``model.toml``,
answers checked (datatype, shape, rows, a missing output) with the output
named, and a model that cannot load refused with its reason. The server
path (REST, binary, gRPC) is tests/integration/test_python_models.py."""

from __future__ import annotations

import asyncio
import shutil
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest

from tests.model.loading_support import loaded as loaded_version
from turnout.model.loader import LoadedVersion, LoadFailed

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python_models" / "text_stats"

ROWS = """\
from turnout import PythonModel, Tensor
import numpy as np

class Rows(PythonModel):
    inputs = (Tensor("x", "FP32", [-1, 2]),)
    outputs = (Tensor("y", "FP32", [-1, 1]),)

    def predict(self, inputs, parameters):
        x = inputs["x"]
        how = parameters.get("how", "right")
        if how == "float64":
            return {"y": x.sum(axis=1, keepdims=True).astype(np.float64)}
        if how == "text":
            return {"y": np.array([["a"]] * len(x))}
        if how == "missing":
            return {"z": x}
        if how == "rows":
            return {"y": x.sum(axis=1, keepdims=True)[:1]}
        if how == "shape":
            return {"y": x}
        if how == "list":
            return [x]
        return {"y": x.sum(axis=1, keepdims=True)}

    parameters = ("how",)
"""


def repository(root: Path, name: str, source: str, toml: str = 'runtime = "python"\ntrusted = true\n') -> Path:
    (root / name / "1").mkdir(parents=True)
    (root / name / "1" / "model.py").write_text(source)
    (root / name / "model.toml").write_text(toml)
    return root


def loaded(root: Path, name: str, allow_trusted: bool = True) -> AbstractContextManager[LoadedVersion]:
    """Python models run code: these tests' server allows trusted models, unless told otherwise."""
    return loaded_version(root, name, allow_trusted)


ISOLATIONS = pytest.mark.parametrize("isolation", ["process", "none"])


def isolated(isolation: str, extra: str = "") -> str:
    return f'runtime.name = "python"\ntrusted = true\n[runtime.options]\nisolation = "{isolation}"\n{extra}'


def test_the_example_serves_text_with_its_own_option(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLE, tmp_path / "text_stats")
    with loaded(tmp_path, "text_stats") as version:
        answer(version)


def answer(version: LoadedVersion) -> None:
    assert [s.describe() for s in version.signature.inputs] == ["text BYTES [-1]"]
    texts = np.array(["zoë".encode(), b"hi"], dtype=object)
    out = version.instances[0].predict({"text": texts}, ["shouted", "characters"])
    assert out["shouted"].tolist() == ["ZOË!".encode(), b"HI!"]
    assert out["characters"].dtype == np.int64 and out["characters"].tolist() == [3, 2]


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("text", "output 'y' is <U1, which cannot be cast to FP32"),
        ("missing", "output 'y' is missing"),
        ("rows", "output 'y' has 1 rows for 3 input rows"),
        ("shape", "output 'y' has shape [3, 2] where the signature says [-1, 1]"),
        ("list", "predict returned a list, not a mapping"),
    ],
)
@ISOLATIONS
def test_a_wrong_answer_is_an_error_that_names_the_output(tmp_path: Path, how: str, says: str, isolation: str) -> None:
    with loaded(repository(tmp_path, "rows", ROWS, isolated(isolation)), "rows") as version:
        x = np.ones((3, 2), dtype=np.float32)
        with pytest.raises(Exception) as raised:
            version.instances[0].predict({"x": x}, ["y"], {"how": how})
    assert says in str(raised.value)


@ISOLATIONS
def test_numbers_are_cast_to_the_declared_datatype(tmp_path: Path, isolation: str) -> None:
    with loaded(repository(tmp_path, "rows", ROWS, isolated(isolation)), "rows") as version:
        instance = version.instances[0]
        out = instance.predict({"x": np.ones((3, 2), dtype=np.float32)}, ["y"], {"how": "float64"})
        assert out["y"].dtype == np.float32 and out["y"].tolist() == [[2.0]] * 3
        assert instance.parameters == frozenset({"how"})


def test_model_toml_declares_the_signature_when_the_class_does_not(tmp_path: Path) -> None:
    source = (
        "from turnout import PythonModel\n\nclass Echo(PythonModel):\n"
        "    def predict(self, inputs, parameters):\n        return {'out': inputs['in']}\n"
    )
    toml = (
        'runtime = "python"\ntrusted = true\n'
        '[[inputs]]\nname = "in"\ndatatype = "INT32"\nshape = [-1, 3]\n'
        '[[outputs]]\nname = "out"\ndatatype = "INT32"\nshape = [-1, 3]\n'
    )
    with loaded(repository(tmp_path, "echo", source, toml), "echo") as version:
        assert [s.describe() for s in version.signature.outputs] == ["out INT32 [-1, 3]"]


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("raise RuntimeError('no weights here')\n", "model.py failed to import: RuntimeError: no weights here"),
        ("x = 1\n", "model.py defines 0 PythonModel subclasses"),
        (
            "from turnout import PythonModel\nclass A(PythonModel): pass\nclass B(PythonModel): pass\n",
            "defines 2 PythonModel subclasses ['A', 'B']",
        ),
        (
            "from turnout import PythonModel\nclass A(PythonModel):\n"
            "    def load(self, context):\n        raise OSError('gone')\n",
            "gone",
        ),
        ("from turnout import PythonModel\nclass A(PythonModel): pass\n", "declare its [[inputs]] and [[outputs]]"),
    ],
)
@ISOLATIONS
def test_a_model_that_cannot_load_says_why(tmp_path: Path, source: str, says: str, isolation: str) -> None:
    with (
        pytest.raises(LoadFailed) as raised,
        loaded(repository(tmp_path, "broken", source, isolated(isolation)), "broken"),
    ):
        pass
    assert says in str(raised.value)


def test_class_picks_one_of_several(tmp_path: Path) -> None:
    source = ROWS + "\nclass Other(Rows):\n    pass\n"
    toml = 'runtime.name = "python"\ntrusted = true\n[runtime.options]\nclass = "Other"\n'
    with loaded(repository(tmp_path, "two", source, toml), "two") as version:
        out = version.instances[0].predict({"x": np.ones((1, 2), dtype=np.float32)}, ["y"])
    assert out["y"].tolist() == [[2.0]]


def test_python_models_run_code_so_they_need_both_consents(tmp_path: Path) -> None:
    root = repository(tmp_path, "rows", ROWS, 'runtime = "python"\n')
    with pytest.raises(LoadFailed) as raised, loaded(root, "rows", allow_trusted=True):
        pass
    assert "`trusted = true` in its model.toml" in str(raised.value)
    with (
        pytest.raises(LoadFailed) as raised,
        loaded(repository(tmp_path / "b", "rows", ROWS), "rows", allow_trusted=False),
    ):
        pass
    assert "a server run with --allow-trusted-models" in str(raised.value)


ASYNC = """\
import asyncio
from turnout import PythonModel, Tensor

class Waits(PythonModel):
    inputs = (Tensor("x", "FP32", [-1, 1]),)
    outputs = (Tensor("y", "FP32", [-1, 1]),)

    async def predict_async(self, inputs, parameters):
        await asyncio.sleep(0)  # it may await I/O
        return {"y": inputs["x"] + 1}
"""


@ISOLATIONS
def test_an_async_predict_is_used_when_a_model_defines_one(tmp_path: Path, isolation: str) -> None:
    with loaded(repository(tmp_path, "waits", ASYNC, isolated(isolation)), "waits") as version:
        instance = version.instances[0]
        x = {"x": np.zeros((2, 1), dtype=np.float32)}
        if instance.asynchronous:  # in-process: on the event loop
            out = asyncio.run(instance.predict_async(x, ["y"]))
        else:  # in a worker: its own loop, kept for the worker's life; the round trip awaited or not
            out = [instance.predict(x, ["y"]) for _ in range(3)][-1]
            assert asyncio.run(instance.predict_lone(x, ["y"]))["y"].tolist() == out["y"].tolist()
    assert out["y"].tolist() == [[1.0], [1.0]]
    assert instance.asynchronous == (isolation == "none")


SLOW_ECHO = """\
import time
from turnout import PythonModel, Tensor

class SlowEcho(PythonModel):
    inputs = (Tensor("x", "FP32", [-1, 1]),)
    outputs = (Tensor("y", "FP32", [-1, 1]),)

    def predict(self, inputs, parameters):
        x = inputs["x"].copy()  # read at once: the batch it came in must not be overwritten meanwhile
        time.sleep(0.3)
        return {"y": x * 10}
"""


def test_a_call_abandoned_on_the_loop_never_answers_the_next_one(tmp_path: Path) -> None:
    """A request cancelled while its worker computes (its client gone) leaves
    that batch's reply in the socket: the next call must read past it, to its
    own answer, with the same worker."""
    with loaded(repository(tmp_path, "slow", SLOW_ECHO, isolated("process")), "slow") as version:
        instance = version.instances[0]
        worker = instance._process.pid  # type: ignore[attr-defined]

        async def abandon_then_ask() -> list[list[float]]:
            first = asyncio.ensure_future(instance.predict_async({"x": np.full((1, 1), 1, np.float32)}, ["y"]))
            await asyncio.sleep(0.1)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            out = await instance.predict_async({"x": np.full((1, 1), 2, np.float32)}, ["y"])
            return out["y"].tolist()

        assert asyncio.run(abandon_then_ask()) == [[20.0]]

        # and the blocking round trip after another abandoned call
        async def abandon() -> None:
            call = asyncio.ensure_future(instance.predict_async({"x": np.full((1, 1), 3, np.float32)}, ["y"]))
            await asyncio.sleep(0.1)
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)

        asyncio.run(abandon())
        assert instance.predict({"x": np.full((1, 1), 4, np.float32)}, ["y"])["y"].tolist() == [[40.0]]
        assert instance._process.pid == worker  # type: ignore[attr-defined]
