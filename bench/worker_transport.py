"""How tensors should reach a Python model's worker process: pickled through
the socket (what ``process.py`` does) or through shared memory.

    python bench/worker_transport.py [--calls 2000] [--report BENCHMARKS.md]

A worker process echoes a float32 batch back (``x + 1``, so it reads every
element and writes an answer as large), timed round trip from the server's
side, at batch sizes from one row of 32 features to a 16 MiB batch:

- ``socket``: ``multiprocessing.connection.Connection.send`` of the array
  (pickle protocol 5: the array's bytes as one buffer, never element by
  element), through a socketpair, and the answer back the same way;
- ``shared memory``: one ``multiprocessing.shared_memory`` block per
  direction, made once: the server copies the batch in, sends a small
  header (shape, dtype) through the socket, the worker computes from a view
  of the block into the other block and answers with a header; the server
  copies the answer out (the next batch reuses the block).

Both sides sleep in ``poll`` (no spinning), as on one core. Medians.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sections  # noqa: E402  (bench/sections.py)

SIZES = ((1, 32), (64, 32), (64, 1024), (256, 16384))  # rows, features: 128 B to 16 MiB
BLOCK = 256 * 16384 * 4


def worker(connection: Connection, names: tuple[str, str]) -> None:
    given, answer = (shared_memory.SharedMemory(name=name) for name in names)
    while True:
        message = connection.recv()
        if message is None:
            return
        kind, payload = message
        if kind == "socket":
            connection.send(payload + 1)
        else:
            shape = payload
            view = np.ndarray(shape, np.float32, buffer=given.buf)
            np.add(view, 1, out=np.ndarray(shape, np.float32, buffer=answer.buf))
            connection.send(shape)


def measure(calls: int) -> dict[tuple[int, int], dict[str, float]]:
    blocks = [shared_memory.SharedMemory(create=True, size=BLOCK) for _ in range(2)]
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        worker(Connection(theirs.detach()), (blocks[0].name, blocks[1].name))
        os._exit(0)
    theirs.close()
    connection = Connection(ours.detach())
    results: dict[tuple[int, int], dict[str, float]] = {}
    try:
        for shape in SIZES:
            batch = np.random.default_rng(0).random(shape, dtype=np.float32)
            times: dict[str, list[float]] = {"socket": [], "shared memory": []}
            repeats = max(20, calls // (1 + batch.nbytes // 65536))
            for _ in range(repeats):
                for kind in times:
                    started = time.perf_counter()
                    if kind == "socket":
                        connection.send(("socket", batch))
                        answer = connection.recv()
                    else:
                        np.ndarray(shape, np.float32, buffer=blocks[0].buf)[...] = batch
                        connection.send(("shared", shape))
                        connection.recv()
                        answer = np.ndarray(shape, np.float32, buffer=blocks[1].buf).copy()
                    times[kind].append(time.perf_counter() - started)
                    assert answer[0, 0] == batch[0, 0] + 1
            results[shape] = {kind: statistics.median(took) * 1e6 for kind, took in times.items()}
    finally:
        connection.send(None)
        os.waitpid(pid, 0)
        for block in blocks:
            block.close()
            block.unlink()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--report", type=Path, default=None, help="write the section into this BENCHMARKS.md")
    args = parser.parse_args()
    results = measure(args.calls)
    lines = [
        "## Python models: tensors to a worker by socket or by shared memory",
        "",
        f"`python bench/worker_transport.py --calls {args.calls}` (unpinned, both cores): a worker process "
        "answers `x + 1` for a float32 batch; round trip, medians, microseconds.",
        "",
        "| batch | bytes each way | socket (pickled) µs | shared memory µs | socket / shared |",
        "|---|---:|---:|---:|---:|",
    ]
    for (rows, features), took in results.items():
        size = rows * features * 4
        ratio = took["socket"] / took["shared memory"]
        lines.append(
            f"| {rows} x {features} | {size:,} | {took['socket']:.1f} | {took['shared memory']:.1f} | {ratio:.2f} |"
        )
    body = "\n".join(lines) + "\n"
    print(body)
    if args.report is not None:
        sections.put(args.report, "worker-transport", body)


if __name__ == "__main__":
    main()
