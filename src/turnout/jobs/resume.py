"""The work directory that makes a batch job resumable.

Beside ``OUTPUT`` lives ``.OUTPUT.parts/``: a manifest naming what the job
was (the input file's path, size and modification time, the model and every
option that changes the output), and one Arrow IPC file per completed chunk,
``part-000000.arrow`` on. A part appears by rename once it is whole, so after
a kill the parts present are exactly the chunks that completed. A part holds
the chunk's prediction columns and its bad rows only: its input columns are
read again from the unchanged input, which costs less than writing them twice.

The output itself is written to ``.OUTPUT.parts/output.partial`` as chunks
complete and renamed onto ``OUTPUT`` at the end. A resumed run rewrites it
from the input and the parts before going on, so it feeds the writer the same
tables in the same order as an uninterrupted run: the files are byte for byte
the same.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from turnout.jobs.columns import BadRow

MANIFEST_VERSION = 1
_BAD_ROWS_KEY = b"turnout.bad_rows"


@dataclass(frozen=True, slots=True)
class Part:
    predictions: pa.Table  # the prediction columns of the chunk's good rows
    first_row: int  # 0-based index of the chunk's first row in the input
    bad: tuple[BadRow, ...]  # indices relative to first_row
    bad_count: int


def job_identity(input_path: Path, options: dict[str, Any]) -> dict[str, Any]:
    """What a resumed run must match: the same input file, unchanged, and the same options."""
    stat = input_path.stat()
    return {
        "version": MANIFEST_VERSION,
        "input": str(input_path.resolve()),
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "options": options,
    }


class WorkDir:
    def __init__(self, output: Path) -> None:
        self.path = output.parent / f".{output.name}.parts"
        self.output = output
        self.partial = self.path / "output.partial"
        self.done = 0  # chunks an earlier run completed, known once start() has looked

    def start(self, identity: dict[str, Any]) -> str | None:
        """Resume the job ``identity`` names, or start it afresh; a note on what was done, if anything."""
        manifest = self.path / "manifest.json"
        note = None
        self.done = 0
        if self.path.exists():
            try:
                previous = json.loads(manifest.read_text())
            except (OSError, ValueError):
                previous = None
            if previous == identity:
                self.done = self.completed()
                if self.done:
                    return f"resuming: {self.done} chunk(s) done by an earlier run"
            elif any(self.path.glob("part-*.arrow")):  # another job's parts: not worth reading
                note = f"starting over: the input or the options changed since the interrupted run in {self.path}"
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        temp = manifest.with_suffix(".tmp")
        temp.write_text(json.dumps(identity, indent=1, sort_keys=True) + "\n")
        os.replace(temp, manifest)
        return note

    def completed(self) -> int:
        """How many chunks from the first on have a readable part. A part that
        cannot be read (a crash before it reached the disk) is removed with
        those after it: their chunks are done again."""
        done = 0
        while self._part(done).exists():
            try:
                self.load(done)
            except (OSError, ValueError, KeyError, pa.ArrowException):
                for later in sorted(self.path.glob("part-*.arrow")):
                    if later.name >= self._part(done).name:
                        later.unlink()
                break
            done += 1
        return done

    def save(self, index: int, part: Part) -> None:
        note = {
            "first_row": part.first_row,
            "bad_count": part.bad_count,
            "bad": [[b.index, b.reason] for b in part.bad],
        }
        table = part.predictions.replace_schema_metadata({_BAD_ROWS_KEY: json.dumps(note)})
        target = self._part(index)
        temp = target.with_suffix(".tmp")
        with pa.OSFile(str(temp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        # Not fsynced: that cost 15% of a light model's throughput. A part a crash
        # left short fails to open (Arrow's footer), and completed() has it done again.
        os.replace(temp, target)

    def load(self, index: int) -> Part:
        with pa.OSFile(str(self._part(index))) as source:
            table = pa.ipc.open_file(source).read_all()
        metadata = dict(table.schema.metadata or {})
        note = json.loads(metadata.pop(_BAD_ROWS_KEY))
        bad = tuple(BadRow(int(i), str(reason)) for i, reason in note["bad"])
        return Part(
            table.replace_schema_metadata(metadata or None), int(note["first_row"]), bad, int(note["bad_count"])
        )

    def finish(self) -> None:
        """The output in place (one rename), then the work directory gone."""
        os.replace(self.partial, self.output)
        shutil.rmtree(self.path)

    def _part(self, index: int) -> Path:
        return self.path / f"part-{index:06d}.arrow"
