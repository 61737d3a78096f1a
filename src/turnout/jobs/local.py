"""The local engine: a file through the model in this process, chunk by chunk.

Three stages overlap, each on its own thread, one chunk apart: reading and
parsing chunk n+1, predicting chunk n (ONNX Runtime releases the GIL), and
writing chunk n-1 (its part, then the output). At most three chunks are held
at once, so memory stays bounded whatever the file's size.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from turnout.jobs.columns import (
    BadRow,
    BadRows,
    BatchError,
    Gathered,
    InputColumns,
    gather,
    map_inputs,
    map_outputs,
    with_predictions,
)
from turnout.jobs.formats import Sink, check_writable, count_rows, read_chunks, read_schema
from turnout.jobs.model import BatchModel, predict_table
from turnout.jobs.resume import Part, WorkDir, job_identity


@dataclass(frozen=True, slots=True)
class Job:
    input: Path
    output: Path
    input_format: str
    output_format: str
    mapping: dict[str, tuple[str, ...]] = field(default_factory=dict)
    outputs: tuple[str, ...] | None = None  # None: every output
    batch_size: int = 1024  # rows per predict call
    # rows per read, per part and per checkpoint: the pipeline idles while it fills (the first
    # chunk read) and drains (the last written), so smaller is faster, down to where per-chunk
    # costs show (bench/batch_throughput.py: 16384 against 65536 rows, a few percent)
    chunk_rows: int = 16384
    skip_bad_rows: bool = False
    progress: bool = True

    def options(self, model: BatchModel) -> dict[str, Any]:
        """Everything that changes the output's bytes: a resumed run must match all of it."""
        return {
            "model": model.name, "version": model.version, "artifact": model.identity,
            "mapping": {k: list(v) for k, v in sorted(self.mapping.items())},
            "outputs": list(self.outputs) if self.outputs is not None else None,
            "input_format": self.input_format, "output_format": self.output_format,
            "batch_size": self.batch_size, "chunk_rows": self.chunk_rows, "skip_bad_rows": self.skip_bad_rows,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Summary:
    rows_read: int
    rows_written: int
    bad_count: int
    bad: tuple[tuple[int, str], ...]  # (1-based data row number, why), the first few
    chunks: int
    resumed_chunks: int


def run_local(job: Job, model: BatchModel, say: Callable[[str], None]) -> Summary:
    """Run ``job``; ``say`` takes the notes meant for the user (resuming, starting over)."""
    if job.output.resolve() == job.input.resolve():
        raise BatchError(f"{job.output}: the output would overwrite the input")
    if job.output.is_dir():
        raise BatchError(f"{job.output}: is a directory; name the output file")
    if not job.output.parent.is_dir():
        raise BatchError(f"{job.output.parent}: no such directory for the output")
    schema = read_schema(job.input, job.input_format)
    inputs = map_inputs(model.signature, schema, job.mapping, model.features)
    outputs = map_outputs(model.signature, job.outputs, schema.names)
    check_writable(schema, job.output_format, job.output)
    work = WorkDir(job.output)
    # the columns chosen go into the identity too: a changed profile.json or --map starts over
    plan = {"inputs": [[c.spec.name, list(c.columns)] for c in inputs]}
    try:
        note = work.start(job_identity(job.input, {**job.options(model), **plan}))
    except OSError as exc:
        raise BatchError(f"{work.path}: cannot keep the job's checkpoints there: {exc.strerror or exc}") from None
    if note:
        say(note)
    done = work.done
    total = count_rows(job.input, job.input_format) if job.progress else None
    sink = Sink(work.partial, job.output_format)
    try:
        counts = _Counts()
        with (
            _progress(total, job.progress) as bar,
            ThreadPoolExecutor(1, "batch-read") as reader,
            ThreadPoolExecutor(1, "batch-write") as writer,
        ):
            chunks = _gathered(job, inputs, schema)
            reading = reader.submit(next, chunks, None)
            writing: Future[None] | None = None
            while (item := reading.result()) is not None:
                reading = reader.submit(next, chunks, None)
                index, first_row, rows, gathered = item
                if index < done:  # an earlier run predicted it: the same rows, with its predictions
                    part, fresh = work.load(index), False
                    if part.predictions.num_rows != gathered.table.num_rows:
                        raise BatchError(
                            f"{work.path}: chunk {index} no longer fits the input; delete it to start over"
                        )
                    table = with_predictions(
                        gathered.table, list(zip(part.predictions.column_names, part.predictions.columns, strict=True))
                    )
                else:
                    table = predict_table(model.instance, gathered, outputs, job.batch_size)
                    predicted = table.select([name for plan in outputs for name in plan.columns])
                    part, fresh = Part(predicted, first_row, gathered.bad, gathered.bad_count), True
                    if part.bad_count and not job.skip_bad_rows:
                        raise BadRows(_bad_rows_message(job, part))
                if writing is not None:
                    writing.result()
                writing = writer.submit(_write, work, sink, index, part, table, fresh, rows, bar, counts)
            if writing is not None:
                writing.result()
    finally:
        sink.close()  # also when a chunk failed: the partial output's file is not left open
    try:
        work.finish()
    except OSError as exc:
        raise BatchError(f"{job.output}: cannot be written: {exc.strerror or exc}") from None
    return Summary(
        counts.read, counts.written, counts.bad_count, tuple(counts.bad[:10]), counts.chunks, min(done, counts.chunks)
    )


def _gathered(
    job: Job, inputs: tuple[InputColumns, ...], schema: pa.Schema
) -> Iterator[tuple[int, int, int, Gathered]]:
    """(index, first row, rows, gathered) per chunk."""
    text = [c for plan in inputs if not plan.packed for c in plan.columns]
    verbatim = job.input_format == job.output_format == "csv"
    if verbatim:
        # CSV to CSV: the other columns go through as the text they are, so a
        # column whose later values do not fit its first block's type cannot stop the job
        text = list(schema.names)
    first_row = 0
    for index, table in enumerate(read_chunks(job.input, job.input_format, job.chunk_rows, text, verbatim)):
        yield index, first_row, table.num_rows, gather(table, inputs)
        first_row += table.num_rows


def _write(
    work: WorkDir,
    sink: Sink,
    index: int,
    part: Part,
    table: pa.Table,
    fresh: bool,
    rows: int,
    bar: Any,
    counts: _Counts,
) -> None:
    if fresh:
        work.save(index, part)
    sink.append(table)
    counts.add(part, rows)
    bar.update(rows)


@dataclass
class _Counts:
    """Totals, updated by the writer thread only and read after it has stopped."""

    read: int = 0
    written: int = 0
    bad_count: int = 0
    chunks: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)

    def add(self, part: Part, rows: int) -> None:
        self.read += rows
        self.written += part.predictions.num_rows
        self.bad_count += part.bad_count
        self.chunks += 1
        self.bad.extend(row_number(part, b) for b in part.bad[: max(0, 10 - len(self.bad))])


def row_number(part: Part, bad: BadRow) -> tuple[int, str]:
    return part.first_row + bad.index + 1, bad.reason


def _bad_rows_message(job: Job, part: Part) -> str:
    numbering = "1-based data row numbers" + (", the header line not counted" if job.input_format == "csv" else "")
    named = "; ".join(f"row {n}: {why}" for n, why in (row_number(part, b) for b in part.bad))
    last = part.first_row + part.predictions.num_rows + part.bad_count
    return (
        f"{job.input}: {part.bad_count} bad row(s) among rows {part.first_row + 1}-{last}; the first: {named} "
        f"({numbering}); the output was not written: fix those rows, or leave them out with --on-error skip"
    )


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _progress(total: int | None, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="row", unit_scale=True, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
