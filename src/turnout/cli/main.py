"""The ``turnout`` command: argv -> Settings -> server."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from turnout import __version__
from turnout.cli import batch as batch_cli
from turnout.cli import lifecycle as lifecycle_cli
from turnout.cli import limits as limits_cli
from turnout.cli import profile as profile_cli
from turnout.cli import stream as stream_cli
from turnout.cli import traffic as traffic_cli
from turnout.cli.arguments import positive_int, seconds
from turnout.errors import ConfigError
from turnout.model.loader import LoadFailed, load_version
from turnout.model.repository import ModelRepository
from turnout.observability import logs
from turnout.observability.tracing import TracingSettings
from turnout.protocol.limits import DEFAULT_LIMITS, InputLimits
from turnout.security.jwt_auth import JwtSettings
from turnout.security.principal import Role
from turnout.security.ratelimit import Rate
from turnout.security.tls import TlsSettings
from turnout.settings import (
    AdminSettings,
    GrpcSettings,
    HttpSettings,
    LifecycleSettings,
    RoutingSettings,
    SecuritySettings,
    Settings,
)
from turnout.streams.service import StreamSettings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    code: int = args.run(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turnout", description="Serve models over the V2 inference protocol.")
    parser.add_argument("--version", action="version", version=f"turnout {__version__}")
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="serve a model repository over V2 REST and gRPC")
    serve.add_argument("repository", type=Path, help="the model repository directory")
    serve.add_argument("--host", default="127.0.0.1", help="address for REST and gRPC (default 127.0.0.1)")
    serve.add_argument("--http-port", type=_port, default=8080, help="REST port (default 8080)")
    serve.add_argument("--grpc-port", type=_port, default=8081, help="gRPC port (default 8081)")
    serve.add_argument(
        "--max-body-bytes", type=positive_int, default=64 * 1024 * 1024, help="largest request body or gRPC message"
    )
    serve.add_argument(
        "--request-read-timeout",
        type=seconds,
        default=30.0,
        help="seconds a request may take to arrive, first byte to last, before REST answers 408 and gRPC resets "
        "the stream (default 30)",
    )
    serve.add_argument(
        "--max-tensor-elements",
        type=positive_int,
        default=DEFAULT_LIMITS.max_tensor_elements,
        help=f"most elements in one input tensor (default {DEFAULT_LIMITS.max_tensor_elements})",
    )
    serve.add_argument(
        "--max-bytes-element",
        type=positive_int,
        default=DEFAULT_LIMITS.max_bytes_element,
        help=f"largest BYTES element, in bytes (default {DEFAULT_LIMITS.max_bytes_element})",
    )
    serve.add_argument(
        "--no-strict-readiness",
        action="store_true",
        help="report ready once loading is done even if some model failed",
    )
    serve.add_argument(
        "--shutdown-grace", type=seconds, default=30.0, help="seconds to finish requests on shutdown (default 30)"
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one object per line (default text)"
    )
    serve.add_argument(
        "--otlp-endpoint",
        default=None,
        help="send OpenTelemetry traces over OTLP/HTTP, e.g. http://localhost:4318/v1/traces (default: off)",
    )
    serve.add_argument(
        "--trace-sample", type=float, default=1.0, help="share of requests traced when the client's are not (0-1)"
    )
    serve.add_argument(
        "--alert-webhook",
        default=None,
        help="post drift alerts (firing, then resolved) here, in Alertmanager's webhook format",
    )
    serve.add_argument(
        "--payload-log", type=Path, default=None, help="write sampled requests' inputs and outputs here (JSONL)"
    )
    serve.add_argument(
        "--payload-sample", type=float, default=0.01, help="the share of requests written (default 0.01)"
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log every inference request: request id, model, version, variant, protocol, status, latency",
    )
    limits_cli.add_arguments(serve)
    security = serve.add_argument_group("security (see the README's Security section)")
    security.add_argument(
        "--no-inference-auth",
        action="store_true",
        help="serve inference, metadata and metrics without credentials: a local demo only",
    )
    security.add_argument("--api-keys", type=Path, default=None, help="API key store: a .json file or a SQLite .db")
    security.add_argument(
        "--jwt-secret-file", type=Path, default=None, help="accept HS256 JWTs signed with this secret"
    )
    security.add_argument("--jwt-public-key", type=Path, default=None, help="accept RS256/ES256 JWTs: a PEM public key")
    security.add_argument("--jwt-jwks", type=Path, default=None, help="accept RS256/ES256 JWTs: a JWKS file")
    security.add_argument("--jwt-issuer", default=None, help="the JWT issuer (iss) to require")
    security.add_argument("--jwt-audience", default=None, help="the JWT audience (aud) to require")
    security.add_argument(
        "--jwt-roles-claim", default="roles", help="the claim listing a token's roles (default roles)"
    )
    security.add_argument(
        "--rate-limit",
        type=_rate,
        default=None,
        metavar="RATE[/BURST]",
        help="requests per second per credential (burst default: the rate), unless its key sets its own",
    )
    security.add_argument("--audit-log", type=Path, default=None, help="append admin actions and auth failures here")
    security.add_argument(
        "--audit-log-max-bytes",
        type=positive_int,
        default=64 << 20,
        help="rotate the audit log before it passes this size (default 64 MiB)",
    )
    security.add_argument(
        "--audit-log-keep", type=positive_int, default=5, help="rotated audit logs kept, FILE.1 to FILE.N (default 5)"
    )
    security.add_argument("--tls-cert", type=Path, default=None, help="serve TLS with this certificate (PEM)")
    security.add_argument("--tls-key", type=Path, default=None, help="the certificate's private key (PEM)")
    security.add_argument(
        "--tls-client-ca", type=Path, default=None, help="mutual TLS: require client certificates signed by this CA"
    )
    security.add_argument(
        "--allow-trusted-models",
        action="store_true",
        help="load models whose files run code when loaded (pickles) if their model.toml says trusted = true",
    )
    security.add_argument("--admin-host", default="127.0.0.1", help="admin plane address (default 127.0.0.1)")
    security.add_argument("--admin-port", type=_port, default=8082, help="admin plane port (default 8082)")
    security.add_argument("--no-admin", action="store_true", help="no admin plane listener")
    security.add_argument(
        "--admin-on-public-port",
        action="store_true",
        help="also serve the admin routes on the public REST and gRPC ports (admin role still required)",
    )
    lifecycle = serve.add_argument_group("model lifecycle")
    lifecycle.add_argument(
        "--model-control",
        choices=("poll", "explicit"),
        default="poll",
        help="poll: load new and changed versions and unload removed ones as the repository changes (default); "
        "explicit: only through the repository API",
    )
    lifecycle.add_argument(
        "--poll-interval", type=seconds, default=2.0, help="seconds between repository scans (default 2)"
    )
    lifecycle.add_argument(
        "--max-loaded-models", type=positive_int, default=None, help="at most this many models in memory (LRU out)"
    )
    lifecycle.add_argument(
        "--memory-budget",
        type=_size,
        default=None,
        help="at most this much model memory, e.g. 2G (estimated: artifact size x instances; LRU out)",
    )
    lifecycle.add_argument(
        "--idle-unload", type=seconds, default=None, help="unload a model unused this many seconds (scale to zero)"
    )
    lifecycle.add_argument("--lazy-load", action="store_true", help="load no model at start: each on its first request")
    lifecycle.add_argument(
        "--load-timeout",
        type=seconds,
        default=60.0,
        help="how long a request for a model out of memory waits for it to load (default 60)",
    )
    lifecycle.add_argument(
        "--registry",
        choices=("mlflow",),
        default=None,
        help="also serve models from a model registry: mlflow (with --mlflow-model, repeated)",
    )
    lifecycle.add_argument(
        "--mlflow-model",
        action="append",
        default=[],
        metavar="models:/NAME@ALIAS",
        help="a registered model to serve by alias; it follows the alias as it moves",
    )
    lifecycle.add_argument("--mlflow-uri", default=None, help="the MLflow tracking URI (default $MLFLOW_TRACKING_URI)")
    routing = serve.add_argument_group("traffic control")
    routing.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where routing policies, their event log, A/B feedback and shadow disagreements are kept "
        "(default: REPOSITORY/.turnout)",
    )
    routing.add_argument(
        "--shadow-queue",
        type=positive_int,
        default=1000,
        help="shadow copies waiting to run; beyond this a copy is dropped and counted (default 1000)",
    )
    routing.add_argument(
        "--shadow-workers",
        type=positive_int,
        default=1,
        help="shadow copies run at once at most; with more requests than this in flight, copies are "
        "skipped and counted (default 1)",
    )
    streams = serve.add_argument_group("Redis Streams (see the README's Streams section)")
    streams.add_argument(
        "--stream",
        default=None,
        metavar="redis://HOST:PORT/DB",
        help="also answer inference requests from Redis Streams: one request stream per model "
        "(model.toml [stream]; default turnout:MODEL:requests)",
    )
    streams.add_argument("--stream-group", default="turnout", help="the deployment's consumer group (default turnout)")
    streams.add_argument(
        "--stream-consumer", default=None, help="this process's name in the group (default HOSTNAME-PID)"
    )
    streams.add_argument(
        "--stream-max-deliveries",
        type=positive_int,
        default=3,
        help="an entry that fails this many deliveries goes to the dead-letter stream (default 3)",
    )
    streams.add_argument(
        "--stream-claim-idle",
        type=seconds,
        default=30.0,
        help="seconds an entry may stay unacknowledged before a live consumer takes it over (default 30)",
    )
    serve.set_defaults(run=_serve)

    keys = commands.add_parser("keys", help="create, list and revoke API keys").add_subparsers(title="keys commands")
    create = keys.add_parser("create", help="create a key and print it (it is shown only this once)")
    create.add_argument("--store", type=Path, required=True, help="the key store: a .json file or a SQLite .db")
    create.add_argument("--name", required=True, help="who or what the key is for (shown in logs and audit)")
    create.add_argument(
        "--role", dest="roles", action="append", choices=[r.value for r in Role], required=True,
        help="infer, read or admin; repeat for several",
    )  # fmt: skip
    create.add_argument("--model", dest="models", action="append", default=None, help="allow only this model; repeat")
    create.add_argument("--rate-limit", type=_rate, default=None, metavar="RATE[/BURST]", help="this key's own limit")
    create.set_defaults(run=_keys_create)
    listing = keys.add_parser("list", help="list the keys (never their secrets)")
    listing.add_argument("--store", type=Path, required=True)
    listing.add_argument("--json", action="store_true", help="one JSON object per key")
    listing.set_defaults(run=_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by id or name; a running server stops accepting it")
    revoke.add_argument("--store", type=Path, required=True)
    revoke.add_argument("key", help="the key's id (or its name, if unique)")
    revoke.set_defaults(run=_keys_revoke)

    audit = commands.add_parser("audit", help="read the audit log").add_subparsers(title="audit commands")
    tail = audit.add_parser("tail", help="print the last events (and follow with -f)")
    tail.add_argument("log", type=Path, help="the audit log file")
    tail.add_argument("-n", "--lines", type=positive_int, default=20, help="how many (default 20)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing events as they are appended")
    tail.set_defaults(run=_audit_tail)

    bench = commands.add_parser(
        "bench", help="measure a V2 server: throughput, latency percentiles, errors (like perf_analyzer)"
    )
    bench.add_argument("--model", required=True, help="the model to call")
    bench.add_argument("--version", dest="model_version", default=None, help="a model version (default: the server's)")
    bench.add_argument(
        "--protocol",
        choices=["rest", "rest-binary", "grpc"],
        default="rest",
        help="rest (JSON), rest-binary (Triton's binary extension) or grpc (raw tensor contents)",
    )
    bench.add_argument("--url", default="http://127.0.0.1:8080", help="REST base URL (default http://127.0.0.1:8080)")
    bench.add_argument("--grpc-url", default="127.0.0.1:8081", help="gRPC address (default 127.0.0.1:8081)")
    bench.add_argument(
        "--concurrency", default="1,8,64", help="closed loop: comma-separated numbers of clients (default 1,8,64)"
    )
    bench.add_argument("--rate", default="", help="open loop: comma-separated requests per second (instead of clients)")
    bench.add_argument("--duration", type=seconds, default=5.0, help="seconds measured per point (default 5)")
    bench.add_argument("--warmup", type=seconds, default=1.0, help="seconds of unmeasured load first (default 1)")
    bench.add_argument("--batch", type=positive_int, default=1, help="rows per request for generated inputs")
    bench.add_argument("--input-file", type=Path, default=None, help="a V2 JSON request whose inputs to send")
    bench.add_argument("--json", dest="json_out", type=Path, default=None, help="write the results as JSON here")
    bench.add_argument("--plot", dest="plot_out", type=Path, default=None, help="write latency vs throughput (PNG)")
    bench.add_argument("--quiet", action="store_true", help="no live progress")
    bench.add_argument(
        "--header",
        dest="headers",
        action="append",
        type=_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="send with every request, over REST and as gRPC metadata (e.g. 'Authorization: Bearer KEY'); repeat",
    )
    bench.add_argument(
        "--busy-poll",
        choices=("auto", "on", "off"),
        default="auto",
        help="spin instead of sleeping while requests are out, so the generator's own wake-up "
        "latency is not measured (auto: at concurrency 1 only; costs the generator's core)",
    )
    bench.set_defaults(run=_bench)

    traffic_cli.add_commands(commands)
    profile_cli.add_command(commands)
    batch_cli.add_command(commands)
    stream_cli.add_commands(commands)

    models = commands.add_parser(
        "models", help="inspect a model repository; pin, unpin and roll back a running server's versions"
    ).add_subparsers(title="models commands")
    validate = models.add_parser("validate", help="check every model in a repository and print its signature")
    validate.add_argument("repository", type=Path)
    validate.set_defaults(run=_validate)
    lifecycle_cli.add_commands(models)
    return parser


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c in text for c in "\r\n"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a header: 'NAME: VALUE'")
    return name.strip(), value.strip()


def _rate(text: str) -> Rate:
    rate_text, _, burst_text = text.partition("/")
    try:
        rate = float(rate_text)
        burst = int(burst_text) if burst_text else max(1, math.ceil(rate))
        return Rate(rate, burst)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rate: requests per second, optionally /burst (e.g. 50 or 50/100)"
        ) from None


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(text: str) -> int:
    """Bytes: 1500000, 512M, 2G (powers of 1024; a trailing B or iB is allowed)."""
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = cleaned[-1:] if cleaned[-1:] in _UNITS else ""
    number = cleaned[: len(cleaned) - len(unit)]
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 1500000, 512M, 2G)") from None
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size of at least one byte")
    return int(value)


def _serve(args: argparse.Namespace) -> int:
    logs.configure(args.log_level, args.log_format)
    if not args.repository.is_dir():
        print(f"turnout: the model repository {args.repository} does not exist or is not a directory", file=sys.stderr)
        return 2
    try:
        security = _security_settings(args)
        edge = limits_cli.edge_settings(args, args.request_read_timeout)
    except ValueError as exc:
        print(f"turnout: {exc}", file=sys.stderr)
        return 2
    if bool(args.mlflow_model) != (args.registry == "mlflow"):
        print("turnout: --registry mlflow and --mlflow-model models:/NAME@ALIAS go together", file=sys.stderr)
        return 2
    settings = Settings(
        repository=args.repository,
        http=HttpSettings(args.host, args.http_port, args.max_body_bytes),
        grpc=GrpcSettings(args.host, args.grpc_port, args.max_body_bytes),
        admin=AdminSettings(args.admin_host, None if args.no_admin else args.admin_port, args.admin_on_public_port),
        security=security,
        edge=edge,
        limits=InputLimits(args.max_tensor_elements, args.max_bytes_element),
        routing=RoutingSettings(args.state_dir, args.shadow_queue, args.shadow_workers),
        lifecycle=LifecycleSettings(
            None if args.model_control == "explicit" else max(args.poll_interval, 0.1),
            args.max_loaded_models,
            args.memory_budget,
            args.idle_unload,
            args.lazy_load,
            args.load_timeout,
            tuple(args.mlflow_model),
            args.mlflow_uri,
        ),
        stream=StreamSettings(
            args.stream, args.stream_group, args.stream_consumer, args.stream_max_deliveries, args.stream_claim_idle
        ),
        strict_readiness=not args.no_strict_readiness,
        shutdown_grace_seconds=args.shutdown_grace,
        access_log=args.access_log,
        alert_webhook=args.alert_webhook,
        payload_log=args.payload_log,
        payload_sample=min(max(args.payload_sample, 0.0), 1.0),
        tracing=TracingSettings(args.otlp_endpoint, sample_ratio=min(max(args.trace_sample, 0.0), 1.0)),
    )
    from turnout.app import Server, StartupError  # imported here: `turnout --version` stays fast

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(Server(settings).serve())
    except StartupError as exc:
        print(f"turnout: {exc}", file=sys.stderr)
        return 1
    return 0


def _security_settings(args: argparse.Namespace) -> SecuritySettings:
    jwt_sources = [x for x in (args.jwt_secret_file, args.jwt_public_key, args.jwt_jwks) if x is not None]
    if len(jwt_sources) > 1:
        raise ValueError("give one of --jwt-secret-file, --jwt-public-key and --jwt-jwks")
    jwt = None
    if jwt_sources:
        secret = None
        if args.jwt_secret_file is not None:
            try:
                secret = args.jwt_secret_file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"cannot read the JWT secret file {args.jwt_secret_file}: {exc.strerror}") from None
        jwt = JwtSettings(
            secret=secret,
            public_key_file=args.jwt_public_key,
            jwks_file=args.jwt_jwks,
            issuer=args.jwt_issuer,
            audience=args.jwt_audience,
            roles_claim=args.jwt_roles_claim,
        )
        jwt.check()
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    tls = None if args.tls_cert is None else TlsSettings(args.tls_cert, args.tls_key, args.tls_client_ca)
    return SecuritySettings(
        inference_auth=not args.no_inference_auth,
        key_store=args.api_keys,
        jwt=jwt,
        rate_limit=args.rate_limit,
        audit_log=args.audit_log,
        audit_max_bytes=args.audit_log_max_bytes,
        audit_keep=args.audit_log_keep,
        tls=tls,
        allow_trusted_models=args.allow_trusted_models,
    )


def _keys_create(args: argparse.Namespace) -> int:
    from turnout.security.keys import new_key, open_backend

    rate = args.rate_limit
    try:
        backend = open_backend(args.store)
        record, token = new_key(
            args.name,
            [Role(r) for r in args.roles],
            args.models,
            rate=None if rate is None else rate.per_second,
            burst=None if rate is None else rate.burst,
        )
        backend.add(record)
    except (ValueError, OSError, sqlite3.Error) as exc:
        print(f"turnout keys: {exc}", file=sys.stderr)
        return 1
    print(f"created key {record.id} for {record.name!r} ({', '.join(sorted(args.roles))})", file=sys.stderr)
    print("the key (shown only now; send it as 'Authorization: Bearer <key>'):", file=sys.stderr)
    print(token)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    from turnout.security.keys import open_backend

    try:
        records = open_backend(args.store).load()
    except (ValueError, OSError, sqlite3.Error) as exc:
        print(f"turnout keys: {exc}", file=sys.stderr)
        return 1
    for record in records:
        shown = record.public()
        if args.json:
            print(json.dumps(shown))
            continue
        models = "all models" if shown["models"] is None else ",".join(shown["models"])
        state = f"revoked {shown['revoked']}" if shown["revoked"] else "active"
        rate = f"  {shown['rate']}/s burst {shown['burst']}" if shown["rate"] else ""
        print(f"{shown['id']}  {shown['name']}  {','.join(shown['roles'])}  {models}  {state}{rate}")
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from turnout.security.keys import open_backend, revoke

    try:
        record = revoke(open_backend(args.store), args.key)
    except (LookupError, ValueError, OSError, sqlite3.Error) as exc:
        print(f"turnout keys: {exc.args[0] if isinstance(exc, LookupError) else exc}", file=sys.stderr)
        return 1
    print(f"revoked key {record.id} ({record.name!r}) at {record.revoked}; a running server drops it within a second")
    return 0


def _audit_tail(args: argparse.Namespace) -> int:
    from turnout.security.audit import follow, tail

    try:
        for line in tail(args.log, args.lines):
            print(line)
        if args.follow:
            for line in follow(args.log):
                print(line, flush=True)
    except FileNotFoundError:
        print(f"turnout audit: no audit log at {args.log}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed: a faster loop for the HTTP and gRPC edges."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _bench(args: argparse.Namespace) -> int:
    from turnout.bench.command import BenchSettings, parse_list, run

    try:
        concurrencies = parse_list(args.concurrency, int) if not args.rate else ()
        rates = parse_list(args.rate, float)
    except ValueError:
        print("turnout bench: --concurrency and --rate take comma-separated numbers", file=sys.stderr)
        return 2
    if any(c < 1 for c in concurrencies) or any(r <= 0 for r in rates) or not (concurrencies or rates):
        print("turnout bench: concurrencies must be >= 1 and rates > 0", file=sys.stderr)
        return 2
    settings = BenchSettings(
        model=args.model,
        version=args.model_version,
        protocol=args.protocol,
        url=args.url,
        grpc_url=args.grpc_url,
        concurrencies=concurrencies,
        rates=rates,
        duration=args.duration,
        warmup=args.warmup,
        batch=args.batch,
        input_file=args.input_file,
        json_out=args.json_out,
        plot_out=args.plot_out,
        quiet=args.quiet,
        busy_poll=args.busy_poll,
        headers=tuple(args.headers),
    )
    try:
        results = run(settings)
    except (ConnectionError, OSError) as exc:
        print(f"turnout bench: cannot reach the server: {exc}", file=sys.stderr)
        return 1
    return 0 if all(not r.errors for r in results) else 1


def _validate(args: argparse.Namespace) -> int:
    if not args.repository.is_dir():
        print(f"turnout: the model repository {args.repository} does not exist or is not a directory", file=sys.stderr)
        return 2
    repository = ModelRepository(args.repository)
    names = repository.model_names()
    if not names:
        print(f"{args.repository}: no model directories")
        return 1
    failures = 0
    for name in names:
        try:
            source = repository.read(name)
        except ConfigError as exc:
            print(f"{name}: ERROR {exc}")
            failures += 1
            continue
        for version in source.versions:
            try:
                loaded = load_version(source, version)
            except LoadFailed as exc:
                print(f"{name} version {version}: ERROR {exc}")
                failures += 1
                continue
            for instance in loaded.instances:
                instance.close()
            print(
                f"{name} version {version}: OK ({source.config.runtime.name}, max_batch_size {loaded.max_batch_size})"
            )
            for spec in loaded.signature.inputs:
                print(f"    input  {spec.describe()}")
            for spec in loaded.signature.outputs:
                print(f"    output {spec.describe()}")
    print(f"{len(names)} model(s), {failures} problem(s)")
    return 1 if failures else 0
