"""Raw ONNX Runtime in-process: the ceiling no server can pass.

    taskset -c 0 python bench/raw_ort.py MODEL.onnx [--input-file F.json] [--batches 1,8,32,128]
        [--duration S] [--json OUT.json]

One session with the servers' settings (one intra-op thread, one inter-op thread,
sequential, all graph optimisations), ``session.run`` in a tight loop on the
same input for ``--duration`` seconds per batch size, after a short warm-up.
Reports calls/s, rows/s and the mean latency of one call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import onnxruntime as ort

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
_V2_TYPES = {"FP32": np.float32, "INT64": np.int64, "INT32": np.int32}


def session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def inputs_for(session: ort.InferenceSession, batch: int, input_file: Path | None) -> dict[str, np.ndarray]:
    """One row (from the file, or random) repeated ``batch`` times."""
    if input_file is not None:
        document = json.loads(input_file.read_text())
        rows = {
            t["name"]: np.asarray(t["data"], dtype=_V2_TYPES[t["datatype"]]).reshape(t["shape"])[:1]
            for t in document["inputs"]
        }
    else:
        rng = np.random.default_rng(0)
        rows = {}
        for spec in session.get_inputs():
            shape = [1] + [d if isinstance(d, int) else 1 for d in spec.shape[1:]]
            rows[spec.name] = rng.standard_normal(shape).astype(_NUMPY_TYPES[spec.type])
    return {name: np.ascontiguousarray(np.repeat(row, batch, axis=0)) for name, row in rows.items()}


def measure(session: ort.InferenceSession, feeds: dict[str, np.ndarray], duration: float) -> dict[str, float]:
    warmup_end = time.monotonic() + min(0.5, duration / 4)
    while time.monotonic() < warmup_end:
        session.run(None, feeds)
    calls = 0
    start = time.perf_counter()
    deadline = start + duration
    now = start
    while now < deadline:
        session.run(None, feeds)
        calls += 1
        now = time.perf_counter()
    elapsed = now - start
    rows = len(next(iter(feeds.values())))
    return {
        "batch": rows,
        "calls_per_s": calls / elapsed,
        "rows_per_s": calls * rows / elapsed,
        "ms_per_call": 1000 * elapsed / calls,
    }


def run(model: Path, batches: list[int], duration: float, input_file: Path | None) -> list[dict[str, Any]]:
    session = ort.InferenceSession(str(model), session_options(), providers=["CPUExecutionProvider"])
    return [measure(session, inputs_for(session, batch, input_file), duration) for batch in batches]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--input-file", type=Path)
    parser.add_argument("--batches", default="1,8,32,128")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = run(args.model, [int(b) for b in args.batches.split(",")], args.duration, args.input_file)
    for r in results:
        print(
            f"batch {r['batch']:>4}: {r['calls_per_s']:>10.1f} calls/s {r['rows_per_s']:>10.1f} rows/s "
            f"{r['ms_per_call']:.4f} ms/call",
            file=sys.stderr,
        )
    if args.json:
        args.json.write_text(json.dumps({"results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
