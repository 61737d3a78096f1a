"""``turnout batch`` against raw ONNX Runtime: rows per second over the same
rows, at the same batch size, with the same session options, on the same cores.

    python bench/batch_throughput.py [--rows 1000000] [--rounds 5] [--batch-size 1024] [--cores 0,1]

- raw: one ``InferenceSession`` with the options turnout gives the model
  (its model.toml: one intra-op thread, no spinning), run in slices of the
  batch size over a float32 array already in memory: inference alone, the bar;
- turnout: the local engine as the CLI runs it, a Parquet file of the rows
  in (30 float64 feature columns), a Parquet file of rows and predictions out,
  chunk by chunk, checkpointing each chunk, with reading, inference and
  writing on their own threads.

The rows are scikit-learn's breast-cancer data tiled; the models are the
examples' version 1 (logistic regression) and 2 (gradient-boosted trees, the
heavier). The machine's speed drifts, so each round runs raw, turnout, raw
for each model and takes turnout's rate over the mean of the two raw rates;
the report gives medians over rounds. The section goes into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_breast_cancer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(HERE))

import build_models  # noqa: E402  (examples/build_models.py)
import sections  # noqa: E402  (bench/sections.py)

from turnout.jobs.local import Job, run_local  # noqa: E402
from turnout.jobs.model import BatchModel  # noqa: E402


def rows_file(path: Path, rows: int) -> np.ndarray[Any, Any]:
    """The tiled rows as a Parquet file (one float64 column per feature) and as
    the float32 array raw ONNX Runtime is given."""
    data = load_breast_cancer()
    tiled = np.resize(data.data, (rows, data.data.shape[1]))
    pq.write_table(pa.table({name: tiled[:, i] for i, name in enumerate(data.feature_names)}), path)
    return tiled.astype(np.float32)


def raw_session(model_file: Path) -> ort.InferenceSession:
    """The options turnout's ONNX runtime sets from the examples' model.toml."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(model_file), sess_options=options, providers=["CPUExecutionProvider"])


def raw(session: ort.InferenceSession, rows: np.ndarray[Any, Any], batch_size: int) -> float:
    names = [o.name for o in session.get_outputs()]
    start = time.perf_counter()
    for i in range(0, len(rows), batch_size):
        session.run(names, {"input": rows[i : i + batch_size]})
    return len(rows) / (time.perf_counter() - start)


def script(session: ort.InferenceSession, source: Path, output: Path, batch_size: int, chunk_rows: int) -> float:
    """The same file to file, as one would write it by hand with pyarrow and ONNX
    Runtime in one thread: read a chunk, stack its columns, predict, append, write."""
    names = [o.name for o in session.get_outputs()]
    start = time.perf_counter()
    reader = pq.ParquetFile(source)
    writer: pq.ParquetWriter | None = None
    for batch in reader.iter_batches(batch_size=chunk_rows):
        rows = np.column_stack([column.to_numpy() for column in batch.columns]).astype(np.float32)
        parts = [session.run(names, {"input": rows[i : i + batch_size]}) for i in range(0, len(rows), batch_size)]
        table = pa.Table.from_batches([batch])
        for k, name in enumerate(names):
            values = np.concatenate([part[k] for part in parts])
            if values.ndim == 1:
                table = table.append_column(name, pa.array(values))
            else:
                for j in range(values.shape[1]):
                    table = table.append_column(f"{name}_{j}", pa.array(values[:, j]))
        writer = writer or pq.ParquetWriter(output, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()
    elapsed = time.perf_counter() - start
    output.unlink()
    return reader.metadata.num_rows / elapsed


def turnout(model: BatchModel, source: Path, output: Path, batch_size: int, chunk_rows: int) -> float:
    job = Job(source, output, "parquet", "parquet", batch_size=batch_size, chunk_rows=chunk_rows, progress=False)
    start = time.perf_counter()
    summary = run_local(job, model, lambda note: None)
    elapsed = time.perf_counter() - start
    assert summary.rows_written == pq.ParquetFile(source).metadata.num_rows
    output.unlink()
    return summary.rows_written / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--chunk-rows", type=int, default=16384)
    parser.add_argument(
        "--cores", default=None, help="CPU list for both runners (default: every core this process may use)"
    )
    parser.add_argument("--versions", default="1,2", help="the breast_cancer versions to run")
    parser.add_argument("--out", type=Path, default=HERE / ".out" / "batch")
    parser.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md", help="where the section goes")
    args = parser.parse_args()
    cores = sorted({int(c) for c in args.cores.split(",")}) if args.cores else sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cores)  # both runners, and every thread they start, on these cores
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="turnout-batch-bench-"))
    repo = work / "models"
    build_models.build(repo)
    source = work / "rows.parquet"
    rows = rows_file(source, args.rows)
    versions = [int(v) for v in args.versions.split(",")]
    sessions = {v: raw_session(repo / "breast_cancer" / str(v) / "model.onnx") for v in versions}
    models = {v: BatchModel.open(repo, "breast_cancer", v) for v in versions}
    results: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        for version in versions[round_ % len(versions) :] + versions[: round_ % len(versions)]:
            # raw before and after: the machine's speed drifts, the ratio is taken against their mean
            before = raw(sessions[version], rows, args.batch_size)
            ours = turnout(models[version], source, work / "out.parquet", args.batch_size, args.chunk_rows)
            after = raw(sessions[version], rows, args.batch_size)
            by_hand = script(sessions[version], source, work / "out.parquet", args.batch_size, args.chunk_rows)
            row = {"round": round_, "version": version, "raw": (before + after) / 2, "turnout": ours}
            results.append({**row, "ratio": ours / row["raw"], "raw_before": before, "raw_after": after,
                            "script": by_hand, "vs_script": ours / by_hand})  # fmt: skip
            print(json.dumps(results[-1]), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    table = report(results, args, cores, versions)
    print(table)
    sections.put(args.report, "batch-throughput", table)
    shutil.rmtree(work)


def report(results: list[dict[str, Any]], args: argparse.Namespace, cores: list[int], versions: list[int]) -> str:
    def of(version: int, key: str) -> list[float]:
        return [r[key] for r in results if r["version"] == version]

    lines = [
        "## Batch inference: `turnout batch` against raw ONNX Runtime",
        "",
        f"{args.rows:,} rows of the breast-cancer data (30 features), batch size {args.batch_size}, "
        f"chunks of {args.chunk_rows:,} rows, both runners pinned to cores {cores} "
        f"({platform.processor() or platform.machine()}, {len(cores)} cores), {args.rounds} rounds. *Raw*: one "
        "ONNX Runtime session with the model.toml's options (one intra-op thread), run over a float32 array "
        "already in memory: inference alone, measured just before and just after each turnout run. *turnout*: "
        "`turnout batch`'s local engine, Parquet file in, Parquet file with the predictions out, each chunk "
        "checkpointed; reading, inference and writing overlap on three threads. The ratio is each round's "
        "turnout rate over the mean of its two raw rates; the table gives medians and the range over rounds.",
        "",
        "| model | raw ORT rows/s | turnout batch rows/s | turnout / raw (median) | range over rounds "
        "| by-hand script rows/s | turnout / script |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {1: "breast_cancer v1 (logistic regression)", 2: "breast_cancer v2 (gradient-boosted trees)"}
    for version in versions:
        ratios = of(version, "ratio")
        lines.append(
            f"| {names[version]} | {statistics.median(of(version, 'raw')):,.0f} | "
            f"{statistics.median(of(version, 'turnout')):,.0f} | {statistics.median(ratios):.0%} | "
            f"{min(ratios):.0%} to {max(ratios):.0%} | {statistics.median(of(version, 'script')):,.0f} | "
            f"{statistics.median(of(version, 'vs_script')):.2f}\u00d7 |"
        )
    lines += [
        "",
        "The aim is at least 90% for version 2. Where cores are few the stages compete: reading the Parquet "
        "file, stacking its float64 columns into float32 rows, writing the output and the checkpoint take "
        "about as much CPU as the trees' inference, so on two cores the threads share both, and a machine "
        "with cores to spare leaves inference its own. Version 1's inference costs far less than reading "
        "and writing the file, so there turnout is bound by the file, not the model. On a shared VM the raw "
        "rate alone moves by 15% or more from one run to the next: compare the ranges, not just the medians.",
        "",
        "*By-hand script*: the same Parquet file to file as one would write it with pyarrow and ONNX Runtime "
        "in one thread (read a chunk, stack, predict, append the columns, write), measured after each raw run: "
        "what the file costs without turnout. It is the fair bar where the file, not the model, is the work.",
        "",
        "Reproduce: `python bench/batch_throughput.py "
        f"--rows {args.rows} --rounds {args.rounds} --batch-size {args.batch_size}`.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
