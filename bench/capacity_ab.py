"""Closed-loop capacity of this tree against an earlier commit, in one run.

    python bench/capacity_ab.py --base f2ff761 [--rounds 5] [--protocols rest,grpc] [--duration 8]
                                 [--report BENCHMARKS.md]

The earlier commit is checked out (``git worktree``) into a temporary
directory and its server runs from there (``PYTHONPATH``) in this virtual
environment, so both servers get the same dependencies and models. Rounds
alternate the two, each a fresh server pinned to core 0 serving the example
models, driven by ``turnout bench`` (this tree's) from core 1: breast_cancer,
64 clients, over REST (JSON) and gRPC. Reported: the median throughput and
p99 of the rounds, and this tree's throughput as a share of the base's.
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import build_models  # noqa: E402
import sections  # noqa: E402
from open_loop import cpu_seconds  # noqa: E402

from tests.support import ServerProcess  # noqa: E402

MODEL = "breast_cancer"
CLIENTS = 64
PROTOCOLS = ("rest", "grpc")
WARMUP = 2.0


def pinned(argv: list[str], core: int) -> list[str]:
    return ["taskset", "-c", str(core), *argv] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else argv


def measure(repo: Path, source: Path, work: Path, protocol: str, duration: float) -> dict[str, float]:
    """One fresh server from ``source`` (a tree's src directory), one closed loop."""
    server = ServerProcess(repo, "--model-control", "explicit", log_dir=work)
    server.command = pinned(["env", f"PYTHONPATH={source}", *server.command], 0)
    out = work / f"{protocol}-{server.http_port}.json"
    target = ["--url", server.url] if protocol == "rest" else ["--grpc-url", server.grpc_address, "--protocol", "grpc"]
    argv = [str(BIN / "turnout"), "bench", "--model", MODEL, *target, "--concurrency", str(CLIENTS),
            "--duration", str(duration), "--warmup", str(WARMUP), "--quiet", "--json", str(out)]  # fmt: skip
    with server:
        assert server.process is not None
        before = cpu_seconds(server.process.pid)
        subprocess.run(pinned(argv, 1), check=True, capture_output=True)
        cpu = cpu_seconds(server.process.pid) - before
    point = json.loads(out.read_text())["results"][0]
    errors = sum(point["errors"].values())
    # the server's CPU over warm-up and measurement, per request measured: a cost less
    # sensitive to this machine's noise than the throughput
    requests = point["throughput"] * duration
    return {"throughput": point["throughput"], "p99": point["latency_ms"]["p99"], "errors": errors,
            "cpu_us": cpu / requests * 1e6 * duration / (duration + WARMUP)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the earlier commit")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="rest,grpc (default both)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per point (default 8)")
    parser.add_argument("--report", type=Path, default=None, help="write the table as a section of this file")
    args = parser.parse_args()
    protocols = [p for p in args.protocols.split(",") if p]
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        base_tree = work / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.base], cwd=ROOT, check=True)
        try:
            repo = work / "models"
            build_models.build(repo)
            trees = {args.base: base_tree / "src", "this tree": ROOT / "src"}
            points: dict[tuple[str, str], list[dict[str, float]]] = {}
            for _ in range(args.rounds):
                for protocol in protocols:
                    for name, source in trees.items():
                        point = measure(repo, source, work, protocol, args.duration)
                        print(name, protocol, point, flush=True)
                        points.setdefault((name, protocol), []).append(point)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)
    lines = [
        "## Capacity against an earlier commit",
        "",
        f"{MODEL}, {CLIENTS} clients in a closed loop (`turnout bench`), server on core 0, client on core 1, "
        f"{args.rounds} alternating rounds of {args.duration:g} s, medians. "
        f"`.venv/bin/python bench/capacity_ab.py --base {args.base} --report BENCHMARKS.md`.",
        "",
        f"| protocol | {args.base} req/s | this tree req/s | ratio | {args.base} p99 ms | this tree p99 ms "
        f"| {args.base} server µs/request | this tree server µs/request | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for protocol in protocols:
        base = points[(args.base, protocol)]
        this = points[("this tree", protocol)]
        b, t = (statistics.median(p["throughput"] for p in side) for side in (base, this))
        bp, tp = (statistics.median(p["p99"] for p in side) for side in (base, this))
        bc, tc = (statistics.median(p["cpu_us"] for p in side) for side in (base, this))
        errors = sum(p["errors"] for p in base + this)
        lines.append(f"| {protocol} | {b:,.0f} | {t:,.0f} | {t / b:.3f} | {bp:.1f} | {tp:.1f} | {bc:.0f} | {tc:.0f} "
                     f"| {errors:.0f} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.report is not None:
        sections.put(args.report, "capacity-ab", text)


if __name__ == "__main__":
    main()
