"""What a turnout gateway costs in front of a replica (issue 21).

    .venv/bin/python bench/gateway.py [--rounds 3] [--duration 8] [--placement apart|shared] [--json OUT.json]

Builds examples/build_models.py's repository in a temporary directory and serves
its `diabetes` (the tabular example) from one replica; a gateway whose only
model is `diabetes` as a remote set of that replica (remote.toml) stands in
front. Two cores, three processes, so where each runs is a choice, and it
moves the figure (the report names it):

- ``apart`` (the default): the gateway alone on core 0, as in a deployment
  where it has its own machine or pod; the replica and `turnout bench`
  (REST, JSON, closed loop) share core 1.
- ``shared``: the gateway and the replica on core 0, `turnout bench` on core
  1. Each switch between the two costs both, the gateway most (its share of
  a request is the smaller).

Each round:

1. c=64 through the gateway for --duration seconds: the CPU time each process
   spent (utime + stime from /proc/PID/stat) over the requests each answered
   (its own turnout_requests_total). The figure is gateway / replica
   (bar <= 0.50).
2. c=1 to the replica directly, then c=1 through the gateway: the p50s'
   difference is what the gateway adds (bar <= 0.3 ms).

The report gives each round and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
TICK = os.sysconf("SC_CLK_TCK")


def serve(repo: Path, port: int, state: Path, log: Path, core: str) -> subprocess.Popen[bytes]:
    command = ["taskset", "-c", core, PY, "-m", "turnout", "serve", str(repo), "--http-port", str(port),
               "--grpc-port", str(port + 1), "--admin-port", str(port + 2), "--state-dir", str(state),
               "--no-inference-auth"]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(port: int, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.2)  # a child's port: nothing to wait on but polling
    raise SystemExit(f"no server on {port}:\n{log.read_text()[-2000:]}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def answered(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("turnout_requests_total{") and 'status="success"' in line)  # fmt: skip


def bench(port: int, concurrency: int, duration: float, out: Path) -> dict[str, Any]:
    subprocess.run(
        ["taskset", "-c", "1", PY, "-m", "turnout", "bench", "--model", "diabetes", "--url",
         f"http://127.0.0.1:{port}", "--protocol", "rest", "--concurrency", str(concurrency), "--duration",
         str(duration), "--warmup", "1", "--quiet", "--json", str(out)],
        check=True,
    )  # fmt: skip
    result = json.loads(out.read_text())
    point: dict[str, Any] = result["results"][0] if "results" in result else result
    return point


def one_round(replica: subprocess.Popen[bytes], gateway: subprocess.Popen[bytes], duration: float,
              work: Path) -> dict[str, float]:  # fmt: skip
    before = cpu_seconds(replica.pid), cpu_seconds(gateway.pid), answered(9300), answered(9400)
    loaded = bench(9400, 64, duration, work / "c64.json")
    after = cpu_seconds(replica.pid), cpu_seconds(gateway.pid), answered(9300), answered(9400)
    replica_us = (after[0] - before[0]) / (after[2] - before[2]) * 1e6
    gateway_us = (after[1] - before[1]) / (after[3] - before[3]) * 1e6
    direct = bench(9300, 1, duration, work / "direct.json")["latency_ms"]["p50"]
    through = bench(9400, 1, duration, work / "through.json")["latency_ms"]["p50"]
    return {
        "c64_req_s": loaded["throughput"],
        "replica_cpu_us": replica_us,
        "gateway_cpu_us": gateway_us,
        "cpu_ratio": gateway_us / replica_us,
        "p50_direct_ms": direct,
        "p50_gateway_ms": through,
        "added_p50_ms": through - direct,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--placement", choices=("apart", "shared"), default="apart")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "examples"))
    import build_models

    with tempfile.TemporaryDirectory(prefix="turnout-gateway-") as temp:
        work = Path(temp)
        build_models.build(work / "all", text=False)
        shutil.copytree(work / "all" / "diabetes", work / "replica" / "diabetes")
        remote = work / "gateway" / "diabetes" / "1"
        remote.mkdir(parents=True)
        (work / "gateway" / "diabetes" / "model.toml").write_text('runtime = "remote"\n')
        (remote / "remote.toml").write_text('replicas = ["127.0.0.1:9300"]\n')
        replica = serve(work / "replica", 9300, work / "s1", work / "replica.log",
                        "1" if args.placement == "apart" else "0")  # fmt: skip
        wait_ready(9300, work / "replica.log")
        gateway = serve(work / "gateway", 9400, work / "s2", work / "gateway.log", "0")
        try:
            wait_ready(9400, work / "gateway.log")
            rounds = [one_round(replica, gateway, args.duration, work) for _ in range(args.rounds)]
        finally:
            for process in (gateway, replica):
                process.terminate()
                process.wait(30)
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    for index, figures in enumerate(rounds, 1):
        print(f"round {index}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
    print("median: " + ", ".join(f"{k} {v:.3f}" for k, v in medians.items()))
    print(f"placement {args.placement}: gateway CPU per request / replica's: {medians['cpu_ratio']:.3f} (bar <= 0.50); "
          f"added p50 at c=1: {medians['added_p50_ms']:.3f} ms (bar <= 0.3)")  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"placement": args.placement, "rounds": rounds, "median": medians}, indent=2))


if __name__ == "__main__":
    main()
