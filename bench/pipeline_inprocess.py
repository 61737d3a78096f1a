"""A pipeline's own cost per step, in one process on one core: the server's
side of bench/pipeline.py's c=1 figure, without the network and without the
cross-core wake-ups that make that figure swing on this VM.

    taskset -c 0 .venv/bin/python bench/pipeline_inprocess.py [--windows 15] [--requests 1000]

Builds the example repository (less the text pipeline) in a temporary
directory, starts a redis-server on the same core holding the patients, and
runs ``turnout serve``'s Server in this process. Then, in turn, ``--windows``
times: cancer_screening version 1 through ``DataPlane.infer`` (what a
transport calls once it has decoded a request), cancer_scaler alone through
the same, the steps by hand (redis-py's HMGET, the three ONNX Runtime
sessions, the average, the argmax) and the scaler's ``session.run``, each
``--requests`` times, one at a time with a 200 µs pause between calls (as at
c=1, where each request is lone). Per window: (pipeline - by hand - (scaler
through the data plane - its run)) / 4 steps; the report gives the median.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "examples")]

import build_models  # noqa: E402  (examples/)
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import redis  # noqa: E402
from load_features import load as load_features  # noqa: E402  (examples/)
from raw_ort import session_options  # noqa: E402  (bench/)

from turnout.app import Server  # noqa: E402
from turnout.cli.serve import _add_arguments, resolved, settings_from  # noqa: E402
from turnout.protocol.types import InferenceRequest, InferInput  # noqa: E402

STEPS = 4
PAUSE_NS = 200_000  # longer than the batcher's 150 µs "lone" window: each call is a lone request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _p50_us(call: Callable[[], Awaitable[Any]], requests: int) -> float:
    times = []
    for _ in range(requests):
        until = time.perf_counter_ns() + PAUSE_NS
        while time.perf_counter_ns() < until:  # a pause without the loop's timers, which would add their own
            pass
        began = time.perf_counter_ns()
        await call()
        times.append(time.perf_counter_ns() - began)
    return statistics.median(times) / 1e3


async def _measure(models: Path, redis_url: str, args: argparse.Namespace) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser()
    _add_arguments(parser)
    argv = [str(models), "--http-port", str(_free_port()), "--grpc-port", str(_free_port()), "--no-admin",
            "--no-inference-auth", "--state-dir", str(models.parent / "state"), "--log-level", "warning"]  # fmt: skip
    server = Server(settings_from(resolved(parser.parse_args(argv)).values))
    serving = asyncio.create_task(server.serve())
    while not server.dataplane.ready():
        await asyncio.sleep(0.05)  # the server's own start: no event to wait on from outside it
    dataplane = server.dataplane
    row = np.random.default_rng(0).standard_normal((1, 30)).astype(np.float32)
    patient = np.array([b"7"], dtype=object)

    async def pipeline() -> None:
        request = InferenceRequest("cancer_screening", "1", [InferInput("patient_id", "BYTES", (1,), patient)])
        await dataplane.infer(request, "grpc")

    async def scaler() -> None:
        await dataplane.infer(InferenceRequest("cancer_scaler", None, [InferInput("input", "FP32", (1, 30), row)]),
                              "grpc")  # fmt: skip

    def session(name: str, version: int = 1) -> ort.InferenceSession:
        return ort.InferenceSession(str(models / name / str(version) / "model.onnx"), session_options(),
                                    providers=["CPUExecutionProvider"])  # fmt: skip

    scale, risk1, risk2 = session("cancer_scaler"), session("cancer_risk", 1), session("cancer_risk", 2)
    with (models / "cancer_screening/1/pipeline.toml").open("rb") as toml:
        fields = next(s["features"] for s in tomllib.load(toml)["steps"] if s["name"] == "features")
    store = redis.Redis.from_url(redis_url)

    async def by_hand() -> None:
        values: list[bytes] = store.hmget("patient:7", fields)  # type: ignore[assignment]
        scaled = scale.run(["scaled"], {"input": np.array([[float(v) for v in values]], dtype=np.float32)})[0]
        one = risk1.run(["probabilities"], {"input": scaled})[0]
        two = risk2.run(["probabilities"], {"input": scaled})[0]
        np.stack([one, two]).mean(axis=0).argmax(axis=-1)

    async def scaler_run() -> None:
        scale.run(["scaled"], {"input": row})

    terms = {"pipeline_us": pipeline, "scaler_us": scaler, "by_hand_us": by_hand, "scaler_run_us": scaler_run}
    for call in terms.values():  # warm up
        await _p50_us(call, 200)
    windows = []
    for _ in range(args.windows):
        window = {name: await _p50_us(call, args.requests) for name, call in terms.items()}
        window["per_step_us"] = (window["pipeline_us"] - window["by_hand_us"]
                                 - (window["scaler_us"] - window["scaler_run_us"])) / STEPS  # fmt: skip
        windows.append(window)
    server.request_stop()
    await serving
    return windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=15)
    parser.add_argument("--requests", type=int, default=1000, help="calls of each term a window")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="turnout-pipeline-inprocess-") as tmp:
        models, port = Path(tmp) / "models", _free_port()
        build_models.build(models, text=False)
        url = f"redis://127.0.0.1:{port}/0"
        for toml in models.glob("cancer_screening/*/pipeline.toml"):
            toml.write_text(toml.read_text().replace("redis://127.0.0.1:6379/0", url))
        store = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no"], stdout=subprocess.DEVNULL)  # fmt: skip
        try:
            while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout != b"PONG\n":
                time.sleep(0.05)  # a child's readiness: no event to wait on
            load_features(url)
            import uvloop

            windows = uvloop.run(_measure(models, url, args))
        finally:
            store.terminate()
            store.wait(10)
    print(f"command: taskset -c 0 .venv/bin/python bench/pipeline_inprocess.py {' '.join(sys.argv[1:])}")
    for key in windows[0]:
        values = [w[key] for w in windows]
        print(f"{key:>14}: median {statistics.median(values):7.1f}   windows {min(values):.1f}-{max(values):.1f}")
    holds = statistics.median(w["per_step_us"] for w in windows) <= 30
    print(f"per-step overhead <= 30 us (in-process): {'PASS' if holds else 'FAIL'}")


if __name__ == "__main__":
    main()
