"""TLS for the REST, gRPC and admin listeners, from certificate and key files;
mutual TLS when a client CA is given (clients without a certificate signed by
it are refused during the handshake).

TLS 1.2 at least. ALPN offers ``h2`` on the gRPC listener (gRPC clients
require it), ``http/1.1`` on the REST one, and both on the admin plane's.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TlsSettings:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None  # set: mutual TLS, a client certificate is required

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None


def server_context(settings: TlsSettings, *alpn: str) -> ssl.SSLContext:
    """A server-side context; ``ValueError`` with the file at fault if one cannot be used."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"TLS: cannot use the certificate {settings.cert_file} with the key {settings.key_file}: {_why(exc)}"
        ) from None
    if settings.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=settings.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"TLS: cannot use the client CA {settings.client_ca_file}: {_why(exc)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(list(alpn))
    return context


def _why(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
