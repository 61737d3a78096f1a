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
    bench.add_argument("--duration", type=_seconds, default=5.0, help="seconds measured per point (default 5)")
    bench.add_argument("--warmup", type=_seconds, default=1.0, help="seconds of unmeasured load first (default 1)")
    bench.add_argument("--batch", type=_positive_int, default=1, help="rows per request for generated inputs")
    bench.add_argument("--input-file", type=Path, default=None, help="a V2 JSON request whose inputs to send")
    bench.add_argument("--json", dest="json_out", type=Path, default=None, help="write the results as JSON here")
    bench.add_argument("--plot", dest="plot_out", type=Path, default=None, help="write latency vs throughput (PNG)")
    bench.add_argument("--quiet", action="store_true", help="no live progress")
    bench.add_argument(
        "--busy-poll",
        choices=("auto", "on", "off"),
        default="auto",
        help="spin instead of sleeping while requests are out, so the generator's own wake-up "
        "latency is not measured (auto: at concurrency 1 only; costs the generator's core)",
    )
    bench.set_defaults(run=_bench)

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
    )
    try:
        results = run(settings)
    except (ConnectionError, OSError) as exc:
        print(f"turnout bench: cannot reach the server: {exc}", file=sys.stderr)
        return 1
    return 0 if all(not r.errors for r in results) else 1


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
