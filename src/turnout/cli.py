"""The ``turnout`` command: argv -> Settings -> server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from turnout import __version__
from turnout.errors import ConfigError
from turnout.model.loader import LoadFailed, load_version
from turnout.model.repository import ModelRepository
from turnout.settings import GrpcSettings, HttpSettings, Settings


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
        "--max-body-bytes", type=_positive_int, default=64 * 1024 * 1024, help="largest request body or gRPC message"
    )
    serve.add_argument(
        "--no-strict-readiness",
        action="store_true",
        help="report ready once loading is done even if some model failed",
    )
    serve.add_argument(
        "--shutdown-grace", type=_seconds, default=30.0, help="seconds to finish requests on shutdown (default 30)"
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(run=_serve)

    models = commands.add_parser("models", help="inspect a model repository").add_subparsers(title="models commands")
    validate = models.add_parser("validate", help="check every model in a repository and print its signature")
    validate.add_argument("repository", type=Path)
    validate.set_defaults(run=_validate)
    return parser


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def _positive_int(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if not args.repository.is_dir():
        print(f"turnout: the model repository {args.repository} does not exist or is not a directory", file=sys.stderr)
        return 2
    settings = Settings(
        repository=args.repository,
        http=HttpSettings(args.host, args.http_port, args.max_body_bytes),
        grpc=GrpcSettings(args.host, args.grpc_port, args.max_body_bytes),
        strict_readiness=not args.no_strict_readiness,
        shutdown_grace_seconds=args.shutdown_grace,
    )
    from turnout.server import Server, StartupError  # imported here: `turnout --version` stays fast

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(Server(settings).serve())
    except StartupError as exc:
        print(f"turnout: {exc}", file=sys.stderr)
        return 1
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed: a faster loop for the HTTP and gRPC edges."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _validate(args: argparse.Namespace) -> int:
    from turnout.server import default_runtimes

    if not args.repository.is_dir():
        print(f"turnout: the model repository {args.repository} does not exist or is not a directory", file=sys.stderr)
        return 2
    repository = ModelRepository(args.repository, default_runtimes())
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
            print(f"{name} version {version}: OK ({source.config.runtime}, max_batch_size {loaded.max_batch_size})")
            for spec in loaded.signature.inputs:
                print(f"    input  {spec.describe()}")
            for spec in loaded.signature.outputs:
                print(f"    output {spec.describe()}")
    print(f"{len(names)} model(s), {failures} problem(s)")
    return 1 if failures else 0
