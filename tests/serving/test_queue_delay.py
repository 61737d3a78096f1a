"""How long a batch may wait: model.toml's max_queue_delay_ms when it is set
(0 included), else the runtime's own default, which is a short wait for a
Python model in a worker process (each batch is a round trip to it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from turnout.model.config import BatchingConfig, load_config
from turnout.model.runtimes.base import NO_PARAMETERS, LoadedModel, Outputs, Tensors
from turnout.model.runtimes.process import ProcessInstance
from turnout.serving.served import queue_delay


class _Plain(LoadedModel):
    def predict(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        return {}


class _RoundTrip(_Plain):
    batch_delay = 0.0005


def _batching(tmp_path: Path, toml: str) -> BatchingConfig:
    (tmp_path / "model.toml").write_text('runtime.name = "onnx"\n' + toml)
    return load_config(tmp_path).batching


def test_without_a_delay_in_model_toml_the_runtimes_default_applies(tmp_path: Path) -> None:
    batching = _batching(tmp_path, "[batching]\ntimeout_ms = 500\n")
    assert queue_delay(batching, _Plain()) == 0.0
    assert queue_delay(batching, _RoundTrip()) == 0.0005


def test_a_delay_set_in_model_toml_wins_even_when_it_is_zero(tmp_path: Path) -> None:
    assert queue_delay(_batching(tmp_path, "[batching]\nmax_queue_delay_ms = 0\n"), _RoundTrip()) == 0.0
    assert queue_delay(_batching(tmp_path, "[batching]\nmax_queue_delay_ms = 2.5\n"), _Plain()) == 0.0025


def test_a_worker_process_waits_a_little_for_companions_and_in_process_models_do_not() -> None:
    assert 0 < ProcessInstance.batch_delay <= 0.001
    assert LoadedModel.batch_delay == 0.0
