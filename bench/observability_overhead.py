"""What observability costs on the hot path: throughput and latency of the
same model with drift detection off and on, and with the access log.

    python bench/observability_overhead.py [--rounds 3] [--duration 4] [--report BENCHMARKS.md]

Metrics are always on (turnout has no switch for them; their cost is part of
every number here, and was measured when they were written: lock-free
counters, see src/turnout/observability/metrics.py). Configurations, each a
server pinned to core 0, driven from core 1 by ``turnout bench`` (REST, closed
loop, 8 clients) on breast_cancer (30 features: the most drift work per row):

- ``baseline``: no profile.json (no drift detection), no access log;
- ``drift``: the example's profile.json (every row counted, a window of 1000);
- ``drift + access log``: the same, and one JSON log record per request.

Rounds rotate the order; medians. And in process, the metrics alone: the data
plane answering the same request 20,000 times with turnout's metrics against
a stand-in whose every update does nothing (microseconds per request).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import build_models  # noqa: E402
import sections  # noqa: E402

from tests.support import ServerProcess  # noqa: E402

CONFIGS = {
    "baseline": ("plain", ()),
    "drift": ("profiled", ()),
    "drift + access log": ("profiled", ("--access-log", "--log-format", "json")),
}


def measure(repo: Path, extra: tuple[str, ...], work: Path, args: argparse.Namespace, name: str) -> dict[str, float]:
    server = ServerProcess(repo, *extra, "--model-control", "explicit", log_dir=work)
    if shutil.which("taskset"):
        server.command = ["taskset", "-c", "0", *server.command]
    out = work / f"{name.replace(' ', '_')}.json"
    argv = [str(BIN / "turnout"), "bench", "--model", "breast_cancer", "--url", server.url, "--concurrency", "8",
            "--duration", str(args.duration), "--warmup", "1", "--quiet", "--json", str(out)]  # fmt: skip
    if shutil.which("taskset"):
        argv = ["taskset", "-c", "1", *argv]
    with server:
        subprocess.run(argv, check=True, capture_output=True)
    point = json.loads(out.read_text())["results"][0]
    return {"throughput": point["throughput"], "p50": point["latency_ms"]["p50"], "p99": point["latency_ms"]["p99"]}


class _Nothing:
    """A metric child that records nothing."""

    def inc(self, amount: float = 1.0) -> None: ...

    def set(self, value: float) -> None: ...

    def observe(self, value: float) -> None: ...


class NoMetrics:
    """Every metric the data plane and registry update, doing nothing: the baseline for their cost."""

    def __getattr__(self, name: str) -> object:
        nothing = _Nothing()
        return lambda *labels: nothing


def metrics_cost(repository: Path, requests: int = 20_000) -> dict[str, float]:
    """Microseconds per DataPlane.infer on diabetes, with the metrics and without (medians of 5)."""
    import asyncio

    import numpy as np

    from turnout.model.repository import ModelRepository
    from turnout.observability.metrics import Metrics
    from turnout.protocol.types import InferenceRequest, InferInput
    from turnout.serving.dataplane import DataPlane
    from turnout.serving.registry import ModelRegistry

    row = np.zeros((1, 10), dtype=np.float32)

    async def run(metrics: object) -> float:
        registry = ModelRegistry(ModelRepository(repository), metrics)  # type: ignore[arg-type]
        await registry.load_all()
        plane = DataPlane(registry=registry, metrics=metrics)  # type: ignore[arg-type]
        plane.mark_started()
        request = lambda: InferenceRequest("diabetes", None, [InferInput("input", "FP32", (1, 10), row)])  # noqa: E731
        for _ in range(2000):
            await plane.infer(request(), "rest")
        times = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(requests // 5):
                await plane.infer(request(), "rest")
            times.append((time.perf_counter() - started) / (requests // 5) * 1e6)
        await registry.close()
        return statistics.median(times)

    results = {}
    for name, factory in (("without metrics", NoMetrics), ("with metrics", Metrics)) * 2:  # alternate, twice
        results.setdefault(name, []).append(asyncio.run(run(factory())))
    return {name: statistics.median(values) for name, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="turnout-overhead-"))
    repos = {"profiled": work / "profiled", "plain": work / "plain"}
    build_models.build(repos["profiled"])
    shutil.copytree(repos["profiled"], repos["plain"])
    for profile in repos["plain"].glob("*/*/profile.json"):
        profile.unlink()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
    names = list(CONFIGS)
    for round_ in range(args.rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            repo, extra = CONFIGS[name]
            result = measure(repos[repo], extra, work, args, f"{name}-{round_}")
            results[name].append(result)
            print(name, round_, result, flush=True)
    base = statistics.median(r["throughput"] for r in results["baseline"])
    lines = [
        "## Observability overhead",
        "",
        "breast_cancer (30 features), REST, 8 clients in a closed loop, server on core 0, load from core 1, "
        f"{args.rounds} rounds of {args.duration:g} s (medians); metrics on throughout; "
        f"`make bench-observability` (`.venv/bin/python bench/observability_overhead.py --rounds {args.rounds} "
        f"--duration {args.duration:g}`).",
        "",
        "| configuration | req/s | vs baseline | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        rows = results[name]
        throughput = statistics.median(r["throughput"] for r in rows)
        lines.append(
            f"| {name} | {throughput:,.0f} | {throughput / base:.2f}x | "
            f"{statistics.median(r['p50'] for r in rows):.3f} | {statistics.median(r['p99'] for r in rows):.3f} |"
        )
    cost = metrics_cost(repos["plain"])
    lines += [
        "",
        "The metrics alone, in process (DataPlane.infer on diabetes, 20,000 requests, medians): "
        f"{cost['with metrics']:.1f} µs per request with turnout's metrics, {cost['without metrics']:.1f} µs with "
        f"a stand-in that records nothing: {cost['with metrics'] - cost['without metrics']:.1f} µs for the metrics "
        f"({(cost['with metrics'] - cost['without metrics']) / cost['without metrics']:.1%}).",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    sections.put(args.report, "observability_overhead", table)


if __name__ == "__main__":
    main()
