"""Helpers for tests that run the real server: free ports, a server
process, a Redis server, a steady load, and waiting on state (the extra
ONNX models the tests need are in ``onnx_models``)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from turnout.security.keys import FileKeys, new_key
from turnout.security.principal import Role


def wait_until(condition: Callable[[], Any], what: str = "", timeout: float = 30.0, every: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something true, and return that; fail
    the test after ``timeout`` seconds, naming ``what``. For state only another
    process holds (a child server's metrics or files): there is no event to wait
    on across the process boundary, so it polls."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what or condition}"
        time.sleep(every)
    return value


async def eventually(condition: Callable[[], Any], what: str = "", timeout: float = 5.0) -> Any:
    """``wait_until`` for state on this test's own event loop (an in-process
    server's): the loop runs the server between polls, so no fixed sleep
    guesses how long it needs."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what or condition}"
        await asyncio.sleep(0.005)
    return value


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _PortTaken(Exception):
    """A child server could not bind a port picked for it."""


class ServerProcess:
    """``turnout serve`` in a child process, on free ports, stopped with SIGTERM.

    Unless ``inference_auth``, the public ports need no credential (as in the
    README's demo). Either way the admin plane has a port of its own and a key
    store holding one admin key (``admin_headers``); ``extra`` arguments come
    last, so a test's own ``--api-keys`` replaces that store. Routing state
    goes to a directory of the server's own (``state_dir``, unless given), so
    servers sharing a repository never share policies."""

    def __init__(
        self,
        repository: Path,
        *extra: str,
        log_dir: Path,
        inference_auth: bool = False,
        state_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.admin_port = free_port()
        self.log_path = log_dir / f"turnout-{self.http_port}.log"
        self.key_store = log_dir / f"keys-{self.http_port}.json"
        self.state_dir = state_dir or log_dir / f"state-{self.http_port}"
        record, self.admin_key = new_key("test-admin", [Role.ADMIN])
        FileKeys(self.key_store).add(record)
        self.command = [
            sys.executable,
            "-m",
            "turnout",
            "serve",
            str(repository),
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--admin-port",
            str(self.admin_port),
            "--api-keys",
            str(self.key_store),
            "--state-dir",
            str(self.state_dir),
            *([] if inference_auth else ["--no-inference-auth"]),
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.scheme = "https" if "--tls-cert" in extra else "http"
        # how https clients check the server (and present a client certificate): TLS tests set it
        self.verify: ssl.SSLContext | bool = True

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def admin_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.admin_port}"

    @property
    def admin_address(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.admin_key}"}  # lower case: gRPC metadata keys must be

    def admin_client(self, timeout: float = 30.0) -> httpx.Client:
        """An httpx client for the admin plane, with the admin key."""
        return httpx.Client(base_url=self.admin_url, headers=self.admin_headers, timeout=timeout, verify=self.verify)

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> ServerProcess:
        for attempt in range(3):
            with self.log_path.open("wb") as log:  # the child keeps its own descriptor
                self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
            try:
                return self._wait_started(wait_ready, timeout, last=attempt == 2)
            except _PortTaken:
                self._new_ports()
        raise AssertionError("unreachable: the last attempt raises")

    def _wait_started(self, wait_ready: bool, timeout: float, last: bool) -> ServerProcess:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        path = "/v2/health/ready" if wait_ready else "/v2/health/live"
        with httpx.Client(base_url=self.url, timeout=2.0, verify=self.verify) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    # a port picked free was taken before the child bound it (by any process's
                    # outgoing connection: those ports come from the same range): other ports
                    if not last and "the port is already in use" in self.log():
                        raise _PortTaken
                    raise RuntimeError(f"turnout exited with {self.process.returncode}:\n{self.log()}")
                try:
                    if client.get(path).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.05)  # polling a child process's port: there is no event to wait on
        self.stop()
        raise RuntimeError(f"turnout did not become ready within {timeout}s:\n{self.log()}")

    def _new_ports(self) -> None:
        """Other free ports, in the command line as in the attributes."""
        for flag, attribute in (("--http-port", "http_port"), ("--grpc-port", "grpc_port"),
                                ("--admin-port", "admin_port")):  # fmt: skip
            port = free_port()
            setattr(self, attribute, port)
            self.command[self.command.index(flag) + 1] = str(port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


class SteadyLoad:
    """Clients calling ``path`` back to back, each on its own connection,
    recording every answer's status and label (the variant or version that
    answered, as ``label_of`` reads it) with the time the request was sent."""

    def __init__(
        self,
        url: str,
        path: str,
        body_of: Callable[[int], dict[str, Any]],
        label_of: Callable[[httpx.Response], str],
        clients: int = 4,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._url, self._path, self._body_of, self._label_of = url, path, body_of, label_of
        self._headers = headers or {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answers: list[tuple[int, str, float]] = []  # (status, label, when sent)
        self.failures: list[str] = []
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, client_index: int) -> None:
        request = client_index
        with httpx.Client(base_url=self._url, timeout=30.0, headers=self._headers) as client:
            while not self._stop.is_set():
                request += 7
                sent = time.monotonic()
                try:
                    response = client.post(self._path, json=self._body_of(request))
                    status = response.status_code
                    label = self._label_of(response) if status == 200 else ""
                    detail = "" if status == 200 else f"{status} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    status, label, detail = 0, "", repr(exc)
                with self._lock:
                    self.answers.append((status, label, sent))
                    if detail:
                        self.failures.append(detail)

    def labels_since(self, moment: float) -> Counter[str]:
        with self._lock:
            return Counter(label for _, label, when in self.answers if when >= moment)

    def after(self, moment: float, count: int = 50, timeout: float = 30.0) -> Counter[str]:
        """The labels of ``count`` requests sent after ``moment`` (waiting for them)."""
        deadline = time.monotonic() + timeout
        while sum((counts := self.labels_since(moment)).values()) < count:
            assert time.monotonic() < deadline, "the load stalled"
            time.sleep(0.02)
        return counts

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Until ``count`` more answers have come."""
        deadline = time.monotonic() + timeout
        start = len(self.answers)
        while len(self.answers) < start + count:
            assert time.monotonic() < deadline, "the load stalled"
            time.sleep(0.02)


class RedisServer:
    """A real redis-server (Debian's package) on a free port, for one test.

    ``persistent``: an append-only file in ``directory``, so a restart keeps
    the streams, their groups and pending entries (as a production Redis
    would); otherwise nothing is written to disk."""

    def __init__(self, directory: Path, persistent: bool = False) -> None:
        self.port = free_port()
        self.directory = directory
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--dir", str(self.directory), *durability]  # fmt: skip
        log = (self.directory / f"redis-{self.port}.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.02)  # polling a child's port: there is no event to wait on
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def stop(self) -> None:
        """SIGTERM: Redis finishes its append-only file and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
