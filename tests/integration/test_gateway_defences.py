"""A gateway's own port against hostile and greedy clients, on the path that
passes REST bodies on unread (the relay: no task per request).

The replica here is a raw socket server that answers the gateway's metadata
and health questions and never answers an inference: every request the
gateway takes waits until its deadline. A flood past the model's
``max_queue_size`` is answered 503 at once, never queued; the requests held
are answered by their deadline, not the client's patience; and a client
that sends half a request and stalls holds nobody up. Through all of it a
second client is served."""

from __future__ import annotations

import json
import select
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ServerProcess

pytestmark = pytest.mark.integration

METADATA = json.dumps({
    "name": "stalled", "versions": ["1"], "platform": "onnxruntime_onnx",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 1]}],
}).encode()  # fmt: skip
BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}).encode()
HELD = 4  # the gateway model's max_queue_size: requests it forwards at once


class _Stalling(socketserver.BaseRequestHandler):
    """Answers GETs (metadata, readiness); holds every POST unanswered until the gateway hangs up."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        pending = b""
        while True:
            while b"\r\n\r\n" not in pending:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                pending += chunk
            head, _, pending = pending.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
            while len(pending) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                pending += chunk
            pending = pending[length:]
            if head.startswith(b"POST"):
                while sock.recv(65536):  # never answered: read on until the gateway drops it
                    pass
                return
            body = METADATA if not head.split(b" ")[1].endswith(b"/ready") else b'{"ready": true}'
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                         % (len(body), body))  # fmt: skip


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def stalling_replica() -> Iterator[int]:
    server = _Server(("127.0.0.1", 0), _Stalling)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def gateway(tmp_path: Path, stalling_replica: int) -> Iterator[ServerProcess]:
    repo = tmp_path / "gateway"
    (repo / "stalled" / "1").mkdir(parents=True)
    (repo / "stalled" / "model.toml").write_text(
        f'runtime = "remote"\n\n[batching]\nmax_queue_size = {HELD}\ntimeout_ms = 2000\n'
    )
    (repo / "stalled" / "1" / "remote.toml").write_text(
        f'replicas = ["127.0.0.1:{stalling_replica}"]\ntimeout_ms = 2000\n\n[hedging]\nenabled = false\n'
    )
    with ServerProcess(repo, log_dir=tmp_path) as server:
        yield server


def _post(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /v2/models/stalled/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY))  # fmt: skip
    return sock


def _answered(pending: set[socket.socket], until: float, started: float) -> dict[socket.socket, tuple[int, float]]:
    """The answers that come before ``until`` (time.monotonic()): each one's status and
    when it came (seconds after ``started``); those answered leave ``pending``."""
    answered: dict[socket.socket, tuple[int, float]] = {}
    heads: dict[socket.socket, bytes] = {}
    while pending and time.monotonic() < until:
        ready, _, _ = select.select(list(pending), [], [], max(until - time.monotonic(), 0.0))
        for sock in ready:
            chunk = sock.recv(4096)
            assert chunk, "the gateway closed the connection without an answer"
            head = heads[sock] = heads.get(sock, b"") + chunk
            if b"\r\n" in head:
                answered[sock] = int(head.split(b" ", 2)[1]), time.monotonic() - started
                pending.discard(sock)
    return answered


def _served_meanwhile(url: str) -> float:
    started = time.monotonic()
    answer = httpx.get(f"{url}/v2/models/stalled/ready", timeout=5)
    assert answer.status_code == 200
    return time.monotonic() - started


def test_a_flood_past_the_queue_is_refused_at_once_and_the_rest_answered_by_the_deadline(
    gateway: ServerProcess,
) -> None:
    started = time.monotonic()
    flood = [_post(gateway.http_port) for _ in range(HELD + 8)]
    pending = set(flood)
    try:
        refused = _answered(pending, started + 1.0, started)
        assert _served_meanwhile(gateway.url) < 0.5  # while HELD requests wait on the replica
        held = _answered(pending, started + 5.0, started)
    finally:
        for sock in flood:
            sock.close()
    # past max_queue_size: 503 at once, never queued
    assert sorted(status for status, _ in refused.values()) == [503] * 8, refused
    # forwarded, unanswered: given up at the deadline (2 s), not left to the client's patience
    assert len(held) == HELD and not pending, held
    for status, after in held.values():
        assert status in (503, 504) and 1.9 < after < 3.5, held
    assert _served_meanwhile(gateway.url) < 0.5
    # nothing is held any more: refused and given-up requests gave back their places
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=5).text
    assert 'turnout_inflight_requests{model="stalled",protocol="rest"} 0.0' in metrics
    again = [_post(gateway.http_port) for _ in range(HELD)]
    try:  # the queue has room for HELD again: forwarded (then given up at the deadline), none refused at once
        assert not _answered(set(again), time.monotonic() + 1.0, time.monotonic())
    finally:
        for sock in again:
            sock.close()


def test_half_a_request_stalls_only_its_own_connection(gateway: ServerProcess) -> None:
    slow = socket.create_connection(("127.0.0.1", gateway.http_port))
    try:
        slow.sendall(b"POST /v2/models/stalled/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{")
        for _ in range(3):
            assert _served_meanwhile(gateway.url) < 0.5
    finally:
        slow.close()
