"""``[runtime.options] providers`` for ONNX Runtime: the wanted execution
providers this onnxruntime has, in order, the CPU always last; one it lacks
(CUDA on this machine) is skipped with a log line naming it, and the model
still loads and answers."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from turnout.model.loader import load_version
from turnout.model.repository import ModelRepository


def test_a_provider_this_machine_lacks_falls_back_to_the_cpu_with_a_log_line(
    example_repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(example_repo / "diabetes", tmp_path / "diabetes")
    toml = tmp_path / "diabetes" / "model.toml"
    text = toml.read_text().replace('runtime = "onnx"', 'runtime.name = "onnx"')
    toml.write_text(text + '\n[runtime.options]\nproviders = ["CUDAExecutionProvider"]\n')
    with caplog.at_level(logging.WARNING, logger="turnout.registry"):
        version = load_version(ModelRepository(tmp_path).read("diabetes"), 1)
    try:
        assert "execution provider(s) ['CUDAExecutionProvider'] not available here" in caplog.text
        assert version.instances[0]._session.get_providers() == ["CPUExecutionProvider"]  # type: ignore[attr-defined]
        names = [spec.name for spec in version.signature.outputs]
        out = version.instances[0].predict({"input": np.zeros((2, 10), dtype=np.float32)}, names)
        assert out[names[0]].shape[0] == 2
    finally:
        for instance in version.instances:
            instance.close()
