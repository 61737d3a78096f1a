"""What a refusal at the door costs the server's core, against what an answer costs.

    python bench/door_cost.py [--duration 8] [--connections 64,1000] [--report BENCHMARKS.md]

Shedding holds only while a refusal costs far less than an answer: at N times
capacity, N - 1 of every N requests are refused, so refusing alone takes
(N - 1) x (refusal cost / answer cost) of the core. This measures both, with
``wrk`` (a closed loop in C, so the load generator is never the limit) pinned
to core 1 and everything that serves pinned to core 0, breast_cancer over
REST (JSON, one row), for each number of keep-alive connections:

- *answer*: ``turnout serve`` answering every request, 64 connections (capacity);
- *refusal*: the same server with a gate that sheds every inference request
  (503 + Retry-After from the door, the path an overloaded server takes);
- *floor*: a uvloop protocol that writes a canned 503 for every read, parsing
  nothing: what one read and one write cost on this kernel, the least any
  door on this core can cost;
- with ``haproxy`` on the path, the shipped deploy/haproxy/turnout.cfg:
  *HAProxy refusal* (an established proxy in C answering 503 + Retry-After for
  every inference request, the replacement issue 15 asks to measure) and
  *answer via HAProxy* (HAProxy forwarding to turnout, both on core 0: what
  putting it in front costs capacity).

Reported per row: requests answered a second, the share refused, how busy
the server's core was, its CPU per request (all processes on core 0, from
/proc), and that as a share of an answer's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import build_models  # noqa: E402
import sections  # noqa: E402
from open_loop import cpu_seconds  # noqa: E402

from tests.support import ServerProcess, free_port  # noqa: E402
from turnout.bench import payloads  # noqa: E402

MODEL = "breast_cancer"
SERVER_CORE, CLIENT_CORE = 0, 1
WARMUP = 2.0
ANSWER_CONNECTIONS = 64

# turnout serve with a gate that refuses every inference request (the door's
# shedding path on every request); everything else is the real server.
SHED_ALL = """
import sys
from turnout.overload import admission
def enter(self, path):
    if admission.sheddable(path):
        self._shed += 1
        return None
    return admission.FREE
admission.AdmissionGate.enter = enter
from turnout.cli.main import main
sys.exit(main(sys.argv[1:]))
"""

# The floor: one read, one canned answer, no parsing.
FLOOR = """
import asyncio, sys, uvloop
BODY = b'{"error":"the server is at capacity; retry later"}'
ANSWER = (b"HTTP/1.1 503 Service Unavailable\\r\\ncontent-type: application/json\\r\\ncontent-length: %d\\r\\n"
          b"retry-after: 1\\r\\n\\r\\n" % len(BODY)) + BODY
class Floor(asyncio.Protocol):
    def connection_made(self, transport): self.transport = transport
    def data_received(self, data): self.transport.write(ANSWER)
async def main():
    server = await asyncio.get_running_loop().create_server(Floor, "127.0.0.1", int(sys.argv[1]), backlog=2048)
    await server.serve_forever()
uvloop.run(main())
"""

# The shipped door: deploy/haproxy/turnout.cfg, configured by its environment.
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy" / "turnout.cfg"


def pinned(argv: list[str], core: int) -> list[str]:
    return ["taskset", "-c", str(core), *argv] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else argv


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # polling a child process's port: there is no event to wait on
    raise RuntimeError(f"nothing listens on port {port}")


def wrk(url: str, script: Path, connections: int, duration: float) -> tuple[float, float]:
    """Requests answered a second, and the share that was not 2xx."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "-s", str(script), url]
    out = subprocess.run(pinned(argv, CLIENT_CORE), capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    rate = float(next(line.split()[1] for line in lines if line.startswith("Requests/sec")))
    total = int(next(line.split()[0] for line in lines if " requests in " in line))
    refused = next((int(line.split()[-1]) for line in lines if "Non-2xx" in line), 0)
    return rate, refused / max(total, 1)


def measure(url: str, pids: list[int], script: Path, connections: int, duration: float) -> dict[str, float]:
    wrk(url, script, connections, WARMUP)
    before = sum(cpu_seconds(pid) for pid in pids)
    started = time.monotonic()
    rate, refused = wrk(url, script, connections, duration)
    elapsed = time.monotonic() - started
    cpu = sum(cpu_seconds(pid) for pid in pids) - before
    return {"rate": rate, "refused_share": refused, "us": cpu / (rate * elapsed) * 1e6, "core": cpu / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per row (default 8)")
    parser.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=[64, 1000])
    parser.add_argument("--report", type=Path, default=None, help="write the table as a section of this file")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (apt-get install -y wrk)")
    work = Path(tempfile.mkdtemp(prefix="turnout-door-"))
    repo = work / "models"
    build_models.build(repo)
    haproxy = shutil.which("haproxy") is not None
    rows: list[tuple[str, int, dict[str, float]]] = []
    # Answers at capacity: ANSWER_CONNECTIONS clients in a closed loop (more
    # would only queue, and the gate would shed them).
    answering = ServerProcess(repo, "--model-control", "explicit", log_dir=work)
    answering.command = pinned(answering.command, SERVER_CORE)
    with answering.start() as server:
        script = post_script(server, work)
        assert server.process is not None
        url = f"{server.url}/v2/models/{MODEL}/infer"
        rows.append(("answer", ANSWER_CONNECTIONS, measure(url, [server.process.pid], script, ANSWER_CONNECTIONS,
                                                           args.duration)))  # fmt: skip
        if haproxy:
            with HaproxyDoor(server.http_port) as door:
                front = f"http://127.0.0.1:{door.port}/v2/models/{MODEL}/infer"
                rows.append(("answer via HAProxy", ANSWER_CONNECTIONS,
                             measure(front, [server.process.pid, door.process.pid], script, ANSWER_CONNECTIONS,
                                     args.duration)))  # fmt: skip
    for connections in args.connections:
        shed = ServerProcess(repo, "--model-control", "explicit", log_dir=work)
        shed.command = pinned([shed.command[0], "-c", SHED_ALL, *shed.command[3:]], SERVER_CORE)
        with shed.start() as server:
            assert server.process is not None
            url = f"{server.url}/v2/models/{MODEL}/infer"
            rows.append(("refusal (turnout's door)", connections,
                         measure(url, [server.process.pid], script, connections, args.duration)))  # fmt: skip
        port = free_port()
        floor = subprocess.Popen(pinned([sys.executable, "-c", FLOOR, str(port)], SERVER_CORE))
        try:
            wait_port(port)
            url = f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer"
            rows.append(("floor (read, canned 503)", connections,
                         measure(url, [floor.pid], script, connections, args.duration)))  # fmt: skip
        finally:
            floor.terminate()
            floor.wait()
        if haproxy:
            with HaproxyDoor(free_port(), queue=0) as door:  # no turnout behind: every inference refused
                url = f"http://127.0.0.1:{door.port}/v2/models/{MODEL}/infer"
                rows.append(("refusal (HAProxy)", connections,
                             measure(url, [door.process.pid], script, connections, args.duration)))  # fmt: skip
        print(connections, rows[-3:], flush=True)
    report = table(rows, args, haproxy)
    print(report)
    if args.report is not None:
        sections.put(args.report, "door-cost", report)


def post_script(server: ServerProcess, work: Path) -> Path:
    metadata = httpx.get(f"{server.url}/v2/models/{MODEL}", timeout=10).json()
    payload = payloads.rest_json(payloads.tensors_from_metadata(metadata))
    body = work / "body.json"
    body.write_bytes(payload.body)
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body}", "rb"); wrk.body = f:read("*a"); f:close()\n'
    )
    return script


class HaproxyDoor:
    """HAProxy with the shipped configuration in front of turnout's REST port,
    pinned to the server's core. ``queue=0`` refuses every inference request
    (the configuration refuses once its queue holds ``queue``)."""

    def __init__(self, upstream: int, queue: int = 64) -> None:
        self.port = free_port()
        self.env = {**os.environ, "TURNOUT_DOOR": f"127.0.0.1:{self.port}", "TURNOUT_HTTP": f"127.0.0.1:{upstream}",
                    "TURNOUT_QUEUE": str(queue)}  # fmt: skip

    def __enter__(self) -> HaproxyDoor:
        argv = pinned(["haproxy", "-f", str(HAPROXY_CONFIG), "-db"], SERVER_CORE)
        self.process = subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait()


def table(rows: list[tuple[str, int, dict[str, float]]], args: argparse.Namespace, haproxy: bool) -> str:
    answer = next(r["us"] for name, _, r in rows if name == "answer")
    lines = [
        "## Door cost",
        "",
        f"What a refusal costs the server's core against an answer: {MODEL} over REST (JSON, one row), `wrk` "
        f"(one thread, closed loop) on core {CLIENT_CORE}, everything serving on core {SERVER_CORE}, "
        f"{args.duration:g} s after {WARMUP:g} s of warm-up; CPU per request from /proc (all processes on the "
        "server's core). *Refusal (turnout's door)*: the real server with a gate that sheds every inference "
        "request; *floor*: a uvloop protocol writing a canned 503 per read, no parsing"
        + (
            "; HAProxy 2.6 with deploy/haproxy/turnout.cfg (one thread), refusing every inference request or "
            "forwarding to turnout."
            if haproxy
            else "."
        )
        + f" `.venv/bin/python bench/door_cost.py --duration {args.duration:g} "
        f"--connections {','.join(map(str, args.connections))} --report BENCHMARKS.md`.",
        "",
        "| path | connections | requests/s | refused | server core busy | µs of the server core per request "
        "| share of an answer |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, connections, r in rows:
        share = r["us"] / answer
        lines.append(
            f"| {name} | {connections} | {r['rate']:,.0f} | {r['refused_share']:.0%} | {r['core']:.0%} | "
            f"{r['us']:.1f} | {share:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
