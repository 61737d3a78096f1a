"""``turnout bench``: measure a V2 server (throughput, latency percentiles,
errors), as perf_analyzer does."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from turnout.cli.arguments import header, positive_int, seconds


def add_command(commands: Any) -> None:
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
        type=header,
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
