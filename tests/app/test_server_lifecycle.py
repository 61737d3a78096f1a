"""The server stops whatever it started, whatever fails: a start that fails
after the listeners are up closes them (their ports are free again, in the
same process), stops the admission probe and unloads what loaded; a normal
stop does the same after the drain."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest

from tests.support import free_port
from turnout.app import Server
from turnout.settings import AdminSettings, GrpcSettings, HttpSettings, RoutingSettings, SecuritySettings, Settings


def settings(repository: Path, tmp_path: Path) -> Settings:
    return Settings(
        repository=repository,
        http=HttpSettings(port=free_port()),
        grpc=GrpcSettings(port=free_port()),
        admin=AdminSettings(port=free_port()),
        security=SecuritySettings(inference_auth=False),
        routing=RoutingSettings(state_dir=tmp_path),
    )


def ports_are_free(server: Server) -> bool:
    """Each port can be bound again (SO_REUSEADDR, as the server binds): nothing listens on it."""
    for port in (server.settings.http.port, server.settings.grpc.port, server.settings.admin.port):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port or 0))
            except OSError:
                return False
    return True


def test_a_start_that_fails_after_the_listeners_are_up_stops_them(example_repo: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        server = Server(settings(example_repo, tmp_path))
        answered = asyncio.Event()

        async def loads_then_fails(lazy: bool = False) -> None:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.settings.http.port}") as client:
                assert (await client.get("/v2/health/live")).status_code == 200  # the listeners are up
            answered.set()
            raise RuntimeError("a part that starts after the listeners failed")

        server.registry.load_all = loads_then_fails  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="failed"):
            await server.serve()
        assert answered.is_set()
        assert ports_are_free(server)
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as client:
                await client.get(f"http://127.0.0.1:{server.settings.http.port}/v2/health/live")

    asyncio.run(scenario())


def test_a_normal_stop_drains_then_releases_everything(example_repo: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        server = Server(settings(example_repo, tmp_path))
        serving = asyncio.create_task(server.serve())
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.settings.http.port}") as client:
            for _ in range(400):
                try:
                    if (await client.get("/v2/health/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.025)  # the server's port from outside: nothing to wait on but the answer
            assert server.registry.versions("diabetes") == [1]
        server.request_stop()
        await serving
        assert ports_are_free(server)
        assert server.registry.versions("diabetes") == []  # unloaded: the batchers drained and closed

    asyncio.run(scenario())
