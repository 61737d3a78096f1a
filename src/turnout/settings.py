"""Server settings: read once by the CLI, passed inward as frozen objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class GrpcSettings:
    host: str = "127.0.0.1"
    port: int = 8081
    max_message_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    repository: Path
    http: HttpSettings = field(default_factory=HttpSettings)
    grpc: GrpcSettings = field(default_factory=GrpcSettings)
    # ready only when every model version is ready, as the V2 protocol says;
    # off, the server is ready once loading is done, whatever failed
    strict_readiness: bool = True
    # how long shutdown waits for requests in flight and queued
    shutdown_grace_seconds: float = 30.0
