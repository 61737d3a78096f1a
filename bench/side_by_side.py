"""turnout side by side with MLServer, a hand-written FastAPI server and raw ONNX Runtime.

    python bench/side_by_side.py [--quick] [--models mlp_small,mlp_large,minilm]
        [--rounds 3] [--duration 5] [--warmup 1] [--out bench/.out] [--report BENCHMARKS.md]

One run builds the models (cached), sets up the servers' virtual environments
(cached), then, in each round, for each model: measures raw ONNX Runtime
in-process, and starts every server configuration in turn (the order rotates
from round to round), pinned to core 0, waits until it is ready, drives it from
core 1 with ``turnout bench`` over each of its protocols at concurrency 1, 8
and 64, and stops it. The report takes the median of each number over the
rounds and writes BENCHMARKS.md, with the issue's four targets computed from
the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402  (bench/models.py, beside this file)
import report  # noqa: E402
import sections  # noqa: E402

PROJECT_BIN = ROOT / ".venv" / "bin"
VENVS = HERE / ".venvs"
SERVER_CORE = "0"
CLIENT_CORE = "1"
CONCURRENCIES = (1, 8, 64)
RAW_BATCHES = (1, 8, 32, 64, 128)  # 64: the largest batch 64 one-row clients can make
READY_TIMEOUT_S = 180.0
# A closed loop at c=64 on MiniLM (~40 ms a row) needs seconds before its first
# answer: measure it long enough for every point to see a steady state.
MIN_DURATION_S = {"minilm": (10.0, 5.0)}  # model -> (duration, warm-up)
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int


# How to start a server: (repositories, ports) -> (argv, extra environment).
Launch = Callable[[Path, "Ports"], tuple[list[str], dict[str, str]]]


@dataclass(frozen=True)
class ServerConfig:
    """One server under test: how to start it on given ports, and what it speaks."""

    name: str  # as the report names it: "turnout (default)"
    key: str  # file-safe: "turnout_default"
    protocols: tuple[str, ...]
    command: Launch = field(compare=False)
    ready_path: str = "/v2/health/ready"  # answers 200 once the server is ready (LitServe: /health)


def _turnout(layout: str) -> Launch:
    def command(repos: Path, ports: Ports) -> tuple[list[str], dict[str, str]]:
        argv = [str(PROJECT_BIN / "turnout"), "serve", str(repos / layout)]
        argv += ["--http-port", str(ports.http), "--grpc-port", str(ports.grpc), "--log-level", "warning"]
        # as the peers run: no authentication, no admin listener (MLServer and the
        # FastAPI server have neither)
        argv += ["--no-inference-auth", "--no-admin"]
        if layout == "turnout_tuned":
            # a closed loop at capacity waits one batch: for the large MLP (20-70 ms a batch) that is not
            # overload, so the door's target is set above a batch instead of its 20 ms default
            argv += ["--admission-target", "0.2"]
        return argv, {}

    return command


def _mlserver(layout: str) -> Launch:
    def command(repos: Path, ports: Ports) -> tuple[list[str], dict[str, str]]:
        env = {
            "PYTHONPATH": str(HERE / "servers"),  # for mlserver_runtime.OnnxRuntimeModel
            "MLSERVER_HOST": "127.0.0.1",
            "MLSERVER_HTTP_PORT": str(ports.http),
            "MLSERVER_GRPC_PORT": str(ports.grpc),
        }
        return [str(VENVS / "mlserver" / "bin" / "mlserver"), "start", str(repos / layout)], env

    return command


def _fastapi(repos: Path, ports: Ports) -> tuple[list[str], dict[str, str]]:
    argv = [str(VENVS / "fastapi" / "bin" / "python"), str(HERE / "servers" / "fastapi_server.py")]
    argv += [str(repos / "turnout_default"), "--port", str(ports.http)]
    return argv, {}


SERVERS = (
    ServerConfig("turnout (default)", "turnout_default", ("rest", "grpc"), _turnout("turnout_default")),
    ServerConfig("turnout (tuned batching)", "turnout_tuned", ("rest", "grpc"), _turnout("turnout_tuned")),
    ServerConfig("turnout (no batching)", "turnout_nobatch", ("rest", "grpc"), _turnout("turnout_nobatch")),
    ServerConfig("MLServer (batching off)", "mlserver_off", ("rest", "grpc"), _mlserver("mlserver_off")),
    ServerConfig("MLServer (adaptive batching)", "mlserver_batching", ("rest", "grpc"), _mlserver("mlserver_batching")),
    ServerConfig("FastAPI + uvicorn (by hand)", "fastapi", ("rest",), _fastapi),
)


# ---------------------------------------------------------------- servers


def free_ports() -> Ports:
    sockets = [socket.socket() for _ in range(2)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        http, grpc = (s.getsockname()[1] for s in sockets)
        return Ports(http, grpc)
    finally:
        for s in sockets:
            s.close()


@contextmanager
def running(server: ServerConfig, repos: Path, log: Path) -> Iterator[tuple[Ports, int]]:
    """The server started pinned to the server core, ready, with its process
    group's id; stopped (the whole group) on exit."""
    ports = free_ports()
    argv, extra_env = server.command(repos, ports)
    env = {**os.environ, **THREAD_ENV, **extra_env}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, *argv],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stopping it reaches any children
        )
        try:
            _wait_ready(process, ports, "grpc" in server.protocols, log, server.ready_path)
            yield ports, process.pid
        finally:
            _stop(process)


def _wait_ready(process: subprocess.Popen[bytes], ports: Ports, grpc: bool, log: Path, path: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    url = f"http://127.0.0.1:{ports.http}{path}"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200 and (not grpc or _accepts(ports.grpc)):
                    return
        except OSError:
            pass
        time.sleep(0.1)  # a child process's readiness has no event to wait on
    raise RuntimeError(f"server not ready after {READY_TIMEOUT_S:.0f} s; see {log}")


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# ---------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Plan:
    models: tuple[str, ...]
    servers: tuple[ServerConfig, ...]
    rounds: int
    duration: float
    warmup: float
    raw_duration: float
    out: Path

    def durations(self, model: str) -> tuple[float, float]:
        """Seconds measured and seconds of warm-up for each point on this model."""
        duration, warmup = MIN_DURATION_S.get(model, (0.0, 0.0))
        return max(self.duration, duration), max(self.warmup, warmup)

    @property
    def repos(self) -> Path:
        return self.out / "repos"

    @property
    def results(self) -> Path:
        return self.out / "results"


def bench_command(
    plan: Plan,
    model: str,
    protocol: str,
    ports: Ports,
    json_out: Path,
    input_file: Path,
    concurrencies: Sequence[int] = CONCURRENCIES,
) -> list[str]:
    argv = ["taskset", "-c", CLIENT_CORE, str(PROJECT_BIN / "turnout"), "bench"]
    argv += ["--url", f"http://127.0.0.1:{ports.http}", "--model", model, "--protocol", protocol]
    if protocol == "grpc":
        argv += ["--grpc-url", f"127.0.0.1:{ports.grpc}"]
    argv += ["--concurrency", ",".join(map(str, concurrencies))]
    duration, warmup = plan.durations(model)
    argv += ["--duration", f"{duration:g}", "--warmup", f"{warmup:g}"]
    argv += ["--input-file", str(input_file), "--json", str(json_out), "--quiet"]
    return argv


def raw_command(plan: Plan, model: str, json_out: Path) -> list[str]:
    argv = ["taskset", "-c", SERVER_CORE, str(PROJECT_BIN / "python"), str(HERE / "raw_ort.py")]
    argv += [str(models.cached_onnx(model)), "--batches", ",".join(map(str, RAW_BATCHES))]
    argv += ["--duration", f"{plan.raw_duration:g}", "--json", str(json_out)]
    if model == "minilm":
        argv += ["--input-file", str(plan.repos / "inputs" / f"{model}.json")]
    return argv


def measure(plan: Plan) -> list[dict[str, Any]]:
    """Every (round, model, server, protocol) run; each record holds turnout bench's results."""
    records: list[dict[str, Any]] = []
    for round_ in range(plan.rounds):
        # Rotate the order so no configuration always runs first (or last) in a round.
        shift = round_ % len(plan.servers)
        order = plan.servers[shift:] + plan.servers[:shift]
        for model in plan.models:
            raw_out = plan.results / f"r{round_}_{model}_raw.json"
            _log(f"round {round_ + 1}/{plan.rounds} {model}: raw ONNX Runtime")
            subprocess.run(raw_command(plan, model, raw_out), check=True, env={**os.environ, **THREAD_ENV})
            for result in json.loads(raw_out.read_text())["results"]:
                records.append({"round": round_, "model": model, "server": "raw", **result})
            for server in order:
                records += _measure_server(plan, round_, model, server)
    return records


def _measure_server(plan: Plan, round_: int, model: str, server: ServerConfig) -> list[dict[str, Any]]:
    """One server's points, each concurrency its own ``turnout bench`` run, so
    that the server's CPU per request (its whole process group, workers
    included, read from /proc) is known point by point."""
    records = []
    log = plan.results / "logs" / f"r{round_}_{model}_{server.key}.log"
    input_file = plan.repos / "inputs" / f"{model}.json"
    duration, warmup = plan.durations(model)
    with running(server, plan.repos, log) as (ports, group):
        for protocol in server.protocols:
            _log(f"round {round_ + 1}/{plan.rounds} {model}: {server.name} over {protocol}")
            for concurrency in CONCURRENCIES:
                out = plan.results / f"r{round_}_{model}_{server.key}_{protocol}_c{concurrency}.json"
                out.unlink(missing_ok=True)
                argv = bench_command(plan, model, protocol, ports, out, input_file, (concurrency,))
                limit = duration + warmup + 120
                before = group_cpu_seconds(group)
                try:
                    completed = subprocess.run(
                        argv, env={**os.environ, **THREAD_ENV}, capture_output=True, text=True, timeout=limit
                    )
                except subprocess.TimeoutExpired:
                    _log(f"  turnout bench did not finish in {limit:.0f} s; skipped")
                    continue
                used = group_cpu_seconds(group) - before
                if not out.exists():
                    _log(f"  turnout bench failed ({completed.returncode}): {completed.stderr.strip()[-2000:]}")
                    continue
                # exit status 1 with results: some requests failed (a server shedding load); the table counts them
                for point in json.loads(out.read_text())["results"]:
                    # the warm-up's requests are not counted: take them at the measured rate
                    served = point["throughput"] * (duration + warmup)
                    cpu = {"server_cpu_us": used * 1e6 / served} if served else {}
                    records.append(
                        {"round": round_, "model": model, "server": server.key, "protocol": protocol, **point, **cpu}
                    )
    return records


def group_cpu_seconds(group: int) -> float:
    """CPU seconds used so far by the live processes of a process group."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == group:  # pgrp; then utime and stime
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the run


def versions() -> dict[str, str]:
    def of(python: Path, *packages: str) -> dict[str, str]:
        code = "import importlib.metadata as m, json, sys\nprint(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
        found: dict[str, str] = json.loads(subprocess.check_output([str(python), "-c", code, *packages]))
        return found

    project = of(PROJECT_BIN / "python", "turnout", "onnxruntime", "numpy", "httptools", "uvloop", "hpack")
    mlserver = of(VENVS / "mlserver" / "bin" / "python", "mlserver", "onnxruntime", "fastapi", "uvicorn", "uvloop")
    fastapi = of(VENVS / "fastapi" / "bin" / "python", "fastapi", "uvicorn", "pydantic", "onnxruntime", "uvloop")
    return {
        "python": platform.python_version(),
        **{f"{k} (turnout env)": v for k, v in project.items()},
        **{f"{k} (MLServer env)": v for k, v in mlserver.items()},
        **{f"{k} (FastAPI env)": v for k, v in fastapi.items()},
    }


def machine() -> dict[str, str]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    memory = next(
        (line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line), ""
    )
    return {
        "cpu": fields.get("Model name", "?").strip(),
        "cores": str(os.cpu_count()),
        "memory": f"{int(memory) / 2**20:.1f} GiB" if memory else "?",
        "kernel": platform.release(),
    }


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round, 2 s per point")
    parser.add_argument("--models", default=",".join(models.ALL_MODELS))
    parser.add_argument("--servers", default=",".join(s.key for s in SERVERS), help="server configurations to run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per concurrency")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each measurement")
    parser.add_argument("--out", type=Path, default=HERE / ".out")
    parser.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2.0, 0.5
    chosen = args.servers.split(",")
    plan = Plan(
        models=tuple(args.models.split(",")),
        servers=tuple(s for s in SERVERS if s.key in chosen),
        rounds=args.rounds,
        duration=args.duration,
        warmup=args.warmup,
        raw_duration=min(args.duration, 3.0),
        out=args.out.resolve(),
    )
    started = datetime.datetime.now(datetime.UTC)
    _log("setting up the environments")
    subprocess.run([str(HERE / "setup_envs.sh"), "mlserver", "fastapi"], check=True)
    _log("building the models")
    models.build(plan.repos, plan.models)
    plan.results.mkdir(parents=True, exist_ok=True)
    records = measure(plan)
    (plan.results / "records.json").write_text(json.dumps(records, indent=1) + "\n")
    invocation = "python bench/side_by_side.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    commands = _example_commands(plan)
    text = report.render(
        records,
        report.Context(
            started=started,
            invocation=invocation.strip(),
            machine=machine(),
            versions=versions(),
            plan={
                "models": ", ".join(plan.models),
                "rounds": str(plan.rounds),
                "duration": f"{plan.duration:g} s per point after {plan.warmup:g} s of warm-up"
                + "".join(f"; {m}: {d:g} s after {w:g} s" for m, (d, w) in MIN_DURATION_S.items() if m in plan.models),
                "concurrency": ", ".join(map(str, CONCURRENCIES)),
            },
            server_names={s.key: s.name for s in SERVERS},
            commands=commands,
        ),
    )
    if args.report.exists():  # other scripts' sections (bench/sections.py) stay
        text = text.rstrip("\n") + "\n" + sections.carried(args.report.read_text())
    args.report.write_text(text)
    _log(f"wrote {args.report}")


def _example_commands(plan: Plan) -> list[str]:
    """The exact commands (run from the repository root), with example ports, for the report."""
    model = plan.models[0]
    ports = Ports(8080, 8081)
    lines = []
    for server in plan.servers:
        argv, env = server.command(plan.repos, ports)
        prefix = " ".join(
            f"{k}={_rel(Path(v)) if v.startswith(str(ROOT)) else v}" for k, v in {**THREAD_ENV, **env}.items()
        )
        lines.append(f"# {server.name}\n{prefix} taskset -c {SERVER_CORE} {_rel_argv(argv)}")
    json_out = Path("OUT.json")
    for protocol in ("rest", "grpc"):
        argv = bench_command(plan, model, protocol, ports, json_out, plan.repos / "inputs" / f"{model}.json")
        lines.append(f"# load generator, {protocol}\n{_rel_argv(argv)}")
    lines.append(f"# raw ONNX Runtime\n{_rel_argv(raw_command(plan, model, json_out))}")
    return lines


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _shown(arg: str) -> str:
    """A path under the repository as a relative one; anything else unchanged."""
    return _rel(Path(arg)) if arg.startswith(str(ROOT)) else arg


def _rel_argv(argv: list[str]) -> str:
    return shlex.join(_shown(a) for a in argv)


if __name__ == "__main__":
    main()
