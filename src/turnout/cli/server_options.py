"""Every setting of ``turnout serve``, declared once: its place in the
configuration file, its environment variable, its flag (the common ones),
its default. ``settings.py`` holds what they become; ``serve.py`` builds it.

The protocol limits without flags (HTTP/2 flood limits, admission tuning...)
are declared from their dataclasses' own fields, so a field added there is a
setting here without a second edit: ``[limits.http2] resets_per_second``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from turnout.cli.arguments import (
    boolean,
    number,
    port,
    positive_int,
    positive_seconds,
    rate,
    rate_text,
    seconds,
    share,
    size,
)
from turnout.cli.options import Option
from turnout.overload.admission import AdmissionSettings
from turnout.protocol.limits import DEFAULT_LIMITS, InputLimits
from turnout.settings import EdgeSettings, RoutingSettings
from turnout.streams.service import StreamSettings
from turnout.transports.http import HttpLimits
from turnout.transports.http2.limits import Http2Limits

_EDGE, _HTTP, _HTTP2, _ADMISSION = EdgeSettings(), HttpLimits(), Http2Limits(), AdmissionSettings()
_ROUTING, _STREAM = RoutingSettings(), StreamSettings()

REPOSITORY = Option("repository", "repository", None, parse=Path, help="the model repository directory")

SERVER = [
    Option("http.host", "host", "127.0.0.1", "--host", help="address for REST (and gRPC, unless grpc.host)"),
    Option("http.port", "http_port", 8080, "--http-port", port, help="REST port"),
    Option("http.max_body_bytes", "max_body_bytes", 64 * 1024 * 1024, "--max-body-bytes", positive_int,
           help="largest request body or gRPC message, in bytes"),
    Option("grpc.host", "grpc_host", None, "--grpc-host", help="address for gRPC (unset: http.host)"),
    Option("grpc.port", "grpc_port", 8081, "--grpc-port", port, help="gRPC port"),
    Option("admin.enabled", "no_admin", None, "--no-admin", kind="switch", invert=True,
           help="no admin plane listener"),
    Option("admin.host", "admin_host", "127.0.0.1", "--admin-host", help="admin plane address"),
    Option("admin.port", "admin_port", 8082, "--admin-port", port, help="admin plane port"),
    Option("admin.on_public_port", "admin_on_public_port", None, "--admin-on-public-port", kind="switch",
           help="also serve the admin routes on the public REST and gRPC ports (admin role still required)"),
    Option("lifecycle.strict_readiness", "no_strict_readiness", None, "--no-strict-readiness", kind="switch",
           invert=True, help="report ready once loading is done even if some model failed"),
    Option("lifecycle.shutdown_grace", "shutdown_grace", 30.0, "--shutdown-grace", seconds,
           help="seconds to finish requests on shutdown"),
    Option("lifecycle.model_control", "model_control", "poll", "--model-control", choices=("poll", "explicit"),
           help="poll: load new and changed versions and unload removed ones as the repository changes; "
           "explicit: only through the repository API"),
    Option("lifecycle.poll_interval", "poll_interval", 2.0, "--poll-interval", seconds,
           help="seconds between repository scans"),
    Option("lifecycle.max_loaded_models", "max_loaded_models", None, "--max-loaded-models", positive_int,
           help="at most this many models in memory (least recently used unloaded first)"),
    Option("lifecycle.memory_budget", "memory_budget", None, "--memory-budget", size,
           help="at most this much model memory, e.g. 2G (estimated: artifact size x instances; LRU out)"),
    Option("lifecycle.idle_unload", "idle_unload", None, "--idle-unload", seconds,
           help="unload a model unused this many seconds (scale to zero)"),
    Option("lifecycle.lazy_load", "lazy_load", None, "--lazy-load", kind="switch",
           help="load no model at start: each on its first request"),
    Option("lifecycle.load_timeout", "load_timeout", 60.0, "--load-timeout", seconds,
           help="how long a request for a model out of memory waits for it to load"),
    Option("lifecycle.registry", "registry", None, "--registry", choices=("mlflow",),
           help="also serve models from a model registry: mlflow (with --mlflow-model, repeated)"),
    Option("lifecycle.mlflow_models", "mlflow_model", (), "--mlflow-model", kind="list", metavar="models:/NAME@ALIAS",
           help="a registered model to serve by alias; it follows the alias as it moves; repeat"),
    Option("lifecycle.mlflow_uri", "mlflow_uri", None, "--mlflow-uri", secret=True,
           help="the MLflow tracking URI (unset: $MLFLOW_TRACKING_URI)"),
    Option("routing.state_dir", "state_dir", None, "--state-dir", Path,
           help="where routing policies, their event log, A/B feedback and shadow disagreements are kept "
           "(unset: REPOSITORY/.turnout)"),
    Option("routing.state_url", "state", None, "--state", secret=True, metavar="redis://HOST:PORT/DB",
           help="keep routing policies, rollouts and their event log in Redis, shared by every replica given the "
           "same URL: a change through any replica applies on all, one replica at a time moves rollouts on"),
    Option("routing.shadow_queue", "shadow_queue", _ROUTING.shadow_queue, "--shadow-queue", positive_int,
           help="shadow copies waiting to run; beyond this a copy is dropped and counted"),
    Option("routing.shadow_workers", "shadow_workers", _ROUTING.shadow_workers, "--shadow-workers", positive_int,
           help="shadow copies run at once at most; with more requests than this in flight, copies are skipped"),
    Option("routing.shadow_log_every", "shadow_log_every", _ROUTING.shadow_log_every, "--shadow-log-every",
           positive_int, help="log one shadow disagreement in this many"),
    Option("routing.rollout_tick", "rollout_tick", _ROUTING.rollout_tick_seconds, "--rollout-tick", positive_seconds,
           help="seconds between judgements of running rollouts"),
    Option("streams.url", "stream", None, "--stream", metavar="redis://HOST:PORT/DB", secret=True,
           help="also answer inference requests from Redis Streams: one request stream per model"),
    Option("streams.group", "stream_group", _STREAM.group, "--stream-group", help="the deployment's consumer group"),
    Option("streams.consumer", "stream_consumer", None, "--stream-consumer",
           help="this process's name in the group (unset: HOSTNAME-PID)"),
    Option("streams.max_deliveries", "stream_max_deliveries", _STREAM.max_deliveries, "--stream-max-deliveries",
           positive_int, help="an entry that fails this many deliveries goes to the dead-letter stream"),
    Option("streams.claim_idle", "stream_claim_idle", _STREAM.claim_idle_seconds, "--stream-claim-idle", seconds,
           help="seconds an entry may stay unacknowledged before a live consumer takes it over"),
    Option("streams.block", "stream_block", _STREAM.block_seconds, "--stream-block", positive_seconds,
           help="seconds one read of the streams waits for entries"),
    Option("observability.log_level", "log_level", "info", "--log-level",
           choices=("debug", "info", "warning", "error"), help="the server log's threshold"),
    Option("observability.log_format", "log_format", "text", "--log-format", choices=("text", "json"),
           help="json: one object per line"),
    Option("observability.access_log", "access_log", None, "--access-log", kind="switch",
           help="log every inference request: request id, model, version, variant, protocol, status, latency"),
    Option("observability.otlp_endpoint", "otlp_endpoint", None, "--otlp-endpoint", secret=True,
           help="send OpenTelemetry traces over OTLP/HTTP, e.g. http://localhost:4318/v1/traces"),
    Option("observability.service_name", "service_name", "turnout", "--service-name",
           help="the service name traces carry"),
    Option("observability.trace_sample", "trace_sample", 1.0, "--trace-sample", share,
           help="share of requests traced when the client's are not (0-1)"),
    Option("observability.alert_webhook", "alert_webhook", None, "--alert-webhook", secret=True,
           help="post drift and SLO alerts (firing, then resolved) here, in Alertmanager's webhook format"),
    Option("observability.payload_log", "payload_log", None, "--payload-log", Path,
           help="write sampled requests' inputs and outputs here (JSONL)"),
    Option("observability.payload_sample", "payload_sample", 0.01, "--payload-sample", share,
           help="the share of requests written to the payload log"),
    Option("cache.redis", "cache_redis", None, "--cache-redis", secret=True, metavar="redis://HOST:PORT/DB",
           help="a Redis for the response cache's shared level: models with [cache] shared = true keep their "
           "answers there too, for every replica given the same URL"),
]  # fmt: skip

SECURITY = [
    Option("security.inference_auth", "no_inference_auth", None, "--no-inference-auth", kind="switch", invert=True,
           help="serve inference, metadata and metrics without credentials: a local demo only"),
    Option("security.api_keys", "api_keys", None, "--api-keys", Path,
           help="API key store: a .json file or a SQLite .db"),
    Option("security.jwt_secret_file", "jwt_secret_file", None, "--jwt-secret-file", Path,
           help="accept HS256 JWTs signed with the secret in this file"),
    Option("security.jwt_public_key", "jwt_public_key", None, "--jwt-public-key", Path,
           help="accept RS256/ES256 JWTs: a PEM public key"),
    Option("security.jwt_jwks", "jwt_jwks", None, "--jwt-jwks", Path, help="accept RS256/ES256 JWTs: a JWKS file"),
    Option("security.jwt_issuer", "jwt_issuer", None, "--jwt-issuer", help="the JWT issuer (iss) to require"),
    Option("security.jwt_audience", "jwt_audience", None, "--jwt-audience", help="the JWT audience (aud) to require"),
    Option("security.jwt_roles_claim", "jwt_roles_claim", "roles", "--jwt-roles-claim",
           help="the claim listing a token's roles"),
    Option("security.rate_limit", "rate_limit", None, "--rate-limit", rate, metavar="RATE[/BURST]", show=rate_text,
           help="requests per second per credential (burst default: the rate), unless its key sets its own"),
    Option("security.audit_log", "audit_log", None, "--audit-log", Path,
           help="append admin actions and auth failures here"),
    Option("security.audit_log_max_bytes", "audit_log_max_bytes", 64 << 20, "--audit-log-max-bytes", positive_int,
           help="rotate the audit log before it passes this size"),
    Option("security.audit_log_keep", "audit_log_keep", 5, "--audit-log-keep", positive_int,
           help="rotated audit logs kept, FILE.1 to FILE.N"),
    Option("security.tls_cert", "tls_cert", None, "--tls-cert", Path, help="serve TLS with this certificate (PEM)"),
    Option("security.tls_key", "tls_key", None, "--tls-key", Path, help="the certificate's private key (PEM)"),
    Option("security.tls_client_ca", "tls_client_ca", None, "--tls-client-ca", Path,
           help="mutual TLS: require client certificates signed by this CA"),
    Option("security.allow_trusted_models", "allow_trusted_models", None, "--allow-trusted-models", kind="switch",
           help="load models whose files run code when loaded (pickles, class paths) if their model.toml "
           "says trusted = true"),
]  # fmt: skip

LIMITS = [
    Option("limits.max_tensor_elements", "max_tensor_elements", DEFAULT_LIMITS.max_tensor_elements,
           "--max-tensor-elements", positive_int, help="most elements in one input tensor"),
    Option("limits.max_bytes_element", "max_bytes_element", DEFAULT_LIMITS.max_bytes_element, "--max-bytes-element",
           positive_int, help="largest BYTES element, in bytes"),
    Option("limits.request_read_timeout", "request_read_timeout", 30.0, "--request-read-timeout", seconds,
           help="seconds a request may take to arrive, first byte to last, before REST answers 408 and gRPC "
           "resets the stream"),
    Option("limits.max_connections", "max_connections", _EDGE.max_connections, "--max-connections", positive_int,
           help="open connections on the public ports; when full the longest-idle one is closed"),
    Option("limits.max_buffered_bytes", "max_buffered_bytes", _EDGE.max_buffered_body_bytes, "--max-buffered-bytes",
           positive_int, help="request bodies held in memory by all connections together; past it 503"),
    Option("limits.max_header_bytes", "max_header_bytes", _HTTP.max_head_bytes, "--max-header-bytes", positive_int,
           help="a request's headers, HTTP/1.1 (431) and HTTP/2"),
    Option("limits.max_headers", "max_headers", _HTTP.max_headers, "--max-headers", positive_int,
           help="header fields in one HTTP/1.1 request (431)"),
    Option("limits.head_timeout", "head_timeout", _HTTP.head_timeout, "--head-timeout", positive_seconds,
           help="seconds for a request's line and headers to arrive (408), and for an HTTP/2 client's preface"),
    Option("limits.keep_alive_timeout", "keep_alive_timeout", _HTTP.keep_alive_timeout, "--keep-alive-timeout",
           positive_seconds, help="seconds an HTTP/1.1 connection may idle between requests"),
    Option("limits.idle_timeout", "idle_timeout", _HTTP2.idle_timeout, "--idle-timeout", positive_seconds,
           help="seconds an HTTP/2 connection may have no open stream"),
    Option("limits.write_timeout", "write_timeout", _HTTP.write_timeout, "--write-timeout", positive_seconds,
           help="seconds a client may leave answers unread before it is cut off"),
    Option("limits.max_concurrent_streams", "max_concurrent_streams", _HTTP2.max_concurrent_streams,
           "--max-concurrent-streams", positive_int, help="open streams on one HTTP/2 connection"),
    Option("limits.admission.enabled", "no_admission", None, "--no-admission", kind="switch", invert=True,
           help="never shed inference at the door (admission control off)"),
    Option("limits.admission.target", "admission_target", _ADMISSION.target, "--admission-target", positive_seconds,
           help="seconds of queueing (event-loop lag and time in flight) before inference is shed with 503"),
]  # fmt: skip

# the protocol limits' fields that a flag above already sets
_FLAGGED = {
    "http": {"max_head_bytes", "max_headers", "head_timeout", "read_timeout", "keep_alive_timeout", "write_timeout"},
    "http2": {"max_header_bytes", "preface_timeout", "read_timeout", "idle_timeout", "write_timeout",
              "max_concurrent_streams"},
    "admission": {"enabled", "target"},
    "inputs": {"max_tensor_elements", "max_bytes_element"},
}  # fmt: skip
FINE: dict[str, Any] = {"http": _HTTP, "http2": _HTTP2, "admission": _ADMISSION, "inputs": InputLimits()}


def _parser_for(default: Any) -> Callable[[str], Any]:
    if isinstance(default, bool):
        return boolean
    if isinstance(default, int):
        return positive_int
    return number


def fine_limits() -> list[Option]:
    """The limits without flags, from the dataclasses' fields: file and environment only."""
    options = []
    for section, defaults in FINE.items():
        for field in dataclasses.fields(defaults):
            if field.name in _FLAGGED[section] or not field.init:
                continue
            default = getattr(defaults, field.name)
            options.append(
                Option(
                    f"limits.{section}.{field.name}", f"{section}__{field.name}", default, parse=_parser_for(default)
                )
            )
    return options


ALL = [REPOSITORY, *SERVER, *SECURITY, *LIMITS, *fine_limits()]
