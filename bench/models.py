"""Build the benchmark's models and lay them out for every server under test.

    python bench/models.py [OUT_DIR] [--models mlp_small,mlp_large,minilm]

Deterministic: the MLPs are written with ``onnx.helper`` from fixed-seed numpy
weights, so the same onnx version writes the same bytes. MiniLM is exported
once with torch (in its own environment, ``bench/.venvs/torch``) and cached in
``bench/.cache/``; so is the tokenised input the load generator sends it.

Layout under OUT_DIR (every ``model.onnx`` a hard link to the one cached file):

    turnout_default/<name>/{model.toml, 1/model.onnx}   no [batching]: turnout's defaults
    turnout_tuned/<name>/{model.toml, 1/model.onnx}     batching tuned per model
    turnout_nobatch/<name>/{model.toml, 1/model.onnx}   max_batch_size = 0: batching off
    mlserver_off/{settings.json, <name>/{model-settings.json, model.onnx}}
    mlserver_batching/...                               adaptive batching on
    inputs/<name>.json                                  the V2 request every server is sent
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Single-threaded BLAS before numpy loads: the weights do not depend on it,
# but the build must not compete with a benchmark that may be running.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import itertools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
TORCH_PYTHON = HERE / ".venvs" / "torch" / "bin" / "python"
OPSET = 17
ALL_MODELS = ("mlp_small", "mlp_large", "minilm")


@dataclass(frozen=True)
class Batching:
    """The tuned batching for one model, in each server's terms."""

    max_batch_size: int
    max_queue_delay_ms: float
    preferred_batch_sizes: tuple[int, ...]


# Tuned from each model's raw ONNX Runtime numbers (bench/raw_ort.py), not searched:
# a small MLP gains nothing from waiting (one call is ~10 us, less than a request's
# overhead), so it only batches what is already queued; the large one gains ~5-10x
# rows/s from batches of 32+, which pays for a wait at high concurrency (10 ms: the clients a
# batch answered are back in time to join the next; 1 ms split them, BENCHMARKS issue18-targets);
# MiniLM's cost per row is flat in the batch size on one core (~40 ms), so batches
# are kept small and never waited for: a large one only delays the rows in it.
# No preferred sizes for the MLPs: as in Triton, reaching one dispatches that many
# rows at once, which on a CPU only cuts batches short (63 queued ran as 32 + 31).
TUNED = {
    "mlp_small": Batching(max_batch_size=128, max_queue_delay_ms=0.0, preferred_batch_sizes=()),
    "mlp_large": Batching(max_batch_size=128, max_queue_delay_ms=10.0, preferred_batch_sizes=()),
    "minilm": Batching(max_batch_size=8, max_queue_delay_ms=0.0, preferred_batch_sizes=()),
}

# The turnout repositories and the batching each gets: turnout's defaults, TUNED, or none.
TURNOUT_LAYOUTS: dict[str, str] = {"turnout_default": "default", "turnout_tuned": "tuned", "turnout_nobatch": "off"}

# MLServer's adaptive batching: max_batch_time is in seconds.
MLSERVER_BATCHING = {
    "mlp_small": {"max_batch_size": 64, "max_batch_time": 0.0005},
    "mlp_large": {"max_batch_size": 128, "max_batch_time": 0.002},
    "minilm": {"max_batch_size": 8, "max_batch_time": 0.002},
}


# ---------------------------------------------------------------- the MLPs


def mlp(layers: Iterable[int], seed: int) -> onnx.ModelProto:
    """A ReLU MLP ``input`` FP32 [-1, layers[0]] -> ``output`` FP32 [-1, layers[-1]]."""
    sizes = list(layers)
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    current = "input"
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        bias = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        initializers += [numpy_helper.from_array(weight, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
        last = i == len(sizes) - 2
        nodes += [
            helper.make_node("MatMul", [current, f"w{i}"], [f"mm{i}"]),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], ["output" if last else f"z{i}"]),
        ]
        if not last:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"h{i}"]))
            current = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", sizes[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="turnout-bench")
    model.ir_version = 8  # readable by every onnxruntime the servers may pin
    onnx.checker.check_model(model)
    return model


MLPS = {
    "mlp_small": ((32, 64, 64, 2), 0),
    "mlp_large": ((1024, 4096, 4096, 10), 1),
}


def cached_onnx(name: str) -> Path:
    """The model's ONNX file in the cache, built if missing."""
    path = CACHE / "onnx" / f"{name}.onnx"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if name in MLPS:
        layers, seed = MLPS[name]
        _write_atomic(path, mlp(layers, seed).SerializeToString())
    elif name == "minilm":
        _export_minilm()
    else:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(ALL_MODELS)}")
    return path


def input_file(name: str) -> Path:
    """The one-row V2 request body sent to every server: real text for MiniLM, seeded noise for the MLPs.

    Every server gets the same file, so none depends on what its metadata
    endpoint reports (MLServer's is empty for a custom runtime, the FastAPI
    server has none).
    """
    path = CACHE / "inputs" / f"{name}.json"
    if path.exists():
        return path
    if name == "minilm":
        _export_minilm()
        return path
    layers, seed = MLPS[name]
    row = np.random.default_rng(seed + 1000).standard_normal(layers[0]).astype(np.float32)
    request = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, layers[0]], "data": row.tolist()}]}
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, (json.dumps(request) + "\n").encode())
    return path


def _export_minilm() -> None:
    subprocess.run([str(HERE / "setup_envs.sh"), "torch"], check=True)  # idempotent
    subprocess.run(
        [str(TORCH_PYTHON), str(HERE / "export_minilm.py"), str(CACHE)],
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "true"},
    )


# ---------------------------------------------------------------- the layouts


def build(out: Path, models: Iterable[str] = ALL_MODELS) -> None:
    names = list(models)
    sources = {name: cached_onnx(name) for name in names}
    for layout in (*TURNOUT_LAYOUTS, "mlserver_off", "mlserver_batching", "inputs"):
        shutil.rmtree(out / layout, ignore_errors=True)
    for name, source in sources.items():
        for layout, kind in TURNOUT_LAYOUTS.items():
            _link(source, out / layout / name / "1" / "model.onnx")
            (out / layout / name / "model.toml").write_text(
                _turnout_toml(name, TUNED[name] if kind == "tuned" else kind)
            )
        for layout, batching in (("mlserver_off", None), ("mlserver_batching", MLSERVER_BATCHING[name])):
            _link(source, out / layout / name / "model.onnx")
            settings = _mlserver_model_settings(name, batching)
            (out / layout / name / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")
        _link(input_file(name), out / "inputs" / f"{name}.json")
    for layout in ("mlserver_off", "mlserver_batching"):
        (out / layout / "settings.json").write_text(json.dumps(mlserver_settings(), indent=2) + "\n")


def _turnout_toml(name: str, batching: Batching | str) -> str:
    lines = [f"# {name}: built by bench/models.py", 'runtime.name = "onnx"', "warmup = true"]
    if batching == "default":
        lines.append("# no batching settings: turnout's defaults")
    elif batching == "off":
        lines.append("max_batch_size = 0  # batching off: each request runs alone")
    else:
        assert isinstance(batching, Batching)
        lines += [
            f"max_batch_size = {batching.max_batch_size}",
            "",
            "[batching]",
            f"max_queue_delay_ms = {batching.max_queue_delay_ms}",
            f"preferred_batch_sizes = {list(batching.preferred_batch_sizes)}",
        ]
    # The same ONNX Runtime settings as every other server in the benchmark.
    lines += [
        "",
        "[instances]",
        "count = 1",
        "",
        "[runtime.options]",
        "intra_op_threads = 1",
        'execution_mode = "sequential"',
    ]
    return "\n".join(lines) + "\n"


def _mlserver_model_settings(name: str, batching: dict[str, float] | None) -> dict[str, object]:
    settings: dict[str, object] = {
        "name": name,
        "implementation": "mlserver_runtime.OnnxRuntimeModel",
        "parameters": {"uri": "./model.onnx", "version": "1"},
    }
    if batching is not None:
        settings.update(batching)
    return settings


def mlserver_settings() -> dict[str, object]:
    """Server-wide MLServer settings; ports are given on the command line.

    ``parallel_workers = 0`` keeps inference in the server process, so the whole
    server runs on the one core it is pinned to (with workers, requests cross a
    process boundary on the same core; measured slower, see BENCHMARKS.md).
    """
    return {
        "parallel_workers": 0,
        "metrics_endpoint": None,
        "debug": False,
        "load_models_at_startup": True,
    }


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=HERE / ".out" / "repos")
    parser.add_argument("--models", default=",".join(ALL_MODELS))
    args = parser.parse_args(argv)
    build(args.out, args.models.split(","))
    print(f"built {args.models} under {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
