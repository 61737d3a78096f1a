"""What a worker process adds to a Python model's batch: the example model
(``examples/python_models/text_stats``) loaded twice, ``isolation = "none"``
(in the server's process) and ``"process"`` (a worker), each instance's
``predict`` timed back to back from one thread, as the batcher calls it.

    python bench/python_isolation.py [--calls 3000] [--report BENCHMARKS.md]

Medians over the calls, at batches of 1 and 64 rows; the difference is the
worker's cost per batch (pickling both ways, two socket hops, and the waits
awake that keep them from sleeping).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import sections  # noqa: E402  (bench/sections.py)

from turnout.model.loader import load_version  # noqa: E402
from turnout.model.repository import ModelRepository  # noqa: E402
from turnout.model.runtimes.catalog import RuntimeCatalog  # noqa: E402

EXAMPLE = ROOT / "examples" / "python_models" / "text_stats"
OUTPUTS = ["shouted", "characters"]


def measure(isolation: str, calls: int) -> dict[int, float]:
    """Median microseconds per predict, by rows."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        shutil.copytree(EXAMPLE, root / "text_stats")
        toml = root / "text_stats" / "model.toml"
        toml.write_text(toml.read_text() + f'isolation = "{isolation}"\n')
        version = load_version(
            ModelRepository(root, RuntimeCatalog(allow_trusted_models=True)).read("text_stats"), 1, True
        )
        instance = version.instances[0]
        medians = {}
        try:
            for rows in (1, 64):
                batch = {"text": np.array([b"hello"] * rows, dtype=object)}
                for _ in range(calls // 10):
                    instance.predict(batch, OUTPUTS)
                took = []
                for _ in range(calls):
                    started = time.perf_counter()
                    instance.predict(batch, OUTPUTS)
                    took.append(time.perf_counter() - started)
                medians[rows] = statistics.median(took) * 1e6
        finally:
            for each in version.instances:
                each.close()
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--report", type=Path, default=None, help="write the section into this BENCHMARKS.md")
    args = parser.parse_args()
    inside, worker = measure("none", args.calls), measure("process", args.calls)
    lines = [
        "## Python models: what a worker process adds to a batch",
        "",
        f"`python bench/python_isolation.py --calls {args.calls}`: the example Python model, `predict` timed back "
        "to back from one thread as the batcher calls it; medians.",
        "",
        "| rows | in-process µs | worker µs | worker adds µs |",
        "|---:|---:|---:|---:|",
    ]
    for rows in (1, 64):
        lines.append(f"| {rows} | {inside[rows]:.1f} | {worker[rows]:.1f} | {worker[rows] - inside[rows]:.1f} |")
    body = "\n".join(lines) + "\n"
    print(body)
    if args.report is not None:
        sections.put(args.report, "python-isolation", body)


if __name__ == "__main__":
    main()
