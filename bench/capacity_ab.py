"""Closed-loop capacity of this tree against an earlier commit, in one run.

    python bench/capacity_ab.py --base f2ff761 [--rounds 5] [--protocols rest,grpc] [--duration 8]
                                 [--together-client turnout|native] [--report BENCHMARKS.md]

The earlier commit is checked out (``git worktree``) into a temporary
directory and its server runs from there (``PYTHONPATH``) in this virtual
environment, so both servers get the same dependencies and models. Rounds
alternate the two, each a fresh server pinned to core 0 serving the example
models, driven by ``turnout bench`` (this tree's) from core 1: breast_cancer,
64 clients, over REST (JSON) and gRPC. Reported: the median throughput and
p99 of the rounds, and this tree's throughput as a share of the base's.

Closed-loop capacity on a shared VM moves by 10-20% between runs minutes
apart, more than the differences worth knowing. So each round also runs the
two servers *together*, both on core 0, each driven by its own closed loop
(32 clients) from core 1: the core is shared, so the ratio of their
throughputs is the inverse ratio of their CPU per request, and whatever
slows the machine slows both at once. Its median over the rounds is the
ratio to trust (an A/A run of one tree against itself: 0.99-1.01). With
``--together-client native`` those loops are clients in C, ``wrk`` for REST
and ``h2load`` (nghttp2-client) for gRPC: two Python clients on one core can
be the limit themselves, which blurs the ratio (gRPC: 0.96 with them, 0.95
with h2load, the same day).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx

from turnout.bench import payloads

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import build_models  # noqa: E402
import door_cost  # noqa: E402
import sections  # noqa: E402
from door_cost import pinned  # noqa: E402
from open_loop import cpu_seconds  # noqa: E402

from tests.support import ServerProcess  # noqa: E402

MODEL = "breast_cancer"
CLIENTS = 64
PROTOCOLS = ("rest", "grpc")
WARMUP = 2.0


def load_command(server: ServerProcess, protocol: str, clients: int, duration: float, out: Path) -> list[str]:
    """``turnout bench`` in a closed loop of ``clients`` against ``server``, results to ``out``, pinned to core 1."""
    target = ["--url", server.url] if protocol == "rest" else ["--grpc-url", server.grpc_address, "--protocol", "grpc"]
    argv = [str(BIN / "turnout"), "bench", "--model", MODEL, *target, "--concurrency", str(clients),
            "--duration", str(duration), "--warmup", str(WARMUP), "--quiet", "--json", str(out)]  # fmt: skip
    return pinned(argv, 1)


def measure(repo: Path, source: Path, work: Path, protocol: str, duration: float) -> dict[str, float]:
    """One fresh server from ``source`` (a tree's src directory), one closed loop."""
    server = ServerProcess(repo, "--model-control", "explicit", log_dir=work)
    server.command = pinned(["env", f"PYTHONPATH={source}", *server.command], 0)
    out = work / f"{protocol}-{server.http_port}.json"
    argv = load_command(server, protocol, CLIENTS, duration, out)
    with server:
        assert server.process is not None
        before = cpu_seconds(server.process.pid)
        subprocess.run(argv, check=True, capture_output=True)
        cpu = cpu_seconds(server.process.pid) - before
    point = json.loads(out.read_text())["results"][0]
    errors = sum(point["errors"].values())
    # the server's CPU over warm-up and measurement, per request measured: a cost less
    # sensitive to this machine's noise than the throughput
    requests = point["throughput"] * duration
    return {"throughput": point["throughput"], "p99": point["latency_ms"]["p99"], "errors": errors,
            "cpu_us": cpu / requests * 1e6 * duration / (duration + WARMUP)}  # fmt: skip


def together(
    repo: Path, trees: dict[str, Path], work: Path, protocol: str, duration: float, client: str
) -> dict[str, float]:
    """Both trees' servers on core 0 at once, each with its own closed loop from core 1: throughputs."""
    servers = {}
    for name, source in trees.items():
        server = ServerProcess(repo, "--model-control", "explicit", log_dir=work)
        server.command = pinned(["env", f"PYTHONPATH={source}", *server.command], 0)
        servers[name] = server
    loads = {}
    try:
        for server in servers.values():
            server.start()
        if client == "native":
            return (together_wrk if protocol == "rest" else together_h2load)(servers, work, duration)
        for name, server in servers.items():
            out = work / f"together-{protocol}-{server.http_port}.json"
            argv = load_command(server, protocol, CLIENTS // 2, duration, out)
            loads[name] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL), out)
        for load, _ in loads.values():
            load.wait()
    finally:
        for server in servers.values():
            server.stop()
    return {name: json.loads(out.read_text())["results"][0]["throughput"] for name, (_, out) in loads.items()}


def together_wrk(servers: dict[str, ServerProcess], work: Path, duration: float) -> dict[str, float]:
    """``together`` with wrk as each server's closed loop: a client in C, so the
    client core is never what limits either server."""
    script = door_cost.post_script(next(iter(servers.values())), work)
    urls = {name: f"{server.url}/v2/models/{MODEL}/infer" for name, server in servers.items()}

    def command(url: str, seconds: float) -> list[str]:
        return ["wrk", "-t1", f"-c{CLIENTS // 2}", f"-d{seconds:g}s", "-s", str(script), url]

    def rate(out: str) -> float:
        return float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))

    return native_duel(urls, command, rate, duration)


def together_h2load(servers: dict[str, ServerProcess], work: Path, duration: float) -> dict[str, float]:
    """``together`` over gRPC with h2load (nghttp2's load generator, in C) as each
    server's closed loop: ModelInfer calls, 4 connections of 8 streams each."""
    server = next(iter(servers.values()))
    metadata = httpx.get(f"{server.url}/v2/models/{MODEL}", timeout=10).json()
    message = payloads.grpc_message(MODEL, "", payloads.tensors_from_metadata(metadata))
    body = work / "call.bin"
    body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)  # gRPC framing: not compressed, length
    urls = {name: f"http://{s.grpc_address}/inference.GRPCInferenceService/ModelInfer" for name, s in servers.items()}

    def command(url: str, seconds: float) -> list[str]:
        return ["h2load", "-c4", f"-m{CLIENTS // 2 // 4}", "-d", str(body), "-H", "content-type: application/grpc",
                "-H", "te: trailers", f"-D{seconds:g}", url]  # fmt: skip

    def rate(out: str) -> float:
        # "finished in 8.00s, 2602.12 req/s, ..."; h2load sees HTTP statuses only, and a failed call
        # is a 200 with its gRPC status in a trailers-only answer: answers must carry messages
        lines = out.splitlines()
        done = int(next(line.split()[1] for line in lines if line.startswith("requests:")))
        data = int(next(line for line in lines if line.startswith("traffic:")).rsplit("(", 1)[1].split(")")[0])
        if data < done * 20:
            raise RuntimeError(f"h2load: {data} bytes of messages for {done} calls: calls failed\n{out}")
        return float(next(line.split()[3] for line in lines if line.startswith("finished in")))

    return native_duel(urls, command, rate, duration)


def native_duel(
    urls: dict[str, str], command: Callable[[str, float], list[str]], rate: Callable[[str], float], duration: float
) -> dict[str, float]:
    """Both trees' closed loops at once from core 1, after a warm-up of each:
    ``command(url, seconds)`` runs a client in C, ``rate(its output)`` reads its calls per second."""
    for url in urls.values():
        subprocess.run(pinned(command(url, WARMUP), 1), check=True, capture_output=True)
    loads = {
        name: subprocess.Popen(pinned(command(url, duration), 1), stdout=subprocess.PIPE, text=True)
        for name, url in urls.items()
    }
    return {name: rate(load.communicate()[0]) for name, load in loads.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the earlier commit")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="rest,grpc (default both)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per point (default 8)")
    parser.add_argument(
        "--together-client",
        choices=("turnout", "native"),
        default="turnout",
        help="the closed loops of the together runs: turnout bench, or clients in C (wrk for REST, h2load for gRPC)",
    )
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
            ratios: dict[str, list[float]] = {}
            for _ in range(args.rounds):
                for protocol in protocols:
                    for name, source in trees.items():
                        point = measure(repo, source, work, protocol, args.duration)
                        print(name, protocol, point, flush=True)
                        points.setdefault((name, protocol), []).append(point)
                    shared = together(repo, trees, work, protocol, args.duration, args.together_client)
                    print("together", protocol, shared, flush=True)
                    ratios.setdefault(protocol, []).append(shared["this tree"] / shared[args.base])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)
    lines = [
        "## Capacity against an earlier commit",
        "",
        f"{MODEL}, {CLIENTS} clients in a closed loop (`turnout bench`), server on core 0, client on core 1, "
        f"{args.rounds} alternating rounds of {args.duration:g} s, medians; each round also runs both servers "
        f"together on core 0, 32 clients each ({together_client(args)}; the ratio to trust: the machine's noise "
        f"hits both at once). `.venv/bin/python bench/capacity_ab.py {' '.join(map(shlex.quote, sys.argv[1:]))}`.",
        "",
        f"| protocol | {args.base} req/s | this tree req/s | ratio | ratio together (min-max) | {args.base} p99 ms "
        f"| this tree p99 ms | {args.base} server µs/request | this tree server µs/request | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for protocol in protocols:
        base = points[(args.base, protocol)]
        this = points[("this tree", protocol)]
        b, t = (statistics.median(p["throughput"] for p in side) for side in (base, this))
        bp, tp = (statistics.median(p["p99"] for p in side) for side in (base, this))
        bc, tc = (statistics.median(p["cpu_us"] for p in side) for side in (base, this))
        errors = sum(p["errors"] for p in base + this)
        shared = ratios[protocol]
        spread = f"{statistics.median(shared):.3f} ({min(shared):.3f}-{max(shared):.3f})"
        lines.append(f"| {protocol} | {b:,.0f} | {t:,.0f} | {t / b:.3f} | {spread} | {bp:.1f} | {tp:.1f} | {bc:.0f} "
                     f"| {tc:.0f} | {errors:.0f} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.report is not None:
        sections.put(args.report, "capacity-ab", text)


def together_client(args: argparse.Namespace) -> str:
    if args.together_client == "native":
        return "REST loaded by `wrk`, gRPC by `h2load`"
    return "loaded by `turnout bench`"


if __name__ == "__main__":
    main()
