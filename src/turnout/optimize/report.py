"""What an optimised version costs and gains against its source, measured in
one run on the same machine: agreement on a validation set, raw rows/s at
batch 1 and 32, size on disk and load time.

Agreement, per output (the report's ``agreement`` is the lowest):

- integer, boolean or text outputs (labels): the share of rows equal;
- float rows of two or more values that are probabilities (in [0, 1],
  summing to 1): the share of rows whose most likely class is the same;
- other float rows of two or more values (embeddings, scores): the mean
  cosine similarity of the rows;
- one float per row (a regression): the share of rows within 1% of the
  spread (standard deviation) of the source's outputs.

With labels, the task metric of the first output that fits: accuracy for
labels and probabilities, RMSE for a regression.

Speed is ONNX Runtime alone, on one thread (as turnout serves by default,
``intra_op_threads = 1``): the two versions timed in turns, the median of
``ROUNDS`` rounds each, so a noisy machine moves both alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from turnout.model.runtimes.onnx import session_signature
from turnout.optimize.samples import Samples
from turnout.protocol.datatypes import to_numpy

BATCHES = (1, 32)
ROUNDS = 5
ROUND_SECONDS = 0.3
CHUNK = 256


@dataclass
class OutputAgreement:
    name: str
    kind: str  # "labels", "classes", "cosine", "within 1% of the spread"
    agreement: float
    max_abs_difference: float | None = None
    mean_abs_difference: float | None = None


@dataclass
class Report:
    model: str
    source_version: int
    version: int
    steps: list[str]
    validation_rows: int
    agreement: float = 1.0
    outputs: list[OutputAgreement] = field(default_factory=list)
    task_metric: dict[str, Any] | None = None  # name, source, optimized
    rows_per_second: dict[str, dict[str, float]] = field(default_factory=dict)  # "batch 32": source, optimized
    size_bytes: dict[str, int] = field(default_factory=dict)
    load_seconds: dict[str, float] = field(default_factory=dict)
    written: bool = False
    refused: str | None = None  # why the version was not written
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lines = [f"{self.model}: version {self.source_version} -> {self.version} ({', '.join(self.steps)}), "
                 f"{self.validation_rows} validation rows"]  # fmt: skip
        lines.append(f"  agreement {self.agreement:.4f} (the lowest of the outputs')")
        for found in self.outputs:
            numbers = f"{found.kind} {found.agreement:.4f}"
            if found.max_abs_difference is not None:
                numbers += f", |difference| max {found.max_abs_difference:.3g} mean {found.mean_abs_difference:.3g}"
            lines.append(f"    {found.name}: {numbers}")
        if self.task_metric is not None:
            metric = self.task_metric
            lines.append(f"  {metric['name']} with labels: {metric['source']:.4f} -> {metric['optimized']:.4f}")
        for batch, speeds in self.rows_per_second.items():
            ratio = speeds["optimized"] / speeds["source"]
            lines.append(f"  rows/s at {batch}: {speeds['source']:,.0f} -> {speeds['optimized']:,.0f} ({ratio:.2f}x)")
        if self.size_bytes:
            lines.append(f"  size on disk: {self.size_bytes['source']:,} -> {self.size_bytes['optimized']:,} bytes")
        if self.load_seconds:
            lines.append(f"  load time: {self.load_seconds['source'] * 1000:.0f} -> "
                         f"{self.load_seconds['optimized'] * 1000:.0f} ms")  # fmt: skip
        lines += [f"  note: {note}" for note in self.notes]
        lines.append(f"  REFUSED: {self.refused}" if self.refused else
                     ("  written" if self.written else "  not written"))  # fmt: skip
        return "\n".join(lines)


def session(path: Path) -> tuple[ort.InferenceSession, float]:
    """A one-thread session, and how long it took to make (the load time)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    started = time.perf_counter()
    made = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return made, time.perf_counter() - started


def compare(report: Report, source: Path, optimized: Path, validation: Samples) -> None:
    """Fill ``report`` with the two files' agreement, speed, size and load time."""
    (old, old_load), (new, new_load) = session(source), session(optimized)
    report.load_seconds = {"source": old_load, "optimized": new_load}
    report.size_bytes = {"source": source.stat().st_size, "optimized": optimized.stat().st_size}
    names = [o.name for o in old.get_outputs()]
    expected, got = run_all(old, names, validation), run_all(new, names, validation)
    report.validation_rows = len(validation)
    report.outputs = [agreement(name, np.asarray(expected[name]), np.asarray(got[name])) for name in names]
    report.agreement = min(found.agreement for found in report.outputs)
    if validation.labels is not None:
        report.task_metric = task_metric(names, expected, got, validation.labels)
    report.rows_per_second = speeds(old, new, validation)


def run_all(run: ort.InferenceSession, names: list[str], samples: Samples) -> dict[str, np.ndarray[Any, Any]]:
    """Every row's outputs, in batches of ``CHUNK`` rows (or of the model's fixed batch size)."""
    first = run.get_inputs()[0].shape[0] if run.get_inputs()[0].shape else None
    chunk = first if isinstance(first, int) and first > 0 else CHUNK
    parts = [run.run(names, typed(run, samples.take(start, start + chunk).inputs))
             for start in range(0, len(samples), chunk)]  # fmt: skip
    return {name: np.concatenate([np.asarray(part[index]) for part in parts]) for index, name in enumerate(names)}


def agreement(name: str, expected: np.ndarray[Any, Any], got: np.ndarray[Any, Any]) -> OutputAgreement:
    if expected.shape != got.shape:
        return OutputAgreement(name, f"shape {list(got.shape)}, expected {list(expected.shape)}", 0.0)
    if expected.dtype.kind not in "fc":
        rows = expected.reshape(len(expected), -1) == got.reshape(len(got), -1)
        return OutputAgreement(name, "labels", float(rows.all(axis=1).mean()))
    difference = np.abs(expected.astype(np.float64) - got.astype(np.float64))
    largest, mean = float(difference.max()), float(difference.mean())
    flat_old = expected.reshape(len(expected), -1).astype(np.float64)
    flat_new = got.reshape(len(got), -1).astype(np.float64)
    if flat_old.shape[1] == 1:
        spread = max(float(flat_old.std()), 1e-12)
        share = float((difference.reshape(len(difference), -1)[:, 0] <= 0.01 * spread).mean())
        return OutputAgreement(name, "within 1% of the spread", share, largest, mean)
    if _probabilities(flat_old):
        same = flat_old.argmax(axis=1) == flat_new.argmax(axis=1)
        return OutputAgreement(name, "classes", float(same.mean()), largest, mean)
    norms = np.linalg.norm(flat_old, axis=1) * np.linalg.norm(flat_new, axis=1)
    cosine = (flat_old * flat_new).sum(axis=1) / np.maximum(norms, 1e-12)
    return OutputAgreement(name, "cosine", float(cosine.mean()), largest, mean)


def task_metric(
    names: list[str], expected: dict[str, Any], got: dict[str, Any], labels: np.ndarray[Any, Any]
) -> dict[str, Any] | None:
    for name in names:
        old, new = np.asarray(expected[name]), np.asarray(got[name])
        if len(old) != len(labels):
            continue
        if old.dtype.kind in "iub" and old.reshape(len(old), -1).shape[1] == 1:
            truth = labels.reshape(-1).astype(old.dtype)
            return {"name": "accuracy", "output": name, "source": float((old.reshape(-1) == truth).mean()),
                    "optimized": float((new.reshape(-1) == truth).mean())}  # fmt: skip
        flat = old.reshape(len(old), -1)
        if old.dtype.kind == "f" and flat.shape[1] > 1 and _probabilities(flat):
            truth = labels.reshape(-1)
            return {"name": "accuracy", "output": name, "source": float((flat.argmax(axis=1) == truth).mean()),
                    "optimized": float((new.reshape(len(new), -1).argmax(axis=1) == truth).mean())}  # fmt: skip
        if old.dtype.kind == "f" and flat.shape[1] == 1:
            truth = labels.reshape(-1).astype(np.float64)
            return {"name": "rmse", "output": name,
                    "source": float(np.sqrt(((flat[:, 0] - truth) ** 2).mean())),
                    "optimized": float(np.sqrt(((new.reshape(-1) - truth) ** 2).mean()))}  # fmt: skip
    return None


def speeds(old: ort.InferenceSession, new: ort.InferenceSession, validation: Samples) -> dict[str, dict[str, float]]:
    found = {}
    for batch in BATCHES:
        rows = validation.rows(batch)
        feeds = {"source": typed(old, rows), "optimized": typed(new, rows)}
        old.run(None, feeds["source"])  # first runs allocate
        new.run(None, feeds["optimized"])
        rounds: dict[str, list[float]] = {"source": [], "optimized": []}
        for _ in range(ROUNDS):
            for label, run in (("source", old), ("optimized", new)):
                rounds[label].append(_rows_per_second(run, feeds[label], batch))
        found[f"batch {batch}"] = {label: statistics.median(values) for label, values in rounds.items()}
    return found


def typed(run: ort.InferenceSession, inputs: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, Any]:
    """The inputs in the datatypes the session takes (an fp16 version given ``--fp16-io`` takes float16)."""
    wanted = {spec.name: to_numpy(spec.datatype) for spec in session_signature(run).inputs}
    return {
        name: array if wanted[name] == array.dtype else array.astype(wanted[name]) for name, array in inputs.items()
    }


def _rows_per_second(run: ort.InferenceSession, feeds: dict[str, Any], batch: int) -> float:
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < ROUND_SECONDS:
        run.run(None, feeds)
        calls += 1
    return calls * batch / elapsed


def _probabilities(rows: np.ndarray[Any, Any]) -> bool:
    return bool(rows.min() >= 0.0 and rows.max() <= 1.0 and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3))
