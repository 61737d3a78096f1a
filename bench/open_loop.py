"""The open-loop client of bench/overload.py: raw HTTP/1.1 keep-alive
connections on asyncio protocols, no task per request, so that one core can
offer tens of thousands of requests a second; and the server's RSS and CPU
read from /proc."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

CLIENT_TIMEOUT = 5.0  # seconds a client waits for an answer, as in the measurement
TICK = 0.001  # the schedule's resolution: shorter sleeps would spin the client's loop


@dataclass
class Tally:
    due: int = 0
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    shed_without_retry_after: int = 0
    timeouts: int = 0
    connection_errors: int = 0
    ok_ms: list[float] = field(default_factory=list)
    shed_ms: list[float] = field(default_factory=list)


class _Connection(asyncio.Protocol):
    __slots__ = ("buffer", "client", "due", "recorded", "transport")

    def __init__(self, client: OpenLoop) -> None:
        self.client = client
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.due = 0.0
        self.recorded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.client.answered(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.client.lost(self)


class OpenLoop:
    """Requests due at a fixed rate, each on a free connection, at most one
    outstanding per connection. With ``max_connections`` open and busy, a due
    request waits for the first to be free, oldest first: its latency and its
    timeout count from when it was due, so waiting here is the server's too."""

    def __init__(self, host: str, port: int, request: bytes, max_connections: int, tally: Tally) -> None:
        self.host, self.port, self.request = host, port, request
        self.max_connections = max_connections
        self.tally = tally
        self.idle: list[_Connection] = []
        self.waiting: deque[float] = deque()  # due times of requests no connection has taken yet
        self.outstanding: dict[_Connection, None] = {}  # in the order sent: about the order due
        self.open = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.record_from = self.record_until = 0.0

    def send(self, due: float) -> None:
        if self.record_from <= due < self.record_until:
            self.tally.due += 1
        if self.idle:
            self._write(self.idle.pop(), due)
        elif self.open < self.max_connections:
            self.open += 1
            task = asyncio.get_running_loop().create_task(self._connect_and_send(due))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            self.waiting.append(due)

    async def _connect_and_send(self, due: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError:
            self.open -= 1
            if self.record_from <= due < self.record_until:
                self.tally.connection_errors += 1
            return
        self._write(connection, due)

    def _write(self, connection: _Connection, due: float) -> None:
        assert connection.transport is not None
        connection.due, connection.recorded = due, self.record_from <= due < self.record_until
        if connection.recorded:
            self.tally.sent += 1
        self.outstanding[connection] = None
        connection.transport.write(self.request)

    def _free(self, connection: _Connection) -> None:
        if self.waiting:
            self._write(connection, self.waiting.popleft())
        else:
            self.idle.append(connection)

    def answered(self, connection: _Connection) -> None:
        buffer = connection.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        marker = head.find(b"\r\ncontent-length:")
        stop = head.find(b"\r\n", marker + 2)
        length = int(head[marker + 17 : stop if stop >= 0 else len(head)]) if marker >= 0 else 0
        if len(buffer) < end + 4 + length:
            return
        del buffer[: end + 4 + length]
        if self.outstanding.pop(connection, 0) is not None:
            return  # an answer after its timeout: the connection is being closed
        if connection.recorded:
            status = int(head[9:12])
            took = (time.monotonic() - connection.due) * 1e3
            self.tally.statuses[status] += 1
            if status == 200:
                self.tally.ok_ms.append(took)
            elif status in (429, 503):
                self.tally.shed_ms.append(took)
                if b"\r\nretry-after:" not in head:
                    self.tally.shed_without_retry_after += 1
        if connection.transport is not None and b"\r\nconnection: close" not in head:
            self._free(connection)

    def lost(self, connection: _Connection) -> None:
        self.open -= 1
        if self.outstanding.pop(connection, 0) is None and connection.recorded:
            self.tally.connection_errors += 1
        if connection in self.idle:
            self.idle.remove(connection)
        if self.waiting and self.open < self.max_connections:
            self.open += 1
            task = asyncio.get_running_loop().create_task(self._connect_and_send(self.waiting.popleft()))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def expire(self, now: float) -> None:
        """Give up on requests due ``CLIENT_TIMEOUT`` ago, sent or not."""
        while self.waiting and now - self.waiting[0] >= CLIENT_TIMEOUT:
            if self.record_from <= self.waiting.popleft() < self.record_until:
                self.tally.timeouts += 1
        while self.outstanding:
            oldest = next(iter(self.outstanding))
            if now - oldest.due < CLIENT_TIMEOUT:
                return
            del self.outstanding[oldest]
            if oldest.recorded:
                self.tally.timeouts += 1
            if oldest.transport is not None:
                oldest.transport.close()  # a late answer must not be taken for the next request's

    def close(self) -> None:
        for connection in [*self.idle, *self.outstanding]:
            if connection.transport is not None:
                connection.transport.close()


async def open_loop(
    host: str, port: int, request: bytes, rate: float, warmup: float, duration: float, args: argparse.Namespace,
    pid: int, tally: Tally,
) -> tuple[float, int, float, float]:  # fmt: skip
    """Drive the load; answer when it stopped, the peak RSS seen, and the
    server's and this client's CPU (shares of a core) while measuring."""
    client = OpenLoop(host, port, request, args.max_connections, tally)
    start = time.monotonic()
    client.record_from, client.record_until = start + warmup, start + warmup + duration
    total = int(rate * (warmup + duration))
    interval = 1.0 / rate
    peak_rss, next_sample = rss_bytes(pid), start
    sent = 0
    cpu: list[tuple[float, float, float]] = []  # (time, server's, client's CPU seconds) where measuring starts, ends
    while sent < total:
        now = time.monotonic()
        if len(cpu) < 2 and now >= (client.record_from, client.record_until)[len(cpu)]:
            cpu.append((now, cpu_seconds(pid), time.process_time()))
        while sent < total and start + sent * interval <= now:
            client.send(start + sent * interval)
            sent += 1
        if now >= next_sample:
            peak_rss, next_sample = max(peak_rss, rss_bytes(pid)), now + 0.25
            client.expire(now)
        # the schedule itself, in ticks of at least a millisecond: what falls due in
        # between is sent together, each timed from when it was due
        await asyncio.sleep(max(TICK, start + sent * interval - time.monotonic()))
    stopped = time.monotonic()
    while (client.outstanding or client.waiting or client.tasks) and time.monotonic() < stopped + CLIENT_TIMEOUT + 1:
        await asyncio.sleep(0.05)
        client.expire(time.monotonic())
        peak_rss = max(peak_rss, rss_bytes(pid))
    client.close()
    if len(cpu) < 2:
        cpu.append((time.monotonic(), cpu_seconds(pid), time.process_time()))
    (began, server_began, client_began), (ended, server_ended, client_ended) = cpu
    elapsed = max(ended - began, 1e-9)
    return stopped, peak_rss, (server_ended - server_began) / elapsed, (client_ended - client_began) / elapsed


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, all threads


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
