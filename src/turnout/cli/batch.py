"""``turnout batch``: offline inference over a file (CSV, Parquet, JSON Lines),
the rows written back with the model's predictions; resumable, chunked,
locally or as a Ray Data job.

pyarrow and tqdm (``turnout[batch]``) and Ray (``turnout[ray]``) are imported
only when the command runs, so the rest of the CLI does without them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

FORMATS = ("parquet", "csv", "jsonl")


def add_command(commands: Any) -> None:
    batch = commands.add_parser(
        "batch",
        help="run a model over a file of rows (CSV, Parquet, JSON Lines) and write them back with predictions",
        description="Columns feed inputs by name, or by the feature names of the version's profile.json, or as "
        "--map says. Outputs become columns: NAME, or NAME_0..NAME_{K-1} for K values per row. Interrupted runs "
        "resume from the last completed chunk when rerun with the same arguments.",
    )
    batch.add_argument("model", help="the model's name in the repository")
    batch.add_argument("--repo", type=Path, required=True, help="the model repository")
    batch.add_argument(
        "--input", type=Path, required=True, help="rows: .csv, .parquet, .jsonl (ray: Parquet file or dir)"
    )
    batch.add_argument(
        "--output", type=Path, required=True, help="where the rows go, with predictions (ray: a new directory)"
    )
    batch.add_argument("--version", type=int, default=None, help="the version (default: the highest served)")
    batch.add_argument(
        "--map", action="append", default=[], metavar="INPUT=COL[,COL...]",
        help="the column(s) that feed INPUT: one list column, or one scalar column per feature (repeatable)",
    )  # fmt: skip
    batch.add_argument("--outputs", default=None, metavar="A,B", help="the outputs to write (default: all)")
    batch.add_argument(
        "--output-format", choices=FORMATS, default=None,
        help="default: the format --output's extension names (.parquet, .csv, .jsonl), else the input's",
    )  # fmt: skip
    batch.add_argument(
        "--batch-size", type=int, default=1024, help="rows per model call (default: 1024; ray: per map_batches call)"
    )
    batch.add_argument(
        "--chunk-rows", type=int, default=16384, help="local: rows read, held and checkpointed at once (default: 16384)"
    )
    batch.add_argument(
        "--on-error", choices=("fail", "skip"), default="fail",
        help="rows with a missing or non-numeric value: fail (default: exit 1 naming them, no output) "
        "or skip (leave them out, report them on stderr)",
    )  # fmt: skip
    batch.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    batch.add_argument("--engine", choices=("local", "ray"), default="local", help="local (default) or ray")
    batch.add_argument("--ray-address", default=None, help="ray: join this cluster (default: start a local one)")
    batch.add_argument("--ray-actors", type=int, default=2, help="ray: model actors (default: 2)")
    batch.add_argument(
        "--ray-actor-cpus", type=float, default=0.5,
        help="ray: CPUs each actor reserves (default: 0.5; reading and writing need CPUs left over)",
    )  # fmt: skip
    batch.set_defaults(run=run)


def parse_mapping(items: list[str]) -> dict[str, tuple[str, ...]]:
    mapping: dict[str, tuple[str, ...]] = {}
    for item in items:
        name, sep, columns = item.partition("=")
        if not sep or not name or not columns or any(not c for c in columns.split(",")):
            raise ValueError(f"--map {item!r}: write INPUT=COLUMN[,COLUMN...]")
        if name in mapping:
            raise ValueError(f"--map: input {name!r} is mapped twice")
        mapping[name] = tuple(columns.split(","))
    return mapping


def run(args: argparse.Namespace) -> int:
    try:
        mapping = parse_mapping(args.map)
    except ValueError as exc:
        return _fail(str(exc))
    if args.batch_size < 1 or args.chunk_rows < 1:
        return _fail("--batch-size and --chunk-rows must be at least 1")
    outputs = tuple(o for o in args.outputs.split(",") if o) if args.outputs else None
    try:
        from turnout.jobs.columns import BadRows, BatchError
    except ImportError as exc:
        return _fail(f"{exc.name} is missing: pip install 'turnout[batch]'")
    try:
        if args.engine == "ray":
            return _run_ray(args, mapping, outputs)
        return _run_local(args, mapping, outputs)
    except BadRows as exc:
        return _fail(str(exc), 1)
    except BatchError as exc:
        return _fail(str(exc))


def _run_local(args: argparse.Namespace, mapping: dict[str, tuple[str, ...]], outputs: tuple[str, ...] | None) -> int:
    from turnout.jobs.formats import SUFFIXES, format_of
    from turnout.jobs.local import Job, run_local
    from turnout.jobs.model import BatchModel

    input_format = format_of(args.input)
    if not args.input.is_file():
        return _fail(f"{args.input}: no such file")
    # the output's own extension names its format; failing that, the input's
    output_format = args.output_format or (
        format_of(args.output) if args.output.suffix.lower() in SUFFIXES else input_format
    )
    model = BatchModel.open(args.repo, args.model, args.version)
    job = Job(args.input, args.output, input_format, output_format, mapping, outputs, args.batch_size,
              args.chunk_rows, args.on_error == "skip", not args.no_progress)  # fmt: skip
    summary = run_local(job, model, lambda note: print(f"turnout batch: {note}", file=sys.stderr))
    if summary.bad_count:
        first = "; ".join(f"row {n}: {why}" for n, why in summary.bad)
        print(
            f"turnout batch: left out {summary.bad_count} bad row(s) (1-based data row numbers); the first: {first}",
            file=sys.stderr,
        )
    print(
        f"wrote {args.output}: {summary.rows_written} of {summary.rows_read} rows with predictions of "
        f"{args.model} version {model.version}"
        + (f" ({summary.resumed_chunks} chunk(s) resumed)" if summary.resumed_chunks else ""),
        file=sys.stderr,
    )
    return 0


def _run_ray(args: argparse.Namespace, mapping: dict[str, tuple[str, ...]], outputs: tuple[str, ...] | None) -> int:
    from turnout.jobs.ray_engine import RayJob, run_ray

    job = RayJob(
        args.repo, args.model, args.version, args.input, args.output, mapping, outputs, args.batch_size,
        args.on_error == "skip", args.ray_address, args.ray_actors, args.ray_actor_cpus, not args.no_progress,
    )  # fmt: skip
    summary = run_ray(job)
    if summary.bad_count:
        print(f"turnout batch: left out {summary.bad_count} bad row(s)", file=sys.stderr)
    print(f"wrote {args.output}/: {summary.rows_written} of {summary.rows_read} rows with predictions", file=sys.stderr)
    return 0


def _fail(message: str, code: int = 2) -> int:
    print(f"turnout batch: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """``turnout batch`` on its own: ``argv`` without the word ``batch``."""
    parser = argparse.ArgumentParser(prog="turnout")
    add_command(parser.add_subparsers())
    args = parser.parse_args(["batch", *(sys.argv[1:] if argv is None else argv)])
    return int(args.run(args))
