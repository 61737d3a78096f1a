"""The ``turnout`` command: one subcommand per family, each in its own module
(``serve`` and ``config`` in ``cli/serve.py``, ...)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from turnout import __version__
from turnout.cli import batch, bench, keys, models, optimize, profile, serve, stream, traffic


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
    serve.add_commands(commands)
    keys.add_commands(commands)
    bench.add_command(commands)
    traffic.add_commands(commands)
    profile.add_command(commands)
    optimize.add_command(commands)
    batch.add_command(commands)
    stream.add_commands(commands)
    models.add_commands(commands)
    return parser
