"""Model files that run code when loaded (pickles) are refused unless the
model is marked trusted and the server allows trusted models; the refusal
says how to convert. A runtime that would unpickle is stood in for by one
that only reads the file's bytes: this test is about the gate, and a real
pickle is never loaded here."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from turnout.model.config import ModelConfig
from turnout.model.loader import LoadFailed, check_safe_to_load, load_version
from turnout.model.repository import ModelSource
from turnout.model.runtimes.base import LoadContext, LoadedModel, ModelRuntime
from turnout.model.runtimes.onnx import OnnxRuntime


class PickleRuntime(ModelRuntime):
    """What a scikit-learn runtime loading ``model.pkl`` declares."""

    platform = "test_pickle"
    artifacts = ("model.pkl",)
    executes_code_on_load = True

    def __init__(self) -> None:
        self.loaded: list[Path] = []

    def load(self, context: LoadContext) -> LoadedModel:
        self.loaded.append(context.version_dir)
        raise RuntimeError("past the gate")  # enough to show the gate let it through


def source(tmp_path: Path, runtime: ModelRuntime, files: dict[str, bytes], **config: Any) -> ModelSource:
    version_dir = tmp_path / "m" / "1"
    version_dir.mkdir(parents=True)
    for name, content in files.items():
        (version_dir / name).write_bytes(content)
    options = runtime.parse_options({})
    return ModelSource("m", tmp_path / "m", ModelConfig(**config), runtime, (1,), (1,), options)


PICKLE = pickle.dumps({"weights": np.zeros(3)})


def test_a_pickle_is_refused_by_default_with_a_way_out(tmp_path: Path) -> None:
    runtime = PickleRuntime()
    with pytest.raises(LoadFailed) as refused:
        load_version(source(tmp_path, runtime, {"model.pkl": PICKLE}), 1)
    message = str(refused.value)
    assert "model.pkl is a pickle, which runs code when loaded" in message
    assert "`trusted = true` in its model.toml and a server run with --allow-trusted-models" in message
    assert "ONNX" in message and "skops" in message and "torch.export" in message
    assert runtime.loaded == []


@pytest.mark.parametrize(("trusted", "allowed"), [(True, False), (False, True)])
def test_either_consent_alone_is_not_enough(tmp_path: Path, trusted: bool, allowed: bool) -> None:
    with pytest.raises(LoadFailed, match="runs code when loaded"):
        check_safe_to_load(source(tmp_path, PickleRuntime(), {"model.pkl": PICKLE}, trusted=trusted), 1, allowed)


def test_a_trusted_model_on_a_server_that_allows_it_reaches_its_runtime(tmp_path: Path) -> None:
    runtime = PickleRuntime()
    with pytest.raises(LoadFailed, match="past the gate"):
        load_version(source(tmp_path, runtime, {"model.pkl": PICKLE}, trusted=True), 1, allow_trusted=True)
    assert runtime.loaded == [tmp_path / "m" / "1"]


def test_a_pickle_where_an_onnx_model_should_be_is_explained(tmp_path: Path) -> None:
    with pytest.raises(LoadFailed) as refused:
        load_version(source(tmp_path, OnnxRuntime(), {"model.joblib": PICKLE}), 1, allow_trusted=True)
    message = str(refused.value)
    assert "model.onnx: missing" in message
    assert "model.joblib is a joblib pickle, which runs code when loaded" in message
    assert "skl2onnx" in message


def test_onnx_models_are_not_affected(tmp_path: Path) -> None:
    check_safe_to_load(source(tmp_path, OnnxRuntime(), {"model.onnx": b"not checked here"}), 1, False)
