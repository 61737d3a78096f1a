"""Latency against throughput, one point per concurrency or rate (matplotlib,
an optional extra: ``pip install 'turnout[bench]'``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from turnout.bench.loadgen import Result


def plot(results: Sequence[Result], path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("turnout bench: --plot needs matplotlib: pip install 'turnout[bench]'") from None
    figure, axes = plt.subplots(figsize=(7, 4.5))
    throughput = [r.throughput for r in results]
    for name, style in (("p50", "o-"), ("p99", "s--")):
        axes.plot(throughput, [r.latency_ms[name] for r in results], style, label=name)
    for result in results:
        label = f"c={result.concurrency}" if result.concurrency is not None else f"{result.rate:g}/s"
        axes.annotate(label, (result.throughput, result.latency_ms["p50"]), textcoords="offset points", xytext=(4, 4))
    axes.set_xlabel("throughput (requests/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
