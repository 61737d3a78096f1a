"""The Ray engine: the same per-chunk code as the local engine, as a Ray Data
``map_batches`` over a pool of actors, each loading the model once.

Reads a Parquet file or a directory of them (hive-partitioned or not; the
partition keys become columns) and writes a directory of Parquet files,
``part-000000.parquet`` on, with the local engine's rows and predictions in
the input's order.

The driver writes the files, from the ordered stream of predicted batches:
Ray Data's own ``write_parquet`` (Ray 2.60) swapped whole batches in about one
run in five despite ``preserve_order``, while its iterators keep the order.
Reading and inference are spread over the cluster; the write is not, so the
output directory must be one the driver can write.

Bad rows: Ray batches do not know their place in the dataset, so a failure
names rows by their position in the batch (and shows their values); with
skip, the count left out is the rows read less the rows written.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from turnout.jobs.columns import (
    BadRows,
    BatchError,
    InputColumns,
    MappingError,
    OutputColumns,
    gather,
    map_inputs,
    map_outputs,
)
from turnout.jobs.formats import Sink
from turnout.jobs.model import BatchModel, predict_table


@dataclass(frozen=True, slots=True)
class RayJob:
    repo: Path
    model: str
    version: int | None
    input: Path  # a Parquet file or a directory of them
    output: Path  # a new directory
    mapping: Mapping[str, Sequence[str]]
    outputs: tuple[str, ...] | None
    batch_size: int = 1024  # rows per predict call, and per map_batches call
    skip_bad_rows: bool = False
    address: str | None = None  # None: start a local Ray, stopped at the end
    actors: int = 2
    actor_cpus: float = 0.5  # a fraction, so the read and write tasks still find a CPU
    progress: bool = False


@dataclass(frozen=True, slots=True)
class RaySummary:
    rows_read: int
    rows_written: int

    @property
    def bad_count(self) -> int:
        return self.rows_read - self.rows_written


class Predictor:
    """One actor: the model, loaded once, and the plan for its columns."""

    def __init__(
        self,
        repo: Path,
        model: str,
        version: int,
        inputs: tuple[InputColumns, ...],
        outputs: tuple[OutputColumns, ...],
        batch_size: int,
        skip_bad_rows: bool,
    ) -> None:
        self._model = BatchModel.open(repo, model, version)
        self._inputs = inputs
        self._outputs = outputs
        self._batch_size = batch_size
        self._skip = skip_bad_rows

    def __call__(self, batch: pa.Table) -> pa.Table:
        gathered = gather(batch, self._inputs)
        if gathered.bad_count and not self._skip:
            named = "; ".join(f"row {b.index + 1} of the batch: {b.reason}" for b in gathered.bad)
            raise BadRows(
                f"{gathered.bad_count} bad row(s) in a batch of {batch.num_rows}; the first: {named}; "
                "leave them out with --on-error skip"
            )
        return predict_table(self._model.instance, gathered, self._outputs, self._batch_size)


def run_ray(job: RayJob) -> RaySummary:
    try:
        import ray
        import ray.data
    except ImportError:
        raise BatchError("--engine ray needs Ray: pip install 'turnout[ray]'") from None
    # absolute: Ray's workers do not run in this process's working directory
    job = replace(job, repo=job.repo.resolve(), input=job.input.resolve(), output=job.output.resolve())
    if not job.input.exists():
        raise BatchError(f"{job.input}: no such file or directory")
    if job.input.is_file() and job.input.suffix.lower() not in (".parquet", ".pq"):
        raise BatchError(f"{job.input}: the Ray engine reads Parquet (a .parquet file or a directory of them)")
    model = BatchModel.open(job.repo, job.model, job.version)  # here too: fail before any actor starts
    try:
        started = _connect(ray, job.address)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError... for an unreachable cluster
        raise BatchError(f"cannot start or join Ray{f' at {job.address}' if job.address else ''}: {exc}") from None
    try:
        with warnings.catch_warnings():
            # Ray Data's first DataContext sets its own deprecated fields, warning about each (ray 2.60)
            warnings.simplefilter("ignore", DeprecationWarning)
            context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # the output's rows in the input's order
        context.enable_progress_bars = job.progress
        # Ray Data logs each dataset's plan and, off a terminal, its progress at INFO on loggers of its own
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        try:
            dataset = ray.data.read_parquet(str(job.input))
            schema = dataset.schema().base_schema
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise BatchError(f"{job.input}: cannot be read as Parquet: {exc}") from None
        inputs = map_inputs(model.signature, schema, job.mapping, model.features)
        outputs = map_outputs(model.signature, job.outputs, schema.names)
        predicted = dataset.map_batches(
            Predictor,
            fn_constructor_kwargs={
                "repo": job.repo,
                "model": job.model,
                "version": model.version,
                "inputs": inputs,
                "outputs": outputs,
                "batch_size": job.batch_size,
                "skip_bad_rows": job.skip_bad_rows,
            },
            batch_format="pyarrow",
            batch_size=job.batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=job.actors, max_tasks_in_flight_per_actor=1),
            num_cpus=job.actor_cpus,
        )
        try:
            written = _write(predicted.iter_batches(batch_size=None, batch_format="pyarrow"), job.output)
        except BatchError:
            raise
        except Exception as exc:
            summary = str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
            raise _ours(exc) or BatchError(f"the Ray job failed: {summary[0]}") from None
        rows_read = dataset.count()
    finally:
        if started:
            ray.shutdown()
    return RaySummary(rows_read, written)


def _write(batches: Iterable[pa.Table], directory: Path, rows_per_file: int = 1_000_000) -> int:
    """The batches, in order, as Parquet files of about ``rows_per_file`` rows; rows written."""
    if directory.exists() and any(directory.iterdir()):
        raise BatchError(f"{directory}: exists and is not empty; the Ray engine writes a new directory")
    directory.mkdir(parents=True, exist_ok=True)
    sink: Sink | None = None
    written = in_file = files = 0
    for batch in batches:
        if sink is None or in_file >= rows_per_file:
            if sink is not None:
                sink.close()
            sink, in_file = Sink(directory / f"part-{files:06d}.parquet", "parquet"), 0
            files += 1
        sink.append(batch)
        in_file += batch.num_rows
        written += batch.num_rows
    if sink is not None:
        sink.close()
    return written


def _connect(ray: Any, address: str | None) -> bool:
    """Join a running Ray (``address``, or one this process started) or start
    a local one; whether it was started here (and so is to be stopped)."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's own INFO lines (the local instance, each dataset's plan and progress) are its, not the job's
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(include_dashboard=False, **quiet)
    return True


_REMOTE_ERROR = re.compile(rf"^{re.escape(BadRows.__module__)}\.(BadRows|BatchError|MappingError): (.*)$", re.M)


def _ours(exc: BaseException) -> BatchError | None:
    """Our own error from inside an actor. Ray Data (2.60) hands back a
    ``UserCodeException`` that keeps the original only as traceback text, so
    it is found there."""
    found = _REMOTE_ERROR.search(str(exc))
    if found is None:
        return None
    kind = {"BadRows": BadRows, "MappingError": MappingError}.get(found.group(1), BatchError)
    return kind(found.group(2))
