"""Server TLS contexts on real sockets: TLS, mutual TLS, and clear refusals of
unusable files."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from tests.security.certs import Pki, make_pki
from turnout.security.tls import TlsSettings, server_context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _client(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca)
    context.set_alpn_protocols(["h2"])
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str | None:
    """Connect, exchange a line; the ALPN protocol agreed, or raise what the client saw."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await reader.readline())
            await writer.drain()
        except (ssl.SSLError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="localhost")
        writer.write(b"hello\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        protocol = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        writer.close()
        if line != b"hello\n":
            raise ConnectionError("the server closed the connection")
        return protocol  # type: ignore[no-any-return]
    finally:
        listener.close()
        await listener.wait_closed()


def test_tls_serves_with_the_certificate_and_offers_the_alpn_protocol(pki: Pki) -> None:
    server = server_context(TlsSettings(pki.server.cert, pki.server.key), "h2")
    assert asyncio.run(_handshake(server, _client(pki))) == "h2"


def test_mutual_tls_admits_a_client_certificate_signed_by_the_ca(pki: Pki) -> None:
    server = server_context(TlsSettings(pki.server.cert, pki.server.key, pki.ca), "h2")
    assert asyncio.run(_handshake(server, _client(pki, pki.client.cert, pki.client.key))) == "h2"


@pytest.mark.parametrize("which", ["none", "stranger"])
def test_mutual_tls_refuses_clients_without_a_trusted_certificate(pki: Pki, which: str) -> None:
    server = server_context(TlsSettings(pki.server.cert, pki.server.key, pki.ca), "h2")
    client = _client(pki) if which == "none" else _client(pki, pki.stranger_client.cert, pki.stranger_client.key)
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        asyncio.run(_handshake(server, client))


def test_unusable_files_are_named_in_the_error(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot use the certificate .*missing\.crt"):
        server_context(TlsSettings(tmp_path / "missing.crt", pki.server.key), "h2")
    with pytest.raises(ValueError, match="cannot use the certificate"):
        server_context(TlsSettings(pki.server.cert, pki.client.key), "h2")  # a key that does not match
    bogus = tmp_path / "bogus-ca.crt"
    bogus.write_text("not a certificate")
    with pytest.raises(ValueError, match="cannot use the client CA"):
        server_context(TlsSettings(pki.server.cert, pki.server.key, bogus), "h2")
