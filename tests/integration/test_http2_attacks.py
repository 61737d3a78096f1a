"""Attacks on the gRPC (HTTP/2) listener of a real ``turnout serve``, each from
one raw-socket connection speaking HTTP/2 by hand (frames, HPACK), while a
steady gRPC client on its own connection keeps being served (issue 15, items
1, 3, 4, 5, 6 and 11's HTTP/2 faults).

Each test asserts the defence's answer (GOAWAY ENHANCE_YOUR_CALM, RST_STREAM
PROTOCOL_ERROR, a bounded answer, a server that stops reading) and that the
steady client saw no failure and p99 <= 1 s during the attack, with the
server's RSS growing <= 200 MB. The server's defaults are under test: each
attack goes well past the budget it meets (1,000 resets, 1,000 glitches)."""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import hpack
import pytest

from tests.integration.attack_support import MB, SteadyProbe, grpc_request, unread_bytes
from tests.integration.attack_support import attacked as attacked_while
from tests.support import ServerProcess
from turnout.transports.grpc import wire
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from turnout.transports.http2 import frames as f

SERVICE = "/inference.GRPCInferenceService"
INFER = wire.frame(grpc_request().SerializeToString())


def attacked(server: ServerProcess) -> AbstractContextManager[SteadyProbe]:
    """The steady client on its own connection (gRPC) must be served throughout."""
    return attacked_while(server, SteadyProbe(grpc_address=server.grpc_address))


class Raw:
    """One HTTP/2 connection to the gRPC port, by hand: bytes out, frames in."""

    def __init__(self, server: ServerProcess, settings: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.encoder = hpack.Encoder()
        self._buffer = b""
        if settings:
            self.sock.sendall(f.PREFACE + f.settings({f.INITIAL_WINDOW_SIZE: 1 << 20}))

    def block(self, method: str = "ModelInfer", extra: tuple[tuple[str, str], ...] = ()) -> bytes:
        fields = [
            (":method", "POST"), (":scheme", "http"), (":path", f"{SERVICE}/{method}"), (":authority", "turnout"),
            ("content-type", "application/grpc"), ("te", "trailers"), *extra,
        ]  # fmt: skip
        return self.encoder.encode(fields)

    def call(self, stream_id: int, method: str = "ModelInfer", body: bytes = INFER) -> bytes:
        return f.frame(f.HEADERS, f.END_HEADERS, stream_id, self.block(method)) + f.frame(
            f.DATA, f.END_STREAM, stream_id, body
        )

    def frames(self, timeout: float = 10.0) -> Iterator[tuple[int, int, int, bytes]]:
        """Frames as they come, until the server closes or ``timeout`` passes without a byte."""
        self.sock.settimeout(timeout)
        while True:
            while len(self._buffer) >= f.HEADER_SIZE:
                high, low, kind, flags, stream_id = f.HEADER.unpack_from(self._buffer)
                end = f.HEADER_SIZE + ((high << 8) | low)
                if len(self._buffer) < end:
                    break
                payload, self._buffer = self._buffer[f.HEADER_SIZE : end], self._buffer[end:]
                yield kind, flags, stream_id & 0x7FFFFFFF, payload
            try:
                chunk = self.sock.recv(1 << 20)
            except (ConnectionResetError, TimeoutError):
                return
            if not chunk:
                return
            self._buffer += chunk

    def goaway(self, timeout: float = 10.0) -> int | None:
        """The error code of the server's GOAWAY, None if it sent none before closing."""
        for kind, _, _, payload in self.frames(timeout):
            if kind == f.GOAWAY:
                return int(struct.unpack(">II", payload[:8])[1])
        return None

    def reset_code(self, stream_id: int) -> int | None:
        for kind, _, sid, payload in self.frames():
            if kind == f.RST_STREAM and sid == stream_id:
                return int(struct.unpack(">I", payload)[0])
            if kind == f.GOAWAY:
                return None
        return None

    def flood(self, data: bytes, seconds: float = 10.0) -> int:
        """Send ``data`` reading nothing, as fast as the server takes it, until
        all is sent, the server stops taking it for a second, or it closes. Bytes sent."""
        self.sock.setblocking(False)
        view, sent = memoryview(data), 0
        deadline = time.monotonic() + seconds
        while sent < len(data) and time.monotonic() < deadline:
            _, writable, _ = select.select([], [self.sock], [], 1.0)
            if not writable:
                break
            try:
                sent += self.sock.send(view[sent : sent + (1 << 20)])
            except (BrokenPipeError, ConnectionResetError):
                break
        self.sock.setblocking(True)
        return sent

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def echo_blocks() -> tuple[bytes, bytes]:
    """Attack 1's header blocks: the first puts a ~4 KB :path (an unknown
    method) and the gRPC content type into the HPACK table; the second, 4
    bytes, names them (with POST and http from the static table)."""
    path = f"{SERVICE}/".encode() + b"A" * 3900
    content_type = b"application/grpc"
    first = b"\x83\x86" + _indexed_literal(4, path) + _indexed_literal(31, content_type)  # :path 4, content-type 31
    return first, b"\x83\x86\xbf\xbe"  # dynamic 63: the :path, 62: the content type


def _indexed_literal(name_index: int, value: bytes) -> bytes:
    """A literal with incremental indexing, its name from the static table (RFC 7541 6.2.1)."""
    return bytes([0x40 | name_index]) + bytes(hpack.hpack.encode_integer(len(value), 7)) + value


def served_on(raw: Raw, stream_id: int) -> bool:
    """A ServerLive call on the attacker's own connection is answered: it still serves."""
    raw.sock.sendall(raw.call(stream_id, "ServerLive", wire.frame(b"")))
    for kind, _, sid, payload in raw.frames():
        if kind == f.DATA and sid == stream_id:
            return pb.ServerLiveResponse.FromString(payload[5:]).live is True
        if kind in (f.RST_STREAM, f.GOAWAY) and sid in (0, stream_id):
            return False
    return False


def test_an_error_never_echoes_a_long_path(server: ServerProcess) -> None:
    """Attack 1: a 4 KB :path sent once into the HPACK table, then ~10-byte
    requests naming it: each got a ~12 KB `unknown method` answer (~1.3 ms to
    percent-encode; 264 KB of attack stalled everyone for 26 s). The status
    message is now cut at 512 bytes: 20,000 such requests cost little."""
    count = 20_000
    with attacked(server), Raw(server) as raw:
        first, then = echo_blocks()
        requests = [f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, first)]
        requests += [f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, sid, then) for sid in range(3, 2 * count, 2)]
        # sent while the answers are read: the server stops reading a client that does not read
        sender = threading.Thread(target=raw.sock.sendall, args=(b"".join(requests),), daemon=True)
        sender.start()
        answers, largest = 0, 0
        for kind, _, _, payload in raw.frames(timeout=20):
            if kind == f.HEADERS:
                answers += 1
                largest = max(largest, len(payload))
                if answers == count:
                    break
        sender.join(5)
    assert answers == count
    assert largest < 1000, f"an answer of {largest} bytes to a {len(then) + 9}-byte request"


def test_answers_never_read_stop_the_server_reading(server: ServerProcess) -> None:
    """Item 5: the same small requests pipelined, their answers never read.
    Once its write buffer is full the server stops reading the connection, so
    the requests wait in the socket, unread, and the server holds a bounded
    amount (before: it answered all, buffering ~12 KB per 10-byte request)."""
    assert server.process is not None
    with attacked(server), Raw(server) as raw:
        # Nothing is ever read. (Not with a tiny SO_RCVBUF: then the client's
        # kernel drops the server's segments, their ACKs with them, and TCP
        # itself stops the flow, defence or not.)
        first, then = echo_blocks()
        requests = [f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, 1, first)]
        requests += [f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, sid, then) for sid in range(3, 400_000, 2)]
        sent = raw.flood(b"".join(requests), seconds=3.0)
        time.sleep(1.0)
        unread = unread_bytes(raw.sock, server.grpc_port)
        time.sleep(1.0)
        read_meanwhile = unread - unread_bytes(raw.sock, server.grpc_port)
    assert sent > 1_000_000
    assert unread > sent // 2, f"the server read on: {unread} of {sent} bytes left unread"
    assert read_meanwhile < 50_000, f"the server read on: {read_meanwhile} bytes in a second"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (f.HEADER.pack(MB >> 8, MB & 0xFF, f.HEADERS, f.END_HEADERS, 1) + b"\x20" * MB, f.FRAME_SIZE_ERROR),
        (f.frame(f.HEADERS, f.END_HEADERS, 1, b"\x20" * 16384), f.COMPRESSION_ERROR),  # the most one frame holds
    ],
    ids=["1-MiB-frame", "16-KiB-of-updates"],
)
def test_hpack_table_size_updates_cost_nothing(server: ServerProcess, frame: bytes, code: int) -> None:
    """Attack 3: one 1 MiB HEADERS frame of dynamic table size updates cost
    1.28 s of CPU (8 of them stalled everyone 10.3 s). Frames are now at most
    16 KiB, and a block may open with two updates, not thousands."""
    with attacked(server), Raw(server) as raw:
        started = time.monotonic()
        raw.flood(frame * 8)
        assert raw.goaway() == code
        assert time.monotonic() - started < 2.0


def test_rapid_reset(server: ServerProcess) -> None:
    """Attack 4 (CVE-2023-44487): ModelInfer calls opened and reset at once,
    50-90k a second; a normal call took 6.7 s or timed out. Now the client's
    resets draw on a budget (1,000, +33/s, +1 per call answered): past it,
    GOAWAY ENHANCE_YOUR_CALM, and every reset call's work is cancelled."""
    with attacked(server), Raw(server) as raw:
        attack = b"".join(raw.call(sid) + f.rst_stream(sid, f.CANCEL) for sid in range(1, 2 * 5000, 2))
        raw.flood(attack)
        assert raw.goaway() == f.ENHANCE_YOUR_CALM


FLOODS = {  # what one connection sends, by name; each past the budget of 1,000
    "ping": lambda raw: [f.frame(f.PING, 0, 0, bytes(8))] * 200_000,  # answers never read: +423 MB before
    "settings": lambda raw: [f.settings({f.INITIAL_WINDOW_SIZE: 1 << 20})] * 200_000,  # +187 MB
    "empty-data": lambda raw: [  # 6.4M accepted in 10 s
        f.frame(f.HEADERS, f.END_HEADERS, 1, raw.block()),
        *[f.frame(f.DATA, 0, 1)] * 200_000,
    ],
    "empty-continuation": lambda raw: [  # 8.8M accepted in 10 s
        f.frame(f.HEADERS, 0, 1, raw.block()),
        *[f.frame(f.CONTINUATION, 0, 1)] * 200_000,
    ],
    "window-update": lambda raw: [f.frame(f.WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x01")] * 200_000,
    "priority": lambda raw: [f.frame(f.PRIORITY, 0, 3, bytes(5))] * 200_000,
}


@pytest.mark.parametrize("kind", list(FLOODS))
def test_control_frame_floods(server: ServerProcess, kind: str) -> None:
    """Attack 5: frames that make the server work (and, unread, queue
    acknowledgements) without moving a request forward, read by nobody.
    Past the budget: GOAWAY ENHANCE_YOUR_CALM and the connection closes."""
    with attacked(server), Raw(server) as raw:
        raw.flood(b"".join(FLOODS[kind](raw)))
        assert raw.goaway() == f.ENHANCE_YOUR_CALM


BASE = [
    (":method", "POST"), (":scheme", "http"), (":path", f"{SERVICE}/ModelInfer"), (":authority", "turnout"),
    ("content-type", "application/grpc"), ("te", "trailers"),
]  # fmt: skip
MALFORMED = {
    "upper-case-name": [*BASE, ("X-Upper", "v")],
    "connection": [*BASE, ("connection", "keep-alive")],
    "transfer-encoding": [*BASE, ("transfer-encoding", "chunked")],
    "te-gzip": [*BASE[:5], ("te", "gzip")],
    "duplicate-path": [*BASE[:3], (":path", f"{SERVICE}/ServerLive"), *BASE[3:]],  # ran ModelInfer as ServerLive
    "response-pseudo-header": [*BASE[:3], (":status", "200"), *BASE[3:]],
    "empty-path": [*BASE[:2], (":path", ""), *BASE[3:]],
    "no-scheme": [BASE[0], *BASE[2:]],
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_requests_are_refused(server: ServerProcess, case: str) -> None:
    """Item 11: RFC 9113 8.2/8.3 malformed requests are reset (PROTOCOL_ERROR)
    and never reach the service; the connection carries on."""
    with attacked(server), Raw(server) as raw:
        block = raw.encoder.encode(MALFORMED[case])
        raw.sock.sendall(f.frame(f.HEADERS, f.END_HEADERS, 1, block) + f.frame(f.DATA, f.END_STREAM, 1, INFER))
        assert raw.reset_code(1) == f.PROTOCOL_ERROR
        assert served_on(raw, 3)


@pytest.mark.parametrize(
    "first",
    [f.frame(f.PING, 0, 0, bytes(8)), b"HEADERS"],
    ids=["ping", "headers"],
)
def test_the_first_frame_must_be_settings(server: ServerProcess, first: bytes) -> None:
    with attacked(server), Raw(server, settings=False) as raw:
        if first == b"HEADERS":
            first = raw.call(1, "ServerLive", wire.frame(b""))
        raw.sock.sendall(f.PREFACE + first)
        assert raw.goaway() == f.PROTOCOL_ERROR


def test_silent_connections_cannot_lock_clients_out(test_repo: Path, log_dir: Path) -> None:
    """Attack 6 on the gRPC port: 1,100 silent connections locked every client
    out at a 1,024 open-file limit. With a connection limit, each new
    connection closes the longest-idle one, so a newcomer is served."""
    limit = 32
    with ServerProcess(test_repo, "--no-strict-readiness", "--max-connections", str(limit), log_dir=log_dir) as server:
        silent: list[socket.socket] = []
        with attacked(server):
            for _ in range(3 * limit):
                silent.append(socket.create_connection(("127.0.0.1", server.grpc_port), timeout=5))
                time.sleep(0.002)
            time.sleep(0.2)
            with grpc.insecure_channel(server.grpc_address) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
        closed = sum(closed_by_server(sock) for sock in silent)
        assert closed >= 2 * limit, f"only {closed} of {len(silent)} silent connections were closed"


def closed_by_server(sock: socket.socket) -> bool:
    """True if the server has closed ``sock`` (what it sent before skipped); closes it here either way."""
    sock.settimeout(0.05)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    finally:
        sock.close()
