"""The gateway's HTTP/1.1 to a replica, against replicas written as raw
socket servers that answer well, close kept connections, or misbehave:
each misbehaviour costs the replica its connection and fails only its
exchange, never the gateway's memory."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from tests.routing.remote.loop import run
from turnout.protocol.client_codec import MalformedAnswer, decode_answer, encode_request, error_text
from turnout.protocol.rest_codec import decode_request
from turnout.routing.remote.settings import RemoteSettings, read_settings, split_address
from turnout.routing.remote.wire import Pool, ReplicaFailed, request_head

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


async def with_replica(handler: Handler, scenario: Callable[[Pool], Awaitable[None]]) -> None:
    handlers: list[asyncio.Task[None]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the gateway dropped the connection, as it should
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Pool("127.0.0.1", port, max_answer_bytes=1024 * 1024)
    try:
        await asyncio.wait_for(scenario(pool), 10)
    finally:
        pool.close()
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await asyncio.sleep(0.01)  # the transports' own close callbacks


def head(pool: Pool, body: bytes = b"x") -> bytes:
    return request_head(b"POST", b"/v2/models/m/infer", pool.host_header, len(body))


def test_connections_are_kept_and_a_kept_one_the_replica_closed_is_tried_anew() -> None:
    connections = 0

    async def answer_twice_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        for _ in range(2):
            await read_request(reader)
            writer.write(OK)
            await writer.drain()
        writer.close()  # as a replica whose keep-alive ran out: the third request finds it closed

    async def scenario(pool: Pool) -> None:
        for _ in range(5):
            answer = await pool.exchange(head(pool), b"x")
            assert (answer.status, answer.body) == (200, b"ok")
            await asyncio.sleep(0.01)
        assert connections == 3  # 2 + 2 + 1 exchanges: each closed connection cost no failed exchange

    run(with_replica(answer_twice_then_close, scenario))


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2000000\r\n\r\n" + b"x" * 2_000_000, "larger than"),
        (b"HTTP/1.1 200 OK\r\n" + b"x-filler: " + b"y" * 70_000 + b"\r\n\r\n", "headers"),
        (b"NOT HTTP AT ALL\r\n\r\n", "not HTTP"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", "closed the connection"),
    ],
)
def test_an_answer_that_breaks_http_or_a_bound_fails_its_exchange_only(answer: bytes, why: str) -> None:
    async def misbehave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async def scenario(pool: Pool) -> None:
        with pytest.raises(ReplicaFailed, match=why):
            await pool.exchange(head(pool), b"x")
        assert pool.idle_connection() is None  # that connection is not kept

    run(with_replica(misbehave, scenario))


def test_bytes_nobody_asked_for_drop_the_kept_connection() -> None:
    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await asyncio.sleep(0.05)
        writer.write(OK)  # a second answer to no request
        await asyncio.sleep(0.5)

    async def scenario(pool: Pool) -> None:
        assert (await pool.exchange(head(pool), b"x")).status == 200
        await asyncio.sleep(0.2)
        assert pool.idle_connection() is None

    run(with_replica(chatty, scenario))


def test_a_refused_connection_is_the_replicas_failure() -> None:
    async def scenario() -> None:
        with socket.socket() as probe:  # a port bound and closed: nothing listens there now
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        pool = Pool("127.0.0.1", port)
        with pytest.raises(ReplicaFailed, match="cannot connect"):
            await pool.exchange(head(pool), b"x")

    run(scenario())


def test_a_request_in_binary_tensors_is_what_the_server_decodes_and_answers_read_back() -> None:
    inputs = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array([b"a", b"bc"], dtype=object)}
    body, header_length = encode_request(inputs, {"x": "FP32", "s": "BYTES"}, ["y"], {"timeout": 5})
    request = decode_request(body, header_length, "m", None)
    assert request.parameters == {"timeout": 5}
    decoded = {i.name: i.data for i in request.inputs}
    np.testing.assert_array_equal(decoded["x"], inputs["x"])
    assert list(decoded["s"]) == [b"a", b"bc"]
    raw = np.array([1.5, 2.5], dtype=np.float32).tobytes()
    header = b'{"outputs":[{"name":"y","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}},' \
             b'{"name":"z","datatype":"INT64","shape":[1],"data":[7]}]}'  # fmt: skip
    outputs = decode_answer(header + raw, len(header))
    np.testing.assert_array_equal(outputs["y"], [1.5, 2.5])
    assert outputs["z"].tolist() == [7]


@pytest.mark.parametrize(
    ("body", "length", "why"),
    [
        (b"not json", None, "not JSON"),
        (b'{"outputs": 3}', None, "outputs"),
        (b'{"outputs":[{"name":"y","datatype":"FP32","shape":[4],"parameters":{"binary_data_size":8}}]}', None,
         "does not fit"),
        (b'{"outputs":[{"name":"y","datatype":"FP32","shape":[3],"data":[1,2]}]}', None, "output 'y'"),
        (b'{"outputs":[{"name":"y","datatype":"NOPE","shape":[1],"data":[1]}]}', None, "datatype"),
        (b'{"outputs":[{"name":"y","datatype":"FP32","shape":[-1],"data":[1]}]}', None, "shape"),
        (b'{"outputs":[]}', 99, "header length"),
    ],
)  # fmt: skip
def test_a_broken_answer_is_the_replicas_fault_with_the_reason(body: bytes, length: int | None, why: str) -> None:
    with pytest.raises(MalformedAnswer, match=why):
        decode_answer(body, length)


def test_error_text_reads_a_v2_error_or_the_start_of_the_body() -> None:
    assert error_text(b'{"error": "no such input"}') == "no such input"
    assert error_text(b"<html>bad gateway</html>") == "<html>bad gateway</html>"


def test_remote_toml_names_its_replicas_one_way_and_says_what_is_wrong(tmp_path: Path) -> None:
    assert RemoteSettings(replicas=["10.0.0.1:8000"]).retries.budget_percent == 20
    assert split_address("[::1]:8000") == ("::1", 8000)
    for text, why in [
        ("", "either in 'replicas' or by 'dns'"),
        ('replicas = ["a:1"]\ndns = "b:2"\n', "one of the two"),
        ('replicas = ["nohost"]\n', "not host:port"),
        ('replicas = ["a:1"]\n[hedging]\nquantile = 2\n', "hedging.quantile"),
        ('replicas = ["a:1"]\nretry = 3\n', "retry"),
    ]:
        path = tmp_path / "remote.toml"
        path.write_text(text)
        with pytest.raises(ValueError, match=why):
            read_settings(path)


def test_an_endless_header_is_bounded_as_it_arrives() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nx-endless: ")
        for _ in range(64):  # 4 MiB of one header value, never ended
            writer.write(b"y" * 65536)
            await writer.drain()

    async def scenario(pool: Pool) -> None:
        with pytest.raises(ReplicaFailed, match="bytes of headers"):
            await pool.exchange(head(pool), b"x")

    run(with_replica(endless, scenario))


def test_a_second_answer_in_the_same_bytes_fails_the_connection_not_the_first_answer() -> None:
    async def twice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK + b"HTTP/1.1 200 OK\r\nx-injected: yes\r\ncontent-length: 2\r\n\r\nno")
        await writer.drain()
        await asyncio.sleep(0.5)

    async def scenario(pool: Pool) -> None:
        answer = await pool.exchange(head(pool), b"x")
        assert (answer.status, answer.body, b"x-injected" in answer.headers) == (200, b"ok", False)
        assert pool.idle_connection() is None  # not kept: it spoke out of turn

    run(with_replica(twice, scenario))


def test_an_interim_answer_is_not_taken_for_the_answer() -> None:
    async def interim(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n" + OK)
        await writer.drain()

    async def scenario(pool: Pool) -> None:
        with pytest.raises(ReplicaFailed, match="not a final status"):
            await pool.exchange(head(pool), b"x")

    run(with_replica(interim, scenario))
