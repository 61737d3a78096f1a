"""Overload at the door: open-loop load at multiples of closed-loop capacity.

    python bench/overload.py [--duration 10] [--multiples 1,3,5] [--config NAME=SERVE_ARGS ...]
                             [--haproxy NAME ...] [--report BENCHMARKS.md]

Each configuration is a set of extra ``turnout serve`` arguments (default: one
configuration, the server as it is). A server pinned to core 0 serves the
example models; this script and its load run on core 1. A configuration named
with ``--haproxy`` is loaded through HAProxy (deploy/haproxy/turnout.cfg, its
door: a fixed in-flight limit and queue, 503 + Retry-After beyond) running on
the server's core too. For each configuration:

1. capacity: ``turnout bench`` on breast_cancer over REST in a closed loop, 64
   clients (throughput, p50, p99);
2. for each multiple m of the *first* configuration's capacity (so every
   configuration gets the same offered rates), a fresh server and an open loop
   at m x capacity for ``--duration`` s after a warm-up. Requests are due at a
   fixed rate whatever the server does, each sent on a free keep-alive
   connection, a new one when none is free, up to ``--max-connections`` (1024,
   a common open-file limit); beyond that a due request waits for the first
   free connection. A request unanswered 5 s after it was due, sent or not, is
   a client timeout (its connection is closed). turnout bench cannot be used
   here: it has no client timeout and folds 503 and 429 into errors without
   their Retry-After.

Reported per point: offered rate; 200s per second; shed answers (503/429) and
how many lacked Retry-After; other statuses and connection errors; client
timeouts; p50/p99 of the 200s and of the shed answers, timed from when each
request was due (no coordinated omission); the server's RSS growth (peak
during the load minus just before); its CPU (turnout's share of its core while
measuring; HAProxy's is not counted); the client's CPU (near 100%, the client
is the limit and the point says little about the server); and, 5 s after the
load stops, a readiness probe and one inference on a new connection: "yes (N
ms)" when both answer 200 within 1 s. The client, in Python, sends up to about
30,000 requests a second from its core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import build_models  # noqa: E402  (examples/build_models.py)
import door_cost  # noqa: E402
import sections  # noqa: E402
from open_loop import CLIENT_TIMEOUT, Tally, open_loop, rss_bytes  # noqa: E402

from tests.support import ServerProcess  # noqa: E402
from turnout.bench import payloads  # noqa: E402

MODEL = "breast_cancer"
HEALTHY_AFTER = 5.0  # seconds after the load stops when the server must be itself again
CLOSED_CLIENTS = 64
SERVER_CORE, CLIENT_CORE = 0, 1


# ---- the measurements ----


def start_server(repo: Path, serve_args: list[str], work: Path) -> ServerProcess:
    server = ServerProcess(repo, "--model-control", "explicit", *serve_args, log_dir=work)
    server.command = door_cost.pinned(server.command, SERVER_CORE)
    return server.start()


def front(server: ServerProcess, behind_haproxy: bool) -> AbstractContextManager[door_cost.HaproxyDoor | None]:
    """The door the load goes through: HAProxy on the server's core, or none."""
    return door_cost.HaproxyDoor(server.http_port) if behind_haproxy else nullcontext()


def capacity(
    server: ServerProcess, work: Path, duration: float, door: door_cost.HaproxyDoor | None
) -> dict[str, float]:
    out = work / f"capacity-{server.http_port}.json"
    url = f"http://127.0.0.1:{door.port}" if door is not None else server.url
    argv = [str(BIN / "turnout"), "bench", "--model", MODEL, "--url", url, "--quiet", "--json", str(out),
            "--concurrency", str(CLOSED_CLIENTS), "--duration", str(duration), "--warmup", "2"]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True)
    point = json.loads(out.read_text())["results"][0]
    return {
        "throughput": point["throughput"],
        "p50": point["latency_ms"]["p50"],
        "p99": point["latency_ms"]["p99"],
        "errors": sum(point["errors"].values()),
    }


def overload(
    server: ServerProcess, rate: float, args: argparse.Namespace, door: door_cost.HaproxyDoor | None
) -> dict[str, object]:
    infer = infer_request(server)
    assert server.process is not None
    pid = server.process.pid
    before = rss_bytes(pid)
    tally = Tally()
    run = _event_loop_runner()
    port = door.port if door is not None else server.http_port
    stopped, peak, server_cpu, client_cpu = run(
        open_loop("127.0.0.1", port, infer, rate, args.warmup, args.duration, args, pid, tally)
    )
    time.sleep(max(0.0, stopped + HEALTHY_AFTER - time.monotonic()))
    healthy = health(server)
    shed = tally.statuses[503] + tally.statuses[429]
    return {
        "offered": tally.due / args.duration,
        "ok_per_s": tally.statuses[200] / args.duration,
        "shed": shed,
        "shed_without_retry_after": tally.shed_without_retry_after,
        "other": {s: n for s, n in tally.statuses.items() if s not in (200, 429, 503)},
        "timeouts": tally.timeouts,
        "connection_errors": tally.connection_errors,
        "ok_p50": _percentile(tally.ok_ms, 50),
        "ok_p99": _percentile(tally.ok_ms, 99),
        "shed_p50": _percentile(tally.shed_ms, 50),
        "shed_p99": _percentile(tally.shed_ms, 99),
        "rss_growth_mb": (peak - before) / 2**20,
        "server_cpu": server_cpu,
        "client_cpu": client_cpu,
        "healthy": healthy,
    }


def infer_request(server: ServerProcess) -> bytes:
    metadata = httpx.get(f"{server.url}/v2/models/{MODEL}", timeout=10).json()
    payload = payloads.rest_json(payloads.tensors_from_metadata(metadata))
    head = [f"POST /v2/models/{MODEL}/infer HTTP/1.1", f"Host: 127.0.0.1:{server.http_port}",
            f"Content-Length: {len(payload.body)}", *(f"{k}: {v}" for k, v in payload.headers.items())]  # fmt: skip
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload.body


def health(server: ServerProcess) -> str:
    infer = infer_request_body(server)
    started = time.monotonic()
    try:
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
            ready = client.get("/v2/health/ready").status_code
            answered = client.post(f"/v2/models/{MODEL}/infer", content=infer).status_code
    except httpx.HTTPError as exc:
        return f"no ({type(exc).__name__})"
    took = (time.monotonic() - started) * 1e3
    if ready == answered == 200 and took < 1000:
        return f"yes ({took:.0f} ms)"
    return f"no (ready {ready}, infer {answered}, {took:.0f} ms)"


def infer_request_body(server: ServerProcess) -> bytes:
    return infer_request(server).split(b"\r\n\r\n", 1)[1]


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _event_loop_runner():  # type: ignore[no-untyped-def]
    try:
        import uvloop

        return uvloop.run
    except ImportError:  # pragma: no cover
        return asyncio.run


def _pinning() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) > CLIENT_CORE


# ---- the report ----


def table(configs: list[str], results: dict[str, dict[str, object]], capacities: dict[str, dict[str, float]],
          args: argparse.Namespace) -> str:  # fmt: skip
    lines = [
        "## Overload",
        "",
        f"{MODEL} over REST (JSON, one row), server on core {SERVER_CORE}, load from core {CLIENT_CORE}. Capacity: "
        f"`turnout bench`, {CLOSED_CLIENTS} clients in a closed loop. Then, on a fresh server each, an open loop at "
        f"multiples of the first configuration's capacity for {args.duration:g} s (after {args.warmup:g} s of "
        f"warm-up), each request given {CLIENT_TIMEOUT:g} s; latencies from when each request was due. "
        f"`make bench-overload` (`.venv/bin/python bench/overload.py {' '.join(map(shlex.quote, sys.argv[1:]))}`).",
        "",
        "| configuration | capacity req/s | p50 ms | p99 ms | closed-loop errors |",
        "|---|---|---|---|---|",
    ]
    for name in configs:
        c = capacities[name]
        lines.append(f"| {name} | {c['throughput']:,.0f} | {c['p50']:.1f} | {c['p99']:.1f} | {c['errors']:.0f} |")
    lines += [
        "",
        "| configuration | load | offered/s | 200/s | shed (503/429) | no Retry-After | timeouts | other "
        "| 200 p50 ms | 200 p99 ms | shed p50 ms | shed p99 ms | RSS growth MB | server CPU | client CPU "
        "| healthy 5 s after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in configs:
        for multiple in args.multiples:
            r = results[f"{name}@{multiple:g}"]
            other = r["other"]
            assert isinstance(other, dict)
            other_text = ", ".join(f"{s}: {n}" for s, n in sorted(other.items()))
            if r["connection_errors"]:
                other_text = ", ".join(filter(None, [other_text, f"connection errors: {r['connection_errors']}"]))
            lines.append(
                f"| {name} | {multiple:g}x | {r['offered']:,.0f} | {r['ok_per_s']:,.0f} | {r['shed']:,} | "
                f"{r['shed_without_retry_after']} | {r['timeouts']:,} | {other_text or '-'} | "
                f"{r['ok_p50']:.1f} | {r['ok_p99']:.1f} | {r['shed_p50']:.1f} | {r['shed_p99']:.1f} | "
                f"{r['rss_growth_mb']:.0f} | {r['server_cpu']:.0%} | {r['client_cpu']:.0%} | {r['healthy']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per point (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring (default 2)")
    parser.add_argument("--capacity-duration", type=float, default=10.0, help="seconds of closed loop (default 10)")
    parser.add_argument("--multiples", type=lambda s: [float(x) for x in s.split(",")], default=[1.0, 3.0, 5.0])
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME=SERVE_ARGS",
        help="a configuration: a name and extra `turnout serve` arguments (repeatable; default: `default=`)",
    )
    parser.add_argument(
        "--haproxy",
        action="append",
        default=[],
        metavar="NAME",
        help="a configuration whose load goes through HAProxy (deploy/haproxy/turnout.cfg) on the server's core",
    )
    parser.add_argument("--capacity", type=float, default=None, help="the rate to multiply (default: measure)")
    parser.add_argument("--max-connections", type=int, default=1024, help="the open-loop client's (default 1024)")
    parser.add_argument("--repo", type=Path, default=None, help="a model repository (default: build the examples)")
    parser.add_argument("--report", type=Path, default=None, help="write the table as a section of this file")
    args = parser.parse_args()
    configs: dict[str, list[str]] = {}
    for text in args.config or ["default="]:
        name, _, serve = text.partition("=")
        configs[name] = shlex.split(serve)
    work = Path(tempfile.mkdtemp(prefix="turnout-overload-"))
    repo = args.repo
    if repo is None:
        repo = work / "models"
        build_models.build(repo)
    if _pinning():
        os.sched_setaffinity(0, {CLIENT_CORE})  # the load generators; the servers get taskset -c 0
    capacities: dict[str, dict[str, float]] = {}
    results: dict[str, dict[str, object]] = {}
    base: float | None = args.capacity
    for name, serve_args in configs.items():
        with start_server(repo, serve_args, work) as server, front(server, name in args.haproxy) as door:
            capacities[name] = capacity(server, work, args.capacity_duration, door)
        print(name, "capacity", capacities[name], flush=True)
        base = base or capacities[name]["throughput"]
        for multiple in args.multiples:
            with start_server(repo, serve_args, work) as server, front(server, name in args.haproxy) as door:
                result = overload(server, base * multiple, args, door)
            results[f"{name}@{multiple:g}"] = result
            print(name, f"{multiple:g}x", result, flush=True)
    report = table(list(configs), results, capacities, args)
    print(report)
    if args.report is not None:
        sections.put(args.report, "overload", report)


if __name__ == "__main__":
    main()
