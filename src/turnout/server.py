"""The composition root: builds the objects, binds the ports, starts and stops
the transports, and handles SIGTERM/SIGINT.

Shutdown order: stop accepting (HTTP listener closed, gRPC refuses new calls),
let in-flight requests finish within the grace period, drain the batchers,
exit 0.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket

from turnout.dataplane import DataPlane
from turnout.model.onnx import OnnxRuntime
from turnout.model.repository import ModelRepository
from turnout.model.runtime import ModelRuntime
from turnout.observability.metrics import Metrics
from turnout.registry import ModelRegistry
from turnout.settings import Settings
from turnout.transports.grpc.service import InferenceService
from turnout.transports.http2.server import Http2Server
from turnout.transports.http_server import HttpServer
from turnout.transports.rest import RestApi

log = logging.getLogger("turnout.server")


class StartupError(Exception):
    """The server cannot start (port in use, no repository); the message says why."""


def default_runtimes() -> dict[str, ModelRuntime]:
    return {"onnx": OnnxRuntime()}


class Server:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        repository = ModelRepository(settings.repository, default_runtimes())
        self.registry = ModelRegistry(repository, self.metrics, settings.shutdown_grace_seconds)
        self.dataplane = DataPlane(self.registry, self.metrics, settings.strict_readiness)
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        http_socket = bind_tcp(self.settings.http.host, self.settings.http.port, "HTTP")
        grpc_socket = bind_tcp(self.settings.grpc.host, self.settings.grpc.port, "gRPC")
        grpc_server = self._grpc_server()
        http_server = self._http_server()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        try:
            await grpc_server.start(grpc_socket)
            await http_server.start(http_socket)
            log.info(
                "serving %s: REST on http://%s:%d (metrics at /metrics), gRPC on %s:%d",
                self.settings.repository,
                self.settings.http.host,
                self.settings.http.port,
                self.settings.grpc.host,
                self.settings.grpc.port,
            )
            await self.registry.load_all()
            self.dataplane.mark_started()
            log.info("models loaded; ready=%s", self.dataplane.ready())
            await self._stop.wait()
            log.info("shutting down: finishing requests in flight (up to %ss)", self.settings.shutdown_grace_seconds)
            self.dataplane.mark_stopping()
            self.registry.flush()  # accepted requests need not wait out batching delays now
            await asyncio.gather(
                http_server.shutdown(self.settings.shutdown_grace_seconds),
                grpc_server.shutdown(self.settings.shutdown_grace_seconds),
            )
            await self.registry.close()
            log.info("stopped")
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    def _http_server(self) -> HttpServer:
        api = RestApi(self.dataplane, self.metrics, self.settings.http.max_body_bytes)
        return HttpServer(api.handle, self.settings.http.max_body_bytes)

    def _grpc_server(self) -> Http2Server:
        size = self.settings.grpc.max_message_bytes
        service = InferenceService(self.dataplane, size)
        return Http2Server(service.handle, size + 5, service.screen)  # the body: the message and its 5-byte prefix


def bind_tcp(host: str, port: int, what: str) -> socket.socket:
    """Bind before anything else starts, to report a port in use plainly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"cannot listen for {what} on {host}:{port}: the port is already in use") from None
        raise StartupError(f"cannot listen for {what} on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock
