"""The feature lookup's Redis reads against a real redis-server: lookups made
together go together and each gets its own keys' fields; a failure reaches
every lookup that waited on it; a restarted Redis is read again."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
import redis
import redis.exceptions

from tests.support import RedisServer, free_port
from turnout.pipeline import redis_wire
from turnout.pipeline.redis_store import RedisHashes

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]


def test_lookups_made_together_each_get_their_own_fields(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        for i in range(100):
            client.hset(f"e:{i}", mapping={"a": i, "b": -i} if i % 10 else {"a": i})  # every tenth lacks b
        client.close()

        async def scenario() -> None:
            hashes = RedisHashes(server.url, ["a", "b"], timeout=1.0)
            groups = [[f"e:{i}", f"e:{i + 50}"] for i in range(50)] + [["nobody"]]
            answers = await asyncio.gather(*(hashes.read(keys) for keys in groups))
            for keys, found in zip(groups, answers, strict=True):
                expected = [[str(int(k[2:])).encode(), None if int(k[2:]) % 10 == 0 else str(-int(k[2:])).encode()]
                            if k != "nobody" else [None, None] for k in keys]  # fmt: skip
                assert found == expected
            info = redis.Redis.from_url(server.url).info("commandstats")["cmdstat_hmget"]
            assert info["calls"] == 101
            assert await hashes.read([]) == []  # nothing to ask: no round trip, no wait
            await hashes.aclose()

        asyncio.run(scenario())


def test_a_failure_reaches_every_waiting_lookup_and_a_restart_is_read_again(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    try:
        redis.Redis.from_url(server.url).hset("e:1", mapping={"a": 1})

        async def scenario() -> None:
            hashes = RedisHashes(server.url, ["a"], timeout=1.0)
            assert await hashes.read(["e:1"]) == [[b"1"]]  # a connection in the pool now
            server.stop()
            outcomes = await asyncio.gather(*(hashes.read(["e:1"]) for _ in range(5)), return_exceptions=True)
            assert all(isinstance(o, (redis.exceptions.ConnectionError, OSError)) for o in outcomes), outcomes
            server.start()
            redis.Redis.from_url(server.url).hset("e:1", mapping={"a": 2})
            assert await asyncio.gather(*(hashes.read(["e:1"]) for _ in range(5))) == [[[b"2"]]] * 5
            await hashes.aclose()

        asyncio.run(scenario())
    finally:
        server.stop()


def test_a_store_that_stops_answering_times_out_and_the_next_lookup_reads_afresh(tmp_path: Path) -> None:
    """Redis paused (CLIENT PAUSE holds every read) takes the timeout, not
    forever; a half-read connection is not reused once it answers again."""
    with RedisServer(tmp_path) as server:
        admin = redis.Redis.from_url(server.url)
        admin.hset("e:1", mapping={"a": 1})

        async def scenario() -> None:
            hashes = RedisHashes(server.url, ["a"], timeout=0.3)
            assert await hashes.read(["e:1"]) == [[b"1"]]
            admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
            began = asyncio.get_running_loop().time()
            with pytest.raises(TimeoutError):
                await hashes.read(["e:1"])
            assert 0.25 < asyncio.get_running_loop().time() - began < 1.0
            await asyncio.sleep(1.5)  # the pause ends; the stale answer is on the dropped connection
            admin.hset("e:1", mapping={"a": 2})
            assert await hashes.read(["e:1"]) == [[b"2"]]
            await hashes.aclose()

        asyncio.run(scenario())


def test_the_url_s_password_user_and_database_are_used_and_refusals_are_named(tmp_path: Path) -> None:
    """The connection is turnout's own (redis_wire.py), so what redis-py did
    from the URL is tested here: AUTH with a password alone and with an ACL
    user, SELECT of the database, a wrong password refused as such, and an
    error answer (a key that is not a hash) raised, not returned as fields."""
    with RedisServer(tmp_path) as server:
        admin = redis.Redis.from_url(server.url.replace("/0", "/3"))
        admin.hset("e:1", mapping={"a": 7})
        admin.set("not-a-hash", "x")
        admin.execute_command("ACL", "SETUSER", "reader", "on", ">reader-pw", "~*", "+hmget", "+select")
        admin.config_set("requirepass", "s3cret")
        base = f"127.0.0.1:{server.port}/3"

        async def scenario() -> None:
            for url in (f"redis://:s3cret@{base}", f"redis://reader:reader-pw@{base}"):
                hashes = RedisHashes(url, ["a"], timeout=1.0)
                assert await hashes.read(["e:1", "e:2"]) == [[b"7"], [None]], url
                with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
                    await hashes.read(["not-a-hash"])
                assert await hashes.read(["e:1"]) == [[b"7"]]  # the connection still answers in step
                # sent together in one round trip, the bad key fails only its own lookup
                together = await asyncio.gather(*(hashes.read([key]) for key in ("e:1", "not-a-hash", "e:1", "e:2")),
                                                return_exceptions=True)  # fmt: skip
                assert together[0] == together[2] == [[b"7"]] and together[3] == [[None]], together
                assert isinstance(together[1], redis.exceptions.ResponseError), together
                await hashes.aclose()
            wrong = RedisHashes(f"redis://:wrong@{base}", ["a"], timeout=1.0)
            with pytest.raises(redis.exceptions.AuthenticationError, match="set-up"):
                await wrong.read(["e:1"])
            await wrong.aclose()
            unselected = RedisHashes(f"redis://:s3cret@127.0.0.1:{server.port}/0", ["a"], timeout=1.0)
            assert await unselected.read(["e:1"]) == [[None]]  # database 0 holds no e:1
            await unselected.aclose()

        asyncio.run(scenario())


def test_tls_and_unix_socket_urls_reach_redis(tmp_path: Path) -> None:
    """``rediss://`` (verified against the CA given in ``ssl_ca_certs``, or
    not verified with ``ssl_cert_reqs=none``; refused when the CA is not the
    server's) and ``unix://`` with a database, against a real redis-server
    listening on TLS and on a Unix socket only."""
    ca, cert, key = _certificates(tmp_path)
    tls_port, sock = free_port(), tmp_path / "redis.sock"
    command = ["redis-server", "--port", "0", "--tls-port", str(tls_port), "--tls-cert-file", str(cert),
               "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
               "--unixsocket", str(sock), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)  # a child's socket file: no event to wait on
        admin = redis.Redis(unix_socket_path=str(sock), db=2)
        admin.hset("e:1", mapping={"a": 5})

        async def scenario() -> None:
            for url in (f"rediss://127.0.0.1:{tls_port}/2?ssl_ca_certs={ca}",
                        f"rediss://127.0.0.1:{tls_port}/2?ssl_cert_reqs=none",
                        f"unix://{sock}?db=2"):  # fmt: skip
                hashes = RedisHashes(url, ["a"], timeout=2.0)
                assert await hashes.read(["e:1"]) == [[b"5"]], url
                await hashes.aclose()
            other_ca, _, _ = _certificates(tmp_path / "other")
            untrusted = RedisHashes(f"rediss://127.0.0.1:{tls_port}/2?ssl_ca_certs={other_ca}", ["a"], timeout=2.0)
            with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusted.read(["e:1"])
            await untrusted.aclose()

        asyncio.run(scenario())
    finally:
        process.terminate()
        process.wait(10)


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for 127.0.0.1 with its key (openssl)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, request = directory / "server.pem", directory / "server.key", directory / "server.csr"
    openssl = ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj"]
    subprocess.run([*openssl, "/CN=test CA", "-x509", "-days", "2", "-keyout", ca_key, "-out", ca], check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run([*openssl, "/CN=127.0.0.1", "-keyout", key, "-out", request], check=True, capture_output=True)
    extensions = directory / "san.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    subprocess.run(["openssl", "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                    "-days", "2", "-extfile", extensions, "-out", cert], check=True, capture_output=True)  # fmt: skip
    return ca, cert, key


class _Misbehaving(asyncio.Protocol):
    """A fake Redis for what a real one never does: each command answered
    with the connection's number, and on the first connection a second
    answer nobody asked for; with ``flood``, an answer that never ends."""

    connections = 0

    def __init__(self, flood: bool) -> None:
        self._flood = flood
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        type(self).connections += 1
        self._number = type(self).connections
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        if self._flood:
            self._transport.write(b"*1\r\n$999999999\r\n" + b"x" * (2 * 1024 * 1024))
            return
        answer = b"*1\r\n$1\r\n%d\r\n" % self._number
        self._transport.write(answer + (answer if self._number == 1 else b""))


def test_a_store_that_breaks_the_protocol_loses_its_connection_not_memory_or_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An answer nobody asked for never becomes the next lookup's (another
    entity's features): the connection is dropped and the next lookup reads
    on a new one. An answer past the size bound fails the lookup at once,
    before the timeout, instead of growing the server's memory."""
    monkeypatch.setattr(redis_wire, "MAX_ANSWER_BYTES", 1024 * 1024)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        _Misbehaving.connections = 0
        extra = await loop.create_server(lambda: _Misbehaving(flood=False), "127.0.0.1", 0)
        hashes = RedisHashes(f"redis://127.0.0.1:{extra.sockets[0].getsockname()[1]}/0", ["a"], timeout=5.0)
        try:
            first = await hashes.read(["e:1"])  # the stray answer may come with it (refused) or after it
        except redis.exceptions.ConnectionError as exc:
            assert "2 answers to 1 commands" in str(exc)
        else:
            assert first == [[b"1"]]
            await asyncio.sleep(0.1)  # the stray answer arrives with nothing waiting
        assert await hashes.read(["e:1"]) == [[b"2"]]  # a new connection's answer, never the stray "1"
        await hashes.aclose()
        extra.close()
        flood = await loop.create_server(lambda: _Misbehaving(flood=True), "127.0.0.1", 0)
        hashes = RedisHashes(f"redis://127.0.0.1:{flood.sockets[0].getsockname()[1]}/0", ["a"], timeout=5.0)
        began = loop.time()
        with pytest.raises(redis.exceptions.ConnectionError, match="answer passed 1 MiB"):
            await hashes.read(["e:1"])
        assert loop.time() - began < 2.0
        await hashes.aclose()
        flood.close()

    asyncio.run(scenario())
