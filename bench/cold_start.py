"""Cold start: how long the first request for a model out of memory takes
(scale to zero), for the largest example model.

    python bench/cold_start.py [--starts 20] [--report BENCHMARKS.md]

One server (pinned to core 0) runs with ``--lazy-load --idle-unload 0.3``:
each round waits until the model has been unloaded (the repository index
says so), then times one request from core 1 (the cold start: load, warm-up,
inference), then one more (warm). In-process, for reference: how long ONNX
Runtime takes to open the same file. Medians over the rounds.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import build_models  # noqa: E402  (examples/build_models.py)
import sections  # noqa: E402  (bench/sections.py)

from tests.support import ServerProcess  # noqa: E402


def largest(repository: Path) -> tuple[str, str, Path]:
    """(model, version, file) of the largest artifact in the repository."""
    files = sorted(repository.glob("*/*/model.onnx"), key=lambda p: p.stat().st_size)
    path = files[-1]
    return path.parent.parent.name, path.parent.name, path


def wait_unloaded(admin: httpx.Client, model: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        index = admin.post("/v2/repository/index").json()
        if any(e["name"] == model and e["version"] == "" and "loads on the next request" in e["reason"] for e in index):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{model} was not unloaded within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="turnout-cold-"))
    repository = work / "models"
    build_models.build(repository)
    model, version, artifact = largest(repository)
    features = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"]).get_inputs()[0].shape[1]
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, features], "data": [0.5] * features}]}
    opens = []
    for _ in range(args.starts):
        started = time.perf_counter()
        ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"]).run(
            None, {"input": np.full((1, features), 0.5, dtype=np.float32)}
        )
        opens.append(time.perf_counter() - started)
    server = ServerProcess(repository, "--lazy-load", "--idle-unload", "0.3", "--model-control", "explicit",
                           log_dir=work)  # fmt: skip
    if shutil.which("taskset"):
        server.command = ["taskset", "-c", "0", *server.command]
    cold, warm = [], []
    path = f"/v2/models/{model}/versions/{version}/infer"
    with server, server.admin_client() as admin, httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(args.starts):
            wait_unloaded(admin, model)
            started = time.perf_counter()
            assert client.post(f"/v2/models/{model}/infer", json=body).status_code == 200
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert client.post(path, json=body).status_code == 200
            warm.append(time.perf_counter() - started)
    size = artifact.stat().st_size
    table = "\n".join(
        [
            "## Cold start (scale to zero)",
            "",
            f"The largest example model, `{model}` version {version} ({size / 1024:.0f} KiB of ONNX), served with "
            "`--lazy-load --idle-unload 0.3`: each round waits until it has left memory, then times the first request "
            f"(load, checksum if any, warm-up, inference) and a second one. {args.starts} rounds, medians; "
            "`make bench-cold-start` (`.venv/bin/python bench/cold_start.py`).",
            "",
            "| | p50 ms | p90 ms |",
            "|---|---|---|",
            f"| first request, model out of memory (cold start) | {_ms(cold, 50)} | {_ms(cold, 90)} |",
            f"| next request (warm) | {_ms(warm, 50)} | {_ms(warm, 90)} |",
            f"| ONNX Runtime in-process: open the file and run once | {_ms(opens, 50)} | {_ms(opens, 90)} |",
            "",
        ]
    )
    print(table)
    sections.put(args.report, "cold_start", table)


def _ms(values: list[float], percentile: int) -> str:
    return f"{statistics.quantiles(values, n=100)[percentile - 1] * 1000:.1f}" if len(values) > 1 else "-"


if __name__ == "__main__":
    main()
