"""Parquet, CSV and JSON Lines, read in chunks of a fixed number of rows and
written a table at a time.

Chunks are cut at fixed row counts whatever the file's own blocks and row
groups, so a chunk's index names the same rows on every run (resume relies on
it). The columns that feed the model (``text_columns``) are read from CSV and
JSON Lines as text and parsed by :mod:`turnout.jobs.columns`, so a bad value
anywhere in the file is a bad row, never a reader error halfway through.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from turnout.jobs.columns import BatchError

FORMATS = ("parquet", "csv", "jsonl")
SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def format_of(path: Path) -> str:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise BatchError(f"{path}: not a file type turnout batch reads ({', '.join(sorted(SUFFIXES))})")
    return fmt


def read_schema(path: Path, fmt: str) -> pa.Schema:
    """The file's columns (CSV: typed as in its first block; JSON Lines: its first lines)."""
    try:
        if fmt == "parquet":
            return pq.read_schema(path)
        if fmt == "csv":
            return pa_csv.open_csv(path).schema
        return _json_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise BatchError(f"{path}: cannot be read: {exc}") from None


def count_rows(path: Path, fmt: str) -> int:
    """Rows in the file, for the progress bar: Parquet's footer, or lines counted
    (CSV values holding line breaks make it an estimate)."""
    if fmt == "parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    lines, last = 0, b"\n"
    with path.open("rb") as file:
        while block := file.read(1 << 24):
            lines += block.count(b"\n")
            last = block[-1:]
    lines += last != b"\n"
    return max(0, lines - 1) if fmt == "csv" else lines


def read_chunks(
    path: Path, fmt: str, chunk_rows: int, text_columns: Sequence[str], verbatim: bool = False
) -> Iterator[pa.Table]:
    """The file's rows, ``chunk_rows`` at a time (the last chunk fewer; an empty
    file yields one empty table). ``verbatim`` (CSV): only an empty field is
    null, so text such as NA or null passes through as written."""
    if fmt == "parquet":
        file = pq.ParquetFile(path)
        # one thread: decoding is quick, and Arrow's pool would take the cores inference runs on
        batches = file.iter_batches(batch_size=chunk_rows, use_threads=False)
        yield from _rechunk(batches, file.schema_arrow, chunk_rows)
    elif fmt == "csv":
        yield from _csv_chunks(path, chunk_rows, text_columns, verbatim)
    else:
        with path.open("rb") as jsonl:
            yield from _jsonl_chunks(jsonl, path, chunk_rows, set(text_columns))


def _rechunk(batches: Iterator[pa.RecordBatch], schema: pa.Schema, chunk_rows: int) -> Iterator[pa.Table]:
    held: list[pa.RecordBatch] = []
    count = 0
    yielded = False
    for batch in batches:
        held.append(batch)
        count += batch.num_rows
        while count >= chunk_rows:
            table = pa.Table.from_batches(held, schema)
            yield table.slice(0, chunk_rows).combine_chunks()
            yielded = True
            rest = table.slice(chunk_rows)
            held, count = rest.to_batches(), rest.num_rows
    if count or not yielded:
        yield pa.Table.from_batches(held, schema).combine_chunks()


def _csv_chunks(path: Path, chunk_rows: int, text_columns: Sequence[str], verbatim: bool) -> Iterator[pa.Table]:
    convert = pa_csv.ConvertOptions(
        column_types={c: pa.string() for c in text_columns},
        strings_can_be_null=True,
        **({"null_values": [""]} if verbatim else {}),
    )
    reader = pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=1 << 22), convert_options=convert)
    rows = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal rows
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                raise BatchError(
                    f"{path}: in the block of rows after data row {rows}: {exc}; the columns that do not feed the "
                    "model take the type of their values in the file's first block: make the column uniform"
                ) from None
            rows += batch.num_rows
            yield batch

    yield from _rechunk(batches(), reader.schema, chunk_rows)


def _jsonl_chunks(file: BinaryIO, path: Path, chunk_rows: int, text_columns: set[str]) -> Iterator[pa.Table]:
    names: list[str] | None = None
    types: dict[str, pa.DataType] = {}
    for first_row, objects in _json_objects(file, path, chunk_rows):
        if names is None:
            names = list(dict.fromkeys(key for value in objects for key in value))
        else:
            known = set(names)
            late = next(((i, key) for i, value in enumerate(objects) for key in value if key not in known), None)
            if late is not None:  # the columns were set by the first chunk: refused rather than dropped
                raise BatchError(
                    f"{path}: data row {first_row + late[0] + 1} has the key {late[1]!r}, which the first "
                    f"{chunk_rows} rows do not have; the columns are the keys of the first chunk: give the key "
                    "(null will do) in an earlier row, or raise --chunk-rows"
                )
        yield _json_table(objects, names, types, text_columns, path, first_row)


def _json_objects(file: BinaryIO, path: Path, chunk_rows: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(index of the first row, the rows) per chunk; blank lines are not rows."""
    row = 0
    while True:
        objects: list[dict[str, Any]] = []
        for line in file:
            if not line.strip():
                continue
            row += 1
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise BatchError(f"{path}: data row {row} is not JSON: {exc}") from None
            if not isinstance(value, dict):
                raise BatchError(f"{path}: data row {row} is not a JSON object")
            objects.append(value)
            if len(objects) == chunk_rows:
                break
        if objects or row == 0:
            yield row - len(objects), objects
        if len(objects) < chunk_rows:
            return


def _json_schema(path: Path) -> pa.Schema:
    """Names from the first rows; a key whose values do not make one type reads as text."""
    with path.open("rb") as file:
        _, objects = next(_json_objects(file, path, 1000))
    fields = []
    for name in dict.fromkeys(key for value in objects for key in value):
        try:
            type_ = pa.array([value.get(name) for value in objects]).type
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            type_ = pa.string()
        fields.append(pa.field(name, type_))
    return pa.schema(fields)


def _json_table(
    objects: list[dict[str, Any]],
    names: list[str],
    types: dict[str, pa.DataType],
    text: set[str],
    path: Path,
    start: int,
) -> pa.Table:
    columns = {}
    for name in names:
        values = [value.get(name) for value in objects]
        if name in text:
            # JSON text, parsed by columns.gather: a string or a bool where a number belongs is a bad row
            columns[name] = pa.array([None if v is None else orjson.dumps(v).decode() for v in values], pa.string())
            continue
        first = types.get(name)
        try:
            # inferred, then cast safely to the type the first chunk set: never truncated (1.5 -> 1)
            array = pa.array(values)
            if first is not None and array.type != first:
                array = array.cast(first, safe=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise BatchError(
                f"{path}: key {name!r} in data rows {start + 1}-{start + len(objects)} does not fit the type of its "
                f"first values ({first}): {exc}; make the key's values of one type"
            ) from None
        columns[name] = array
        types.setdefault(name, array.type)
    return pa.table(columns) if columns else pa.table({}).slice(0, 0)


def check_writable(schema: pa.Schema, fmt: str, path: Path) -> None:
    """Refuse, before any row runs, an output the format cannot hold (CSV has no list columns)."""
    if fmt != "csv":
        return
    nested = [f.name for f in schema if pa.types.is_nested(f.type)]
    if nested:
        raise BatchError(f"{path}: a CSV file cannot hold the list column(s) {nested}: write Parquet or JSON Lines")


class Sink:
    """One output file, written a table at a time (tables of one schema)."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self.fmt = fmt
        self._writer: Any = None
        self._file: BinaryIO | None = None

    def append(self, table: pa.Table) -> None:
        table = table.replace_schema_metadata(None)
        if self.fmt == "jsonl":
            if self._file is None:
                self._file = self.path.open("wb")
            self._file.write(b"".join(orjson.dumps(row) + b"\n" for row in table.to_pylist()))
            return
        if self._writer is None:
            if self.fmt == "parquet":
                # Dictionaries for all but floating-point columns: real measurements seldom
                # repeat, and trying costs more CPU than a light model's inference.
                dictionary = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
                self._writer = pq.ParquetWriter(self.path, table.schema, use_dictionary=dictionary)
            else:
                self._writer = pa_csv.CSVWriter(self.path, table.schema)
        if self.fmt == "parquet":
            self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        else:
            self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._file is not None:
            self._file.close()
        if not self.path.exists():  # nothing appended
            self.path.write_bytes(b"")
