"""Attacks with request bodies and credentials on a real ``turnout serve``
that needs one, each from one raw-socket connection, while a steady client
with a valid key is served on its own connection (issue 15, items 7 and 9).

Before: bodies were buffered before the credential was checked (64 MB per
HTTP/1.1 connection, 144 MB per HTTP/2 connection, freed at the 30 s read
timeout), ``Expect: 100-continue`` was answered before the check, and a
compressed gRPC message was inflated first; nothing bounded the bodies held
by all connections together; and each authentication failure was written
whole to the audit log. Now the credential is checked from the headers, a
refused request's body is never kept, and a budget bounds what all
connections hold together."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from itertools import repeat
from pathlib import Path

import hpack
import httpx
import pytest

from tests.integration.attack_support import MB, SteadyProbe, attacked
from tests.integration.test_http1_attacks import connect, read_until_closed, send_until_answered
from tests.integration.test_http2_attacks import Raw
from tests.support import ServerProcess
from turnout.security.keys import FileKeys, new_key
from turnout.security.principal import Role
from turnout.transports.http2 import frames as f

INFER_PATH = "/v2/models/breast_cancer/versions/1/infer"
BIG = 60_000_000  # under the default 64 MiB body limit


@pytest.fixture
def guarded(example_repo: Path, log_dir: Path) -> Iterator[tuple[ServerProcess, str]]:
    """A server that needs a credential, its audit log on, and a client key for the steady client."""
    server = ServerProcess(
        example_repo,
        "--audit-log",
        str(log_dir / "audit.log"),
        "--max-body-bytes",
        str(BIG + 1_000_000),
        log_dir=log_dir,
        inference_auth=True,
    )
    record, key = new_key("steady", [Role.INFER])
    FileKeys(server.key_store).add(record)
    with server:
        yield server, key


def rest_probe(server: ServerProcess, key: str) -> SteadyProbe:
    return SteadyProbe(url=server.url, headers={"authorization": f"Bearer {key}"})


def grpc_probe(server: ServerProcess, key: str) -> SteadyProbe:
    return SteadyProbe(grpc_address=server.grpc_address, headers={"authorization": f"Bearer {key}"})


def test_an_unauthenticated_body_is_never_read(guarded: tuple[ServerProcess, str]) -> None:
    """A 60 MB body without a credential: 401 as soon as the headers are in,
    and the connection closes after a little of the body is drained; ten
    times in a row, each on a new connection."""
    server, key = guarded
    head = f"POST {INFER_PATH} HTTP/1.1\r\nHost: t\r\nContent-Length: {BIG}\r\n\r\n".encode()
    with attacked(server, rest_probe(server, key)):
        for _ in range(10):
            sock = connect(server)
            sock.sendall(head)
            sent, answer = send_until_answered(sock, repeat(b"\0" * MB, 60), seconds=10)
            sock.close()
            assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
            assert sent < 16 * MB, f"{sent / MB:.0f} MB of a refused body taken"


def test_expect_100_continue_is_answered_only_with_a_credential(guarded: tuple[ServerProcess, str]) -> None:
    """Without a credential the client that waits for ``100 Continue`` gets
    the 401 instead, and never sends its body; with one, it gets 100 and is served."""
    server, key = guarded
    head = f"POST {INFER_PATH} HTTP/1.1\r\nHost: t\r\nContent-Length: {BIG}\r\nExpect: 100-continue\r\n\r\n"
    sock = connect(server)
    sock.sendall(head.encode())
    answer = read_until_closed(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 401 ") and b"100 Continue" not in answer, answer[:200]
    body = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,30],"data":[' + b",".join([b"1"] * 30) + b"]}]}"
    head = (
        f"POST {INFER_PATH} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    sock = connect(server)
    sock.sendall(head.encode())
    sock.settimeout(10)
    assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n")
    sock.sendall(body)
    answer = read_until_closed(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


def test_buffered_bodies_have_one_budget_for_all_connections(example_repo: Path, log_dir: Path) -> None:
    """With a 10 MB budget for request bodies: two clients each announcing
    4 MB and sending half hold 8 MB; a third announcing 4 MB is answered 503
    with Retry-After at once, before sending any of it; the steady client's
    small bodies still fit. Once one of the two goes, its share is free again."""
    server = ServerProcess(
        example_repo, "--max-body-bytes", "4000000", "--max-buffered-bytes", "10000000", log_dir=log_dir
    )
    head = f"POST {INFER_PATH} HTTP/1.1\r\nHost: t\r\nContent-Length: 4000000\r\n\r\n".encode()
    with server, attacked(server, SteadyProbe(url=server.url)):
        holders = [connect(server) for _ in range(2)]
        for sock in holders:
            sock.sendall(head + b"\0" * 2_000_000)
        time.sleep(0.5)
        third = connect(server)
        third.sendall(head)
        answer = read_until_closed(third)
        third.close()
        assert answer.startswith(b"HTTP/1.1 503 ") and b"\r\nretry-after: 1\r\n" in answer.lower(), answer[:300]
        holders.pop().close()
        time.sleep(0.5)
        again = connect(server)
        again.sendall(head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + b"\0" * 4_000_000)
        answer = read_until_closed(again)
        again.close()
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]  # read whole, and not JSON
        for sock in holders:
            sock.close()


def grpc_status(raw: Raw, stream_id: int, decoder: hpack.Decoder) -> str | None:
    """The grpc-status the server answers ``stream_id`` with, reading its frames."""
    for kind, _, sid, payload in raw.frames():
        if kind == f.HEADERS and sid == stream_id:
            fields = dict(decoder.decode(payload))
            if "grpc-status" in fields:
                return str(fields["grpc-status"])
        if kind == f.GOAWAY:
            return None
    return None


def send_regardless(sock: socket.socket, data: bytes) -> None:
    """Send all of ``data`` (from a thread, while another reads), until the server closes."""
    with contextlib.suppress(OSError):  # closed by the server: what it sent is what the test reads
        sock.sendall(data)


def test_http2_bodies_without_a_credential_are_dropped(guarded: tuple[ServerProcess, str]) -> None:
    """A gRPC call without a credential is answered UNAUTHENTICATED from its
    headers, before any of its body is sent. Then 200 such calls, each
    followed by 1 MB of body that is sent regardless (200 MB): the server
    keeps none of it; each call answered is UNAUTHENTICATED, and data sent on
    after the answer counts against the connection's budget for useless
    frames (GOAWAY ENHANCE_YOUR_CALM past it)."""
    server, key = guarded
    with attacked(server, grpc_probe(server, key)), Raw(server) as raw:
        decoder = hpack.Decoder()
        raw.sock.sendall(f.frame(f.HEADERS, f.END_HEADERS, 1, raw.block()))
        assert grpc_status(raw, 1, decoder) == "16"  # UNAUTHENTICATED, with no body sent
        chunk = struct.pack(">BI", 0, BIG) + b"\0" * (16_384 - 5)
        attack = b"".join(
            f.frame(f.HEADERS, f.END_HEADERS, stream_id, raw.block())
            + b"".join(f.frame(f.DATA, 0, stream_id, chunk) for _ in range(64))
            for stream_id in range(3, 403, 2)
        )
        sender = threading.Thread(target=send_regardless, args=(raw.sock, attack), daemon=True)
        sender.start()
        statuses: dict[int, str] = {}
        goaway = None
        for kind, _, stream_id, payload in raw.frames(timeout=3.0):
            if kind == f.HEADERS:
                fields = dict(decoder.decode(payload))
                if "grpc-status" in fields:
                    statuses[stream_id] = str(fields["grpc-status"])
            elif kind == f.GOAWAY:
                goaway = struct.unpack(">II", payload[:8])[1]
        sender.join(25)
    assert statuses and set(statuses.values()) == {"16"}, statuses
    assert goaway in (None, f.ENHANCE_YOUR_CALM)
    assert goaway is not None or len(statuses) == 200


def test_a_compressed_message_is_not_inflated_before_the_credential(guarded: tuple[ServerProcess, str]) -> None:
    """A gzip bomb (1 GB of zeros, ~1 MB compressed) without a credential:
    UNAUTHENTICATED at once, the message never inflated."""
    server, key = guarded
    squeezer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip format
    zeros = b"\0" * (16 * MB)
    bomb = b"".join(squeezer.compress(zeros) for _ in range(64)) + squeezer.flush()
    message = struct.pack(">BI", 1, len(bomb)) + bomb
    with attacked(server, grpc_probe(server, key)), Raw(server) as raw:
        decoder = hpack.Decoder()
        block = raw.block(extra=(("grpc-encoding", "gzip"),))
        frames = [f.frame(f.HEADERS, f.END_HEADERS, 1, block)]
        frames += [f.frame(f.DATA, 0, 1, message[i : i + 16_384]) for i in range(0, len(message), 16_384)]
        began = time.monotonic()
        raw.flood(b"".join(frames) + f.frame(f.DATA, f.END_STREAM, 1, b""))
        assert grpc_status(raw, 1, decoder) == "16"
        assert time.monotonic() - began < 5


def test_audit_log_floods_without_a_credential(guarded: tuple[ServerProcess, str], log_dir: Path) -> None:
    """Attack 7: 3,000 pipelined requests with wrong keys and 8,000-character
    model names from one connection: each 401, the audit log grows by a
    throttled few hundred bounded lines, and the steady client is served."""
    server, key = guarded
    audit = log_dir / "audit.log"
    request = (
        f"POST /v2/models/{'m' * 8000}/infer HTTP/1.1\r\nHost: t\r\n"
        "Authorization: Bearer tnt_0123456789ab_wrong\r\nContent-Length: 2\r\n\r\n{}"
    ).encode()
    with attacked(server, rest_probe(server, key)):
        sock = connect(server)
        began = time.monotonic()
        attack = request * 2999 + request.replace(b"Host: t\r\n", b"Host: t\r\nConnection: close\r\n")
        sender = threading.Thread(target=sock.sendall, args=(attack,), daemon=True)
        sender.start()  # and the answers are read meanwhile, or the server stops reading
        answers = read_until_closed(sock, timeout=30)
        elapsed = time.monotonic() - began
        sender.join(5)
        sock.close()
    assert answers.count(b"HTTP/1.1 401 ") == 3000
    lines = audit.read_bytes().splitlines()
    assert max(map(len, lines)) <= 2048
    # the burst and the refill, each line after the burst led by a summary of those dropped before it
    assert len(lines) <= 100 + 2 * 10 * (elapsed + 2) + 5, f"{len(lines)} audit lines in {elapsed:.1f} s"
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/v2/health/ready").status_code == 200
