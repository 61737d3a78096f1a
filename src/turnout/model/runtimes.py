"""The runtimes turnout ships, by the name model.toml's ``runtime`` gives them."""

from __future__ import annotations

from turnout.model.onnx import OnnxRuntime
from turnout.model.runtime import ModelRuntime


def default_runtimes() -> dict[str, ModelRuntime]:
    return {"onnx": OnnxRuntime()}
