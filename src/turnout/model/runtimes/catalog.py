"""The runtimes turnout ships, by the name model.toml's ``runtime`` gives them."""

from __future__ import annotations

from turnout.model.runtimes.base import ModelRuntime
from turnout.model.runtimes.onnx import OnnxRuntime


def default_runtimes() -> dict[str, ModelRuntime]:
    return {"onnx": OnnxRuntime()}
