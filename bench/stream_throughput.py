"""Throughput of the Redis Streams path against the HTTP path, on the same
model and the same server, in one run.

    python bench/stream_throughput.py [--rounds 5] [--messages 20000] [--concurrency 64] [--duration 5]

One server (pinned to core 0) serves ``breast_cancer`` (the example's
gradient-boosted trees, version 2) over REST and from a Redis stream. Redis,
the producer and the HTTP load generator share core 1.

- HTTP: ``turnout bench --protocol rest --concurrency N``, closed loop, one
  row per request: requests per second.
- Stream: ``--messages`` one-row requests are put on the stream (pipelined
  XADD, far faster than the server answers); throughput is messages divided by
  the time from the first XADD to the last result read back, every result
  checked to be a response. Each message is a V2 JSON body as the HTTP
  requests are.

Each round measures both, alternating which goes first; the report quotes
medians over rounds and the ratio stream / HTTP, into its section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import build_models  # noqa: E402  (examples/build_models.py)
import sections  # noqa: E402  (bench/sections.py)
from sklearn.datasets import load_breast_cancer  # noqa: E402

from tests.support import RedisServer, ServerProcess  # noqa: E402

STREAM = "turnout:breast_cancer:requests"


def pinned(core: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv] if shutil.which("taskset") else argv


def http_round(server: ServerProcess, args: argparse.Namespace, out: Path, round_: int) -> float:
    result_file = out / f"http-{round_}.json"
    argv = [str(BIN / "turnout"), "bench", "--model", "breast_cancer", "--url", server.url, "--protocol", "rest",
            "--concurrency", str(args.concurrency), "--duration", str(args.duration), "--warmup", "1",
            "--quiet", "--json", str(result_file)]  # fmt: skip
    subprocess.run(pinned(1, argv), check=True)
    point = json.loads(result_file.read_text())["results"][0]
    assert not point["errors"], point["errors"]
    return float(point["throughput"])


def stream_round(client: redis.Redis, args: argparse.Namespace, round_: int) -> float:
    rows = load_breast_cancer().data.astype(np.float32)
    reply_to = f"bench-results-{round_}"

    def request(i: int) -> bytes:
        tensor = {"name": "input", "datatype": "FP32", "shape": [1, 30], "data": rows[i % len(rows)].tolist()}
        return orjson.dumps({"id": f"{round_}-{i}", "inputs": [tensor]})

    bodies = [request(i) for i in range(args.messages)]
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i, body in enumerate(bodies):
        pipe.xadd(STREAM, {"v": "1", "reply_to": reply_to, "request": body})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    seen: set[bytes] = set()
    last = "0-0"
    while len(seen) < args.messages:
        reply: Any = client.xread({reply_to: last}, count=5000, block=10_000)
        if not reply:
            raise RuntimeError(f"no results for 10 s ({len(seen)} of {args.messages})")
        for _stream, entries in reply:
            for entry_id, fields in entries:
                last = entry_id
                assert fields[b"kind"] == b"response", fields
                seen.add(fields[b"id"])
    elapsed = time.perf_counter() - started
    client.delete(reply_to)
    return args.messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=HERE / ".out" / "stream")
    parser.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        build_models.build(repo)
        for other in ("wine", "diabetes"):
            shutil.rmtree(repo / other)
        redis_server = RedisServer(Path(tmp) / "redis")
        redis_server.start()
        subprocess.run(["taskset", "-pc", "1", str(redis_server.process.pid)], check=False, capture_output=True)  # type: ignore[union-attr]
        server = ServerProcess(repo, "--stream", redis_server.url, log_dir=Path(tmp))
        server.command = pinned(0, server.command)
        rows: list[dict[str, float]] = []
        try:
            with server:
                client = redis.Redis.from_url(redis_server.url)
                stream_round(client, argparse.Namespace(**{**vars(args), "messages": 2000}), -1)  # warm-up
                for round_ in range(args.rounds):
                    order = ["http", "stream"] if round_ % 2 == 0 else ["stream", "http"]
                    row: dict[str, float] = {}
                    for path in order:
                        row[path] = (
                            http_round(server, args, args.out, round_)
                            if path == "http"
                            else stream_round(client, args, round_)
                        )
                    rows.append(row)
                    print(json.dumps({"round": round_, **{k: round(v, 1) for k, v in row.items()}}), flush=True)
        finally:
            redis_server.__exit__()
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    http = statistics.median(r["http"] for r in rows)
    stream = statistics.median(r["stream"] for r in rows)
    ratios = statistics.median(r["stream"] / r["http"] for r in rows)
    command = (
        f"python bench/stream_throughput.py --rounds {args.rounds} --messages {args.messages} "
        f"--concurrency {args.concurrency} --duration {args.duration:g}"
    )
    times = "\u00d7"  # the multiplication sign
    report = f"""## Redis Streams against HTTP

`{command}`:
one server on core 0 serving `breast_cancer` (v2, gradient-boosted trees) over REST and from its Redis stream;
Redis, the producer and the HTTP load generator on core 1. One row per request/message, V2 JSON bodies.
Medians of {args.rounds} rounds, alternating which path goes first.

| path | throughput | vs HTTP |
|---|---|---|
| HTTP, closed loop, {args.concurrency} clients (`turnout bench`) | {http:,.0f} req/s | 1.00{times} |
| Redis Streams, {args.messages:,} messages queued, first XADD to last result | {stream:,.0f} msg/s \
| {ratios:.2f}{times} |

Per round (req/s, msg/s): {", ".join(f"{r['http']:,.0f} / {r['stream']:,.0f}" for r in rows)}.
"""
    sections.put(args.report, "stream-throughput", report)
    print(report)


if __name__ == "__main__":
    main()
