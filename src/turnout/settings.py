"""Server settings: read once by the CLI, passed inward as frozen objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from turnout.observability.tracing import TracingSettings
from turnout.overload.admission import AdmissionSettings
from turnout.protocol.limits import InputLimits
from turnout.security.jwt_auth import JwtSettings
from turnout.security.ratelimit import Rate
from turnout.security.tls import TlsSettings
from turnout.streams.service import StreamSettings
from turnout.transports.http import HttpLimits
from turnout.transports.http2.limits import Http2Limits


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
class EdgeSettings:
    """What one client may cost the server, at every listener (the README's
    Limits): connections (the longest-idle closed first when full), request
    bodies held in memory by all connections together, each protocol's own
    limits, and admission control for inference."""

    max_connections: int = 4096  # per listener group: the public ports, and the admin port apart
    max_buffered_body_bytes: int = 256 * 1024 * 1024
    http: HttpLimits = field(default_factory=HttpLimits)
    http2: Http2Limits = field(default_factory=Http2Limits)
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin plane's own listener (REST and gRPC on one port); ``port``
    None: no admin listener. ``on_public_port``: also serve the admin routes
    on the public ports (still only to the admin role)."""

    host: str = "127.0.0.1"
    port: int | None = 8082
    on_public_port: bool = False


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    # off: inference and metadata without credentials (a local demo; the log says so)
    inference_auth: bool = True
    key_store: Path | None = None  # API keys: a .json file or a SQLite .db
    jwt: JwtSettings | None = None
    rate_limit: Rate | None = None  # per credential, when its key sets none
    audit_log: Path | None = None
    audit_max_bytes: int = 64 << 20  # rotated (FILE.1 .. FILE.audit_keep) before it passes this
    audit_keep: int = 5
    tls: TlsSettings | None = None  # for every listener
    # load models whose files run code when loaded, if their model.toml says trusted
    allow_trusted_models: bool = False


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    """``poll_seconds``: how often the repository is scanned for new, changed
    and removed models and versions; None: explicit mode (load and unload
    only through the API). The rest: memory and scale to zero."""

    poll_seconds: float | None = 2.0
    # scale to zero: at most this many models / bytes (estimated) in memory, least recently
    # used unloaded first; unused this long, unloaded; lazy: none loaded at start. An unloaded
    # model loads again on its next request, which waits up to load_timeout_seconds.
    max_models: int | None = None
    memory_budget_bytes: int | None = None
    idle_unload_seconds: float | None = None
    lazy: bool = False
    load_timeout_seconds: float = 60.0
    # models followed in the MLflow Model Registry ("models:/fraud@champion"), and its tracking URI
    # (None: MLFLOW_TRACKING_URI); polled every poll_seconds (2 s in explicit mode)
    mlflow_models: tuple[str, ...] = ()
    mlflow_uri: str | None = None


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    """Traffic control. ``state_dir`` holds the policies, their event log, A/B
    feedback and the shadow disagreement log (None: ``.turnout`` in the repository)."""

    state_dir: Path | None = None
    shadow_queue: int = 1000  # shadow copies waiting; beyond, a copy is dropped (and counted)
    # copies in flight at most: with a slow shadow on the server's core, 2 raised the primary's p99 by 40%, 1 by 5%
    shadow_workers: int = 1
    shadow_log_every: int = 100  # log one disagreement in this many
    rollout_tick_seconds: float = 0.25  # how often running rollouts are judged
    # redis://...: the policies, their rollouts and event log shared by replicas (None: in state_dir, this process's)
    state_url: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    repository: Path
    http: HttpSettings = field(default_factory=HttpSettings)
    grpc: GrpcSettings = field(default_factory=GrpcSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    edge: EdgeSettings = field(default_factory=EdgeSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    limits: InputLimits = field(default_factory=InputLimits)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    access_log: bool = False  # one record per inference request on the turnout.access logger
    tracing: TracingSettings = field(default_factory=TracingSettings)
    alert_webhook: str | None = None  # drift alerts, posted in Alertmanager's webhook format
    payload_log: Path | None = None  # a directory for sampled inputs and outputs (JSON Lines, rotated)
    payload_sample: float = 0.01  # the share of requests written there
    # redis://...: the response cache's level shared by replicas, for models with [cache] shared = true
    cache_url: str | None = None
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)
    stream: StreamSettings = field(default_factory=StreamSettings)
    # ready only when every model version is ready, as the V2 protocol says;
    # off, the server is ready once loading is done, whatever failed
    strict_readiness: bool = True
    # how long shutdown waits for requests in flight and queued
    shutdown_grace_seconds: float = 30.0

    @property
    def state_dir(self) -> Path:
        return self.routing.state_dir or self.repository / ".turnout"
