"""The load generator's own gRPC client against a real grpcio server (the
server MLServer runs on): many concurrent calls with messages larger than
grpcio's 64 KiB default windows, statuses, and a server that goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest

from turnout.bench.grpc_client import GrpcCallError, GrpcTarget


async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    if request == b"fail":
        await context.abort(grpc.StatusCode.UNAVAILABLE, "asked to fail: 100% sure")
    return request[::-1]


@asynccontextmanager
async def grpcio_server() -> AsyncIterator[tuple[int, grpc.aio.Server]]:
    handler = grpc.method_handlers_generic_handler("test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", -1)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port, server
    finally:
        await server.stop(None)


def test_concurrent_calls_with_large_messages() -> None:
    async def scenario() -> None:
        async with grpcio_server() as (port, _):
            target = GrpcTarget(f"127.0.0.1:{port}")
            connection = await target.connect()
            block = target.header_block("/test.Echo/Echo")
            messages = [bytes([i]) * 200_000 + b"end" for i in range(40)]
            answers = await asyncio.gather(*(connection.call(block, m) for m in messages))
            assert answers == [m[::-1] for m in messages]
            connection.close()

    asyncio.run(scenario())


def test_statuses_and_a_server_that_stops() -> None:
    async def scenario() -> None:
        async with grpcio_server() as (port, server):
            target = GrpcTarget(f"127.0.0.1:{port}")
            connection = await target.connect()
            with pytest.raises(GrpcCallError) as caught:
                await connection.call(target.header_block("/test.Echo/Echo"), b"fail")
            assert caught.value.kind == "grpc_UNAVAILABLE"
            assert "100%25 sure" in caught.value.message  # as sent: percent-encoded
            with pytest.raises(GrpcCallError) as caught:
                await connection.call(target.header_block("/test.Echo/Missing"), b"x")
            assert caught.value.kind == "grpc_UNIMPLEMENTED"
            await server.stop(None)
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(connection.call(target.header_block("/test.Echo/Echo"), b"x"), 5)
            connection.close()

    asyncio.run(scenario())
