"""What the response cache buys, and what a miss pays for it (issue 22).

    .venv/bin/python bench/cache.py [--duration 8] [--protocol rest-binary|rest] [--json OUT.json]

The large MLP of bench/models.py (1024 -> 4096 -> 4096 -> 10, batching tuned
as in the side-by-side benchmark) with ``[cache] enabled = true``, served by
one turnout process on core 0 (the door's target above a batch, as in
bench/side_by_side.py: a closed loop waiting on 20-70 ms batches is not
overload); this script's closed-loop clients run on core 1 (the raw
keep-alive client of ``turnout bench``). At c=64, one run each:

- **hits**: every request the same row, so all but the first are answered
  from the cache;
- **misses**: every request a row never sent before (the first value is a
  counter), so every request is looked up, run and stored;
- **bypass**: the same unique rows with ``"cache": false``, the path a model
  without a cache takes.

The figures: hits / misses throughput (bar >= 20), and the cache's cost on a
miss, measured in-process on this model's tensors (the key, the lookup and
the storing of the answer, with their metrics; bar <= 10 us), with c=1 p50 of
misses and of bypass for the same cost seen from outside (noisier).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import models as bench_models  # noqa: E402  (bench/models.py, beside this script)
from gateway import wait_ready  # noqa: E402

from turnout.bench.http_client import HttpTarget  # noqa: E402
from turnout.observability.metrics import Metrics  # noqa: E402
from turnout.serving.response_cache import ResponseCache, cache_key, wanted  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")
PORT = 9500
WIDTH = 1024  # the large MLP's input


class Bodies:
    """Request bodies with one row each: the same row every time, or a new one each time."""

    sent = 0  # rows made unique so far, in every run: a row is never sent twice

    def __init__(self, protocol: str, unique: bool, bypass: bool) -> None:
        self._row = np.random.default_rng(7).standard_normal((1, WIDTH)).astype(np.float32)
        self._protocol, self._unique = protocol, unique
        self._parameters: dict[str, Any] = {"cache": False} if bypass else {}
        self._fixed = None if unique else self._encode(self._row)

    def next(self) -> tuple[bytes, dict[str, str]]:
        if self._fixed is not None:
            return self._fixed
        Bodies.sent += 1
        row = self._row.copy()
        row[0, 0] = Bodies.sent  # never sent before
        return self._encode(row)

    def _encode(self, row: np.ndarray[Any, Any]) -> tuple[bytes, dict[str, str]]:
        tensor: dict[str, Any] = {"name": "input", "datatype": "FP32", "shape": [1, WIDTH]}
        if self._protocol == "rest":
            tensor["data"] = row.reshape(-1).tolist()
            return orjson.dumps({"inputs": [tensor], "parameters": self._parameters}), {}
        raw = row.tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
        header = orjson.dumps({"inputs": [tensor], "parameters": {**self._parameters, "binary_data_output": True}})
        return header + raw, {"Inference-Header-Content-Length": str(len(header))}


async def closed_loop(bodies: Bodies, concurrency: int, duration: float) -> dict[str, float]:
    target = HttpTarget(f"http://127.0.0.1:{PORT}")
    path = "/v2/models/mlp_large/infer"
    connections = [await target.connect() for _ in range(concurrency)]
    latencies: list[float] = []
    counting = False
    stop_at = time.monotonic() + 1.0 + duration  # one second of warm-up first

    async def client(connection: Any) -> None:
        while time.monotonic() < stop_at:
            body, headers = bodies.next()
            started = time.perf_counter()
            status, answer = await connection.send(target.request("POST", path, body, headers), keep_body=True)
            if status != 200:
                raise SystemExit(f"status {status}: {answer[:300]!r}")
            if counting:
                latencies.append(time.perf_counter() - started)

    tasks = [asyncio.ensure_future(client(connection)) for connection in connections]
    await asyncio.sleep(1.0)
    counting, began = True, time.monotonic()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - began
    return {"req_s": len(latencies) / elapsed, "p50_ms": statistics.median(latencies) * 1000}


def miss_cost_us() -> float:
    """The cache's work on a miss, in-process: key, lookup, store, and their metric updates."""
    metrics = Metrics(process_metrics=False)
    cache = ResponseCache(64 * 1024 * 1024, None)
    row = np.random.default_rng(7).standard_normal((1, WIDTH)).astype(np.float32)
    answer = {"output": np.ones((1, 10), dtype=np.float32)}
    count = [0]

    def one_miss() -> None:
        count[0] += 1
        row[0, 0] = count[0]
        parameters: dict[str, Any] = {}
        wanted(parameters)
        key = cache_key("mlp_large", 1, {"input": row}, ("output",), parameters)
        cache.get(key)
        metrics.cache_lookups("mlp_large", "1", "miss").inc()
        cache.put(key, answer)
        metrics.cache_bytes("mlp_large", "1").set(cache.bytes)

    rounds = [timeit.timeit(one_miss, number=20_000) / 20_000 * 1e6 for _ in range(5)]
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--protocol", choices=("rest-binary", "rest"), default="rest-binary")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cost = miss_cost_us()
    with tempfile.TemporaryDirectory(prefix="turnout-cache-") as temp:
        work = Path(temp)
        bench_models.build(work, ["mlp_large"])
        repo = work / "turnout_tuned"
        with (repo / "mlp_large" / "model.toml").open("a") as toml:
            toml.write("\n[cache]\nenabled = true\nmax_bytes = 268435456\n")
        log = (work / "server.log").open("wb")
        server = subprocess.Popen(
            ["taskset", "-c", "0", PY, "-m", "turnout", "serve", str(repo), "--http-port", str(PORT),
             "--grpc-port", str(PORT + 1), "--admin-port", str(PORT + 2), "--state-dir", str(work / "state"),
             "--no-inference-auth", "--admission-target", "0.2"], stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_ready(PORT, work / "server.log")
            os.sched_setaffinity(0, {1})
            figures: dict[str, Any] = {"protocol": args.protocol, "miss_cost_us": cost}
            for name, unique, bypass in (("hits", False, False), ("misses", True, False), ("bypass", True, True)):
                cpu_before = _cpu_seconds(server.pid)
                loaded = uvloop.run(closed_loop(Bodies(args.protocol, unique, bypass), 64, args.duration))
                spent = _cpu_seconds(server.pid) - cpu_before  # the warm-up second included
                loaded["server_cpu_us"] = spent / (loaded["req_s"] * (args.duration + 1)) * 1e6
                alone = uvloop.run(closed_loop(Bodies(args.protocol, unique, bypass), 1, args.duration / 2))
                figures[name] = {
                    "c64_req_s": loaded["req_s"],
                    "c64_p50_ms": loaded["p50_ms"],
                    "c64_server_cpu_us": loaded["server_cpu_us"],
                    "c1_p50_ms": alone["p50_ms"],
                }
                print(f"{name}: c=64 {loaded['req_s']:,.0f} req/s (p50 {loaded['p50_ms']:.2f} ms, server CPU "
                      f"{loaded['server_cpu_us']:.0f} us/req); "
                      f"c=1 p50 {alone['p50_ms']:.3f} ms", flush=True)  # fmt: skip
        finally:
            server.terminate()
            server.wait(30)
    ratio = figures["hits"]["c64_req_s"] / figures["misses"]["c64_req_s"]
    added = (figures["misses"]["c1_p50_ms"] - figures["bypass"]["c1_p50_ms"]) * 1000
    figures.update(hit_over_miss=ratio, c1_miss_minus_bypass_us=added)
    print(f"hits / misses at c=64: {ratio:.1f}x (bar >= 20); the cache's cost on a miss, in-process: "
          f"{cost:.1f} us (bar <= 10); c=1 p50 misses - bypass: {added:+.0f} us")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


if __name__ == "__main__":
    main()
