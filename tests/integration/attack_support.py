"""What every attack test measures: a steady, well-behaved client on its own
connection keeps being served while one hostile connection attacks, the
server's memory stays bounded, and service is normal soon after.

``SteadyProbe`` calls the real model over REST (httpx) or gRPC (grpcio's
generated stub) back to back on one thread, with a credential when the
server wants one, and records every latency and failure."""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import numpy as np

from tests.integration.reference import cancer_rows
from tests.support import ServerProcess
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2_grpc as pb_grpc

ROWS = cancer_rows(1, start=3)
REST_BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": ROWS.ravel().tolist()}]}


def report(**numbers: float | int | str) -> None:
    """Append what an attack test measured to the file named by
    ``TURNOUT_ATTACK_REPORT`` (bench/attacks.py sets it and tabulates the
    lines for BENCHMARKS.md); nothing when it is unset."""
    target = os.environ.get("TURNOUT_ATTACK_REPORT")
    if not target:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    with open(target, "a", encoding="utf-8") as out:
        out.write(json.dumps({"test": test, **numbers}) + "\n")


def rss_bytes(pid: int) -> int:
    """The process's resident set size, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def unread_bytes(client: socket.socket, server_port: int) -> int:
    """Bytes the client has sent that the server has not read: those waiting
    in the server's receive queue and those still in the client's send queue
    (once the server's receive window is full), from /proc/net/tcp (IPv4)."""
    client_port = client.getsockname()[1]
    unread = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        send_queue, receive_queue = (int(size, 16) for size in fields[4].split(":"))
        if (local, remote) == (server_port, client_port):
            unread += receive_queue
        elif (local, remote) == (client_port, server_port):
            unread += send_queue
    return unread


def grpc_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="breast_cancer", model_version="1")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 30])
    tensor.contents.fp32_contents.extend(ROWS.ravel().tolist())
    return request


class SteadyProbe:
    """One client calling ``breast_cancer`` v1 back to back until stopped.

    ``latencies`` (seconds) and ``failures`` (what went wrong, in words) are
    read after ``stop``; ``p99`` and ``healthy_within`` summarise them."""

    def __init__(
        self,
        url: str = "",
        grpc_address: str = "",
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        assert bool(url) != bool(grpc_address), "one transport: REST (url) or gRPC (grpc_address)"
        self._url, self._grpc_address = url, grpc_address
        self._headers = headers or {}
        self._timeout = timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.samples: list[tuple[float, float, str]] = []  # (sent at, seconds, failure or "")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyProbe:
        self._thread.start()
        self.wait_for(5)  # served before the attack starts
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self._timeout + 5)

    def _run(self) -> None:
        if self._url:
            with httpx.Client(base_url=self._url, headers=self._headers, timeout=self._timeout) as client:

                def call() -> str:
                    response = client.post("/v2/models/breast_cancer/versions/1/infer", json=REST_BODY)
                    if response.status_code != 200:
                        return f"{response.status_code} {response.text[:200]}"
                    label = response.json()["outputs"][0]["data"]
                    return "" if len(label) == 1 else f"unexpected output {label}"

                self._loop(call)
        else:
            with grpc.insecure_channel(self._grpc_address) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                request = grpc_request()
                metadata = tuple(self._headers.items())

                def call() -> str:
                    response = stub.ModelInfer(request, timeout=self._timeout, metadata=metadata)
                    return "" if response.outputs else "no outputs"

                self._loop(call)

    def _loop(self, call: object) -> None:
        assert callable(call)
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                failure = call()
            except (httpx.HTTPError, grpc.RpcError) as exc:
                failure = repr(exc)[:300]
            with self._lock:
                self.samples.append((sent, time.monotonic() - sent, failure))
            if failure:
                time.sleep(0.01)  # a refused connection fails at once: do not spin

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Until ``count`` more calls have ended."""
        deadline = time.monotonic() + timeout
        start = len(self.samples)
        while len(self.samples) < start + count:
            assert time.monotonic() < deadline, "the steady client stalled"
            time.sleep(0.01)

    def during(self, start: float, end: float) -> list[tuple[float, float, str]]:
        with self._lock:
            return [s for s in self.samples if start <= s[0] <= end]

    @property
    def failures(self) -> list[str]:
        with self._lock:
            return [failure for _, _, failure in self.samples if failure]

    def p99(self, start: float = 0.0, end: float = float("inf")) -> float:
        seconds = [s for _, s, _ in self.during(start, end)]
        assert seconds, "no calls in that window"
        return float(np.percentile(seconds, 99))

    def assert_served(self, start: float, end: float, p99_limit: float = 1.0) -> float:
        """Served throughout ``[start, end]``: no failure, p99 within the limit, and
        no gap longer than the limit between calls (a stalled call never ends).
        Returns the p99 (and reports it, with ``report``)."""
        window = self.during(start, end)
        assert len(window) >= 3, f"only {len(window)} calls between the attack's start and end"
        failures = [f for _, _, f in window if f]
        assert not failures, failures[:5]
        p99 = float(np.percentile([s for _, s, _ in window], 99))
        assert p99 <= p99_limit, f"p99 {p99:.3f} s during the attack (limit {p99_limit} s)"
        sent = [start] + [s[0] for s in window] + [end]
        gap = max(b - a for a, b in itertools.pairwise(sent))
        assert gap <= p99_limit + 0.5, f"the steady client waited {gap:.2f} s between calls"
        report(steady_calls=len(window), steady_p99_ms=round(p99 * 1000, 1), steady_max_gap_ms=round(gap * 1000, 1))
        return p99


MB = 1 << 20
RSS_GROWTH_LIMIT = 200 * MB  # issue 15's bar for each attack


@contextmanager
def attacked(server: ServerProcess, probe: SteadyProbe) -> Iterator[SteadyProbe]:
    """The steady client ``probe`` runs throughout; on exit it must have been
    served during the attack (no failure, p99 <= 1 s), and again within 2 s of
    its end, and the server's RSS must have grown <= ``RSS_GROWTH_LIMIT``."""
    assert server.process is not None
    pid = server.process.pid
    rss_before = rss_bytes(pid)
    with probe:
        start = time.monotonic()
        yield probe
        probe.wait_for(3)  # calls within the window, even when the attack is quick
        end = time.monotonic()
        probe.wait_for(3, timeout=2.0)  # normal service right after
    probe.assert_served(start, end)
    growth = rss_bytes(pid) - rss_before
    report(rss_growth_mb=round(growth / MB, 1))
    assert growth <= RSS_GROWTH_LIMIT, f"the server's RSS grew {growth / MB:.0f} MB"
