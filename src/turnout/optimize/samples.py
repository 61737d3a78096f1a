"""Representative inputs for calibration and validation, read from a file.

- ``.npy``: one array, the model's only input (rows first);
- ``.npz``: an array per input name, and optionally ``label`` (one per row);
- ``.csv`` / ``.parquet``: one column per feature of the model's only (2-D)
  input, in order; ``label_column`` (if named) holds the labels;
- ``.jsonl`` (a payload log, ``--payload-log``): the sampled requests' inputs
  for this model, each row of each request.

Rows keep the file's order; ``take`` and ``split`` cut them without copying
more than asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from turnout.model.signature import Signature
from turnout.optimize import OptimizeError
from turnout.protocol.datatypes import to_numpy

LABEL = "label"


@dataclass(frozen=True)
class Samples:
    inputs: dict[str, np.ndarray[Any, Any]]  # by input name, rows first, every one the same number of rows
    labels: np.ndarray[Any, Any] | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, start: int, stop: int) -> Samples:
        labels = None if self.labels is None else self.labels[start:stop]
        return Samples({name: array[start:stop] for name, array in self.inputs.items()}, labels)

    def rows(self, size: int) -> dict[str, np.ndarray[Any, Any]]:
        """The first ``size`` rows (repeated when there are fewer): a batch to time."""
        reps = -(-size // len(self))
        return {name: np.concatenate([array] * reps)[:size] if reps > 1 else array[:size]
                for name, array in self.inputs.items()}  # fmt: skip


def read(path: Path, signature: Signature, label_column: str | None = None, model: str = "") -> Samples:
    """The samples in ``path``, checked against the model's inputs (names, datatypes, widths)."""
    if not path.exists():
        raise OptimizeError(f"{path}: no such file")
    suffix = path.suffix.lower()
    labels = None
    if suffix == ".npy":
        inputs = {_only_input(signature, path): np.load(path, allow_pickle=False)}
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as found:
            inputs = {name: found[name] for name in found.files if name != LABEL}
            labels = found[LABEL] if LABEL in found.files else None
    elif suffix in (".csv", ".parquet"):
        inputs, labels = _table(path, signature, label_column)
    elif suffix == ".jsonl":
        inputs = _payload_log(path, signature, model)
    else:
        raise OptimizeError(f"{path}: expected .npy, .npz, .csv, .parquet or a payload log (.jsonl)")
    return _checked(Samples(inputs, labels), signature, path)


def _only_input(signature: Signature, path: Path) -> str:
    if len(signature.inputs) != 1:
        raise OptimizeError(f"{path}: the model takes {len(signature.inputs)} inputs; give them by name in a .npz")
    return signature.inputs[0].name


def _table(
    path: Path, signature: Signature, label_column: str | None
) -> tuple[dict[str, np.ndarray[Any, Any]], np.ndarray[Any, Any] | None]:
    try:
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError:  # the optimize extra's (pyproject)
        raise OptimizeError(f"{path}: reading a table needs pyarrow: pip install 'turnout[optimize]'") from None

    table = pyarrow.csv.read_csv(path) if path.suffix.lower() == ".csv" else pyarrow.parquet.read_table(path)
    labels = None
    if label_column is not None:
        if label_column not in table.column_names:
            raise OptimizeError(f"{path}: no column '{label_column}'; it has {table.column_names}")
        labels = table.column(label_column).to_numpy()
        table = table.drop_columns([label_column])
    name = _only_input(signature, path)
    spec = signature.inputs[0]
    features = [table.column(column).to_numpy().astype(to_numpy(spec.datatype)) for column in table.column_names]
    return {name: np.stack(features, axis=1)}, labels


def _payload_log(path: Path, signature: Signature, model: str) -> dict[str, np.ndarray[Any, Any]]:
    rows: dict[str, list[np.ndarray[Any, Any]]] = {spec.name: [] for spec in signature.inputs}
    with path.open("rb") as lines:
        for line in lines:
            record = orjson.loads(line)
            if model and record.get("model") != model:
                continue
            for spec in signature.inputs:
                tensor = record["inputs"].get(spec.name)
                if tensor is None:
                    raise OptimizeError(f"{path}: a logged request has no input '{spec.name}'")
                array = np.asarray(tensor["data"], dtype=to_numpy(tensor["datatype"])).reshape(tensor["shape"])
                rows[spec.name].append(array)
    if not rows[signature.inputs[0].name]:
        raise OptimizeError(f"{path}: no logged request of model '{model}'")
    return {name: np.concatenate(arrays) for name, arrays in rows.items()}


def _checked(samples: Samples, signature: Signature, path: Path) -> Samples:
    wanted: Mapping[str, Any] = {spec.name: spec for spec in signature.inputs}
    if set(samples.inputs) != set(wanted):
        raise OptimizeError(f"{path}: inputs {sorted(samples.inputs)}; the model takes {sorted(wanted)}")
    counts = {len(array) for array in samples.inputs.values()}
    if len(counts) != 1 or not counts.pop():
        raise OptimizeError(f"{path}: every input needs the same number of rows, at least one")
    inputs = {}
    for name, array in samples.inputs.items():
        spec = wanted[name]
        widths = zip(spec.shape[1:], array.shape[1:], strict=False)  # the ranks are compared first
        if len(array.shape) != len(spec.shape) or any(d not in (-1, s) for d, s in widths):
            raise OptimizeError(f"{path}: '{name}' has shape {list(array.shape)}; the model takes {list(spec.shape)}")
        inputs[name] = np.ascontiguousarray(array.astype(to_numpy(spec.datatype), copy=False))
    if samples.labels is not None and len(samples.labels) != len(samples):
        raise OptimizeError(f"{path}: {len(samples.labels)} labels for {len(samples)} rows")
    return Samples(inputs, samples.labels)
