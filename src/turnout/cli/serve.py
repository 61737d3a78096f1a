"""``turnout serve`` and ``turnout config``: the settings from a configuration
file, the environment and flags (``cli/options.py``), checked and built into
one :class:`~turnout.settings.Settings`, then the server, or the effective
configuration printed with where each value came from."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from turnout.cli.options import Resolved, add_flags, render, resolve
from turnout.cli.server_options import ALL, FINE, LIMITS, REPOSITORY, SECURITY, SERVER
from turnout.observability import logs
from turnout.observability.tracing import TracingSettings
from turnout.protocol.limits import InputLimits
from turnout.security.jwt_auth import JwtSettings
from turnout.security.tls import TlsSettings
from turnout.settings import (
    AdminSettings,
    EdgeSettings,
    GrpcSettings,
    HttpSettings,
    LifecycleSettings,
    RoutingSettings,
    SecuritySettings,
    Settings,
)
from turnout.streams.service import StreamSettings

CONFIG_ENV = "TURNOUT_CONFIG"


def add_commands(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve a model repository over V2 REST and gRPC",
        description="Settings come from --config FILE (or $TURNOUT_CONFIG), then TURNOUT_SECTION_KEY environment "
        "variables, then these flags, each overriding the one before; `turnout config` shows the result. "
        "[section.key] after each flag is its place in the file.",
    )
    _add_arguments(serve)
    serve.set_defaults(run=_serve)
    config = commands.add_parser(
        "config",
        help="print the effective server configuration and where each value came from (secrets masked)",
        description="Takes the same arguments as `turnout serve`; prints a configuration file that says the same.",
    )
    _add_arguments(config)
    config.set_defaults(run=_config)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repository", type=Path, nargs="?", default=None, help="the model repository directory")
    parser.add_argument("--config", type=Path, default=None, help="a TOML configuration file (default $TURNOUT_CONFIG)")
    add_flags(parser, SERVER)
    add_flags(parser.add_argument_group("security (see the README's Security section)"), SECURITY)
    add_flags(parser.add_argument_group("limits at the door (see the README's Limits)"), LIMITS)


def resolved(args: argparse.Namespace) -> Resolved:
    """Every setting, from the flags given, the environment and the configuration file."""
    file = args.config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    return resolve(ALL, args, file)


def settings_from(values: argparse.Namespace) -> Settings:
    """The settings the server is built from; ``ValueError`` names a combination that cannot be."""
    if values.repository is None:
        raise ValueError("no model repository: give it as an argument, or `repository` in the configuration file")
    if bool(values.mlflow_model) != (values.registry == "mlflow"):
        raise ValueError("--registry mlflow and --mlflow-model models:/NAME@ALIAS go together")
    return Settings(
        repository=values.repository,
        http=HttpSettings(values.host, values.http_port, values.max_body_bytes),
        grpc=GrpcSettings(values.grpc_host or values.host, values.grpc_port, values.max_body_bytes),
        admin=AdminSettings(
            values.admin_host, None if values.no_admin else values.admin_port, values.admin_on_public_port
        ),
        security=_security(values),
        edge=_edge(values),
        limits=_fine(values, "inputs", InputLimits(values.max_tensor_elements, values.max_bytes_element)),
        routing=RoutingSettings(
            values.state_dir,
            values.shadow_queue,
            values.shadow_workers,
            values.shadow_log_every,
            values.rollout_tick,
            values.state,
        ),
        lifecycle=LifecycleSettings(
            None if values.model_control == "explicit" else max(values.poll_interval, 0.1),
            values.max_loaded_models,
            values.memory_budget,
            values.idle_unload,
            values.lazy_load,
            values.load_timeout,
            tuple(values.mlflow_model),
            values.mlflow_uri,
        ),
        stream=StreamSettings(
            values.stream,
            values.stream_group,
            values.stream_consumer,
            values.stream_max_deliveries,
            values.stream_claim_idle,
            values.stream_block,
        ),
        strict_readiness=not values.no_strict_readiness,
        shutdown_grace_seconds=values.shutdown_grace,
        access_log=values.access_log,
        alert_webhook=values.alert_webhook,
        payload_log=values.payload_log,
        payload_sample=values.payload_sample,
        cache_url=values.cache_redis,
        tracing=TracingSettings(values.otlp_endpoint, values.service_name, values.trace_sample),
    )


def _fine(values: argparse.Namespace, section: str, base: Any) -> Any:
    """``base`` with the file's and environment's ``[limits.SECTION]`` values."""
    changes = {}
    for field in dataclasses.fields(FINE[section]):
        dest = f"{section}__{field.name}"
        if hasattr(values, dest) and getattr(values, dest) != getattr(FINE[section], field.name):
            changes[field.name] = getattr(values, dest)
    return dataclasses.replace(base, **changes)


def _edge(values: argparse.Namespace) -> EdgeSettings:
    read_timeout = values.request_read_timeout
    defaults = EdgeSettings()
    http = dataclasses.replace(
        _fine(values, "http", defaults.http),
        max_head_bytes=values.max_header_bytes,
        max_headers=values.max_headers,
        head_timeout=values.head_timeout,
        read_timeout=read_timeout,
        keep_alive_timeout=values.keep_alive_timeout,
        write_timeout=values.write_timeout,
    )
    http2 = dataclasses.replace(
        _fine(values, "http2", defaults.http2),
        max_header_bytes=values.max_header_bytes,
        preface_timeout=values.head_timeout,
        read_timeout=read_timeout,
        idle_timeout=values.idle_timeout,
        write_timeout=values.write_timeout,
        max_concurrent_streams=values.max_concurrent_streams,
    )
    admission = dataclasses.replace(
        _fine(values, "admission", defaults.admission), enabled=not values.no_admission, target=values.admission_target
    )
    return EdgeSettings(values.max_connections, values.max_buffered_bytes, http, http2, admission)


def _security(values: argparse.Namespace) -> SecuritySettings:
    jwt_sources = [x for x in (values.jwt_secret_file, values.jwt_public_key, values.jwt_jwks) if x is not None]
    if len(jwt_sources) > 1:
        raise ValueError("give one of --jwt-secret-file, --jwt-public-key and --jwt-jwks")
    jwt = None
    if jwt_sources:
        secret = None
        if values.jwt_secret_file is not None:
            try:
                secret = values.jwt_secret_file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"cannot read the JWT secret file {values.jwt_secret_file}: {exc.strerror}") from None
        jwt = JwtSettings(
            secret=secret,
            public_key_file=values.jwt_public_key,
            jwks_file=values.jwt_jwks,
            issuer=values.jwt_issuer,
            audience=values.jwt_audience,
            roles_claim=values.jwt_roles_claim,
        )
        jwt.check()
    if (values.tls_cert is None) != (values.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if values.tls_client_ca is not None and values.tls_cert is None:
        raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    tls = None if values.tls_cert is None else TlsSettings(values.tls_cert, values.tls_key, values.tls_client_ca)
    return SecuritySettings(
        inference_auth=not values.no_inference_auth,
        key_store=values.api_keys,
        jwt=jwt,
        rate_limit=values.rate_limit,
        audit_log=values.audit_log,
        audit_max_bytes=values.audit_log_max_bytes,
        audit_keep=values.audit_log_keep,
        tls=tls,
        allow_trusted_models=values.allow_trusted_models,
    )


def _serve(args: argparse.Namespace) -> int:
    try:
        values = resolved(args).values
        logs.configure(values.log_level, values.log_format)
        settings = settings_from(values)
    except ValueError as exc:  # OptionError included
        print(f"turnout: {exc}", file=sys.stderr)
        return 2
    if not settings.repository.is_dir():
        print(f"turnout: the model repository {settings.repository} does not exist or is not a directory",
              file=sys.stderr)  # fmt: skip
        return 2
    from turnout.app import Server, StartupError  # imported here: `turnout --version` stays fast

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(Server(settings).serve())
    except StartupError as exc:
        print(f"turnout: {exc}", file=sys.stderr)
        return 1
    return 0


def _config(args: argparse.Namespace) -> int:
    try:
        found = resolved(args)
        settings_from(found.values)
    except ValueError as exc:  # OptionError included
        print(f"turnout config: {exc}", file=sys.stderr)
        return 2
    print(render([REPOSITORY, *ALL[1:]], found), end="")
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed: a faster loop for the HTTP and gRPC edges."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
