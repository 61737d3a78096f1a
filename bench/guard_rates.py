"""How often the rollout guard is right: many simulated rollouts of identical,
erroring and slow candidates, judged by turnout's own guard.

    python bench/guard_rates.py [--rollouts 1000] [--seed 7]

Each rollout runs the real pure core (``VariantWindow``, ``advance``) the way
``TrafficControl.tick`` does, looking every 50 requests, through the steps
10% (400 candidate requests), 50% (600), 100% (300), with the default guard
(confidence 0.999 per look). Latencies are drawn from a server-like
distribution (a ~1 ms log-normal body, 2% queueing bursts, 0.2% pauses of the
process); errors at known rates. ``tests/routing/test_guard.py`` runs the same
with fewer rollouts and holds the bars; this reports the rates at scale.

``--real N`` also runs N rollouts of each kind against a real server (the
example repository's wine model, four clients back to back): a byte-identical
copy of version 1, a copy failing on the 5% of rows with the most alcohol,
and a copy made slow on the CPU (``tests.support.slower``).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import sections  # noqa: E402  (bench/sections.py)

from tests.integration.reference import wine_rows  # noqa: E402
from tests.onnx_models import failing_when_above, slower, write_model  # noqa: E402
from tests.routing.test_guard import SERVER_LIKE, STEPS, Variant, simulate  # noqa: E402
from tests.support import ServerProcess, SteadyLoad  # noqa: E402
from turnout.routing.rollout import State  # noqa: E402

REAL_STEPS = "10:1s:400r,50:1s:600r,100:1s:300r"

CASES = (
    ("identical", SERVER_LIKE, SERVER_LIKE, "promoted"),
    ("identical, both failing 2%", Variant(error_rate=0.02), Variant(error_rate=0.02), "promoted"),
    ("5% errors (baseline none)", Variant(error_rate=0.05), SERVER_LIKE, "rolled back within two steps"),
    ("3x latency", Variant(latency_factor=3.0), SERVER_LIKE, "rolled back within two steps"),
    ("1.5x latency (within the 1.5x ratio)", Variant(latency_factor=1.5), SERVER_LIKE, "promoted"),
)

HEAD = """## Rollout guard: identical candidates promoted, bad ones rolled back

The guard (`src/turnout/routing/guard.py`) compares candidate and baseline in
the same step window, on confidence bounds (order statistics for the median
and p99, Newcombe's interval for the error-rate difference) with absolute
slack (1 ms, one point of errors), at confidence 0.999 per look, one look
per tick. Simulated rollouts through 10% (400 candidate requests), 50% (600),
100% (300), a look every 50 requests, latencies from a server-like
distribution (~1 ms body, 2% queueing bursts, 0.2% process pauses). The
issue's bars: identical candidates promoted in at least 99% of rollouts, 5%
errors or 3x latency rolled back in at least 99%, within two steps.

"""


FOOT = """The guard of f2ff761 (a raw p99 ratio without slack, 20 samples' maximum
against hundreds, 100% judged against another window) rolled back 3 to 7 of
every 8 byte-identical copies in issue 16's trials; `tests/routing/test_guard.py`
fails on it. The real slow candidate above is over 10x the baseline's median;
a 3x slower copy of this 0.1 ms model stays within the 1 ms latency slack
and is promoted, by design: sub-millisecond differences are not regressions
unless `latency_slack_ms` says so.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--real", type=int, default=0, help="also this many rollouts of each kind on a real server")
    parser.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    lines = [
        f"{args.rollouts} rollouts per case, seed {args.seed}; `.venv/bin/python bench/guard_rates.py "
        f"--rollouts {args.rollouts} --seed {args.seed}" + (f" --real {args.real}" if args.real else "") + "`",
        "",
        "| candidate | expected | promoted | rolled back at 10% | at 50% | at 100% | rate as expected |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, candidate, baseline, expected in CASES:
        rng = random.Random(args.seed)
        began = time.monotonic()
        ends = [simulate(candidate, rng, baseline=baseline) for _ in range(args.rollouts)]
        promoted = sum(state is State.PROMOTED for state, _ in ends)
        back = [sum(state is State.ROLLED_BACK and step == i for state, step in ends) for i in range(len(STEPS))]
        right = promoted if expected == "promoted" else back[0] + back[1]
        lines.append(
            f"| {name} | {expected} | {promoted} | {back[0]} | {back[1]} | {back[2]} | {right / args.rollouts:.1%} |"
        )
        print(lines[-1], f"({time.monotonic() - began:.0f} s)", flush=True)
    if args.real:
        lines += ["", *real_rollouts(args.real)]
    table = "\n".join(lines)
    if args.report is not None:
        sections.put(args.report, "rollout_guard", HEAD + table + "\n\n" + FOOT)


def real_rollouts(count: int) -> list[str]:
    """``count`` rollouts per kind on a real server, steps REAL_STEPS, the default guard."""
    work = Path(tempfile.mkdtemp(prefix="turnout-guard-"))
    repo = work / "models"
    sys.path.insert(0, str(ROOT / "examples"))
    import build_models

    build_models.build(repo)
    source = repo / "wine" / "1" / "model.onnx"
    rows = wine_rows(178)
    shutil.copytree(repo / "wine" / "1", repo / "wine" / "3")  # identical
    threshold = float(np.quantile(rows[:, 0], 0.95))
    write_model(repo / "wine" / "4" / "model.onnx", failing_when_above(source, "input", "probabilities", threshold))
    write_model(repo / "wine" / "5" / "model.onnx", slower(source, "input", "probabilities", products=60))
    kinds = (("identical copy", "3", "promoted"), ("failing on the top 5% alcohol", "4", "rolled_back"),
             ("slower on the CPU", "5", "rolled_back"))  # fmt: skip
    lines = [
        f"A real server, {count} rollouts of each kind of candidate of `wine` version 1, steps `{REAL_STEPS}`, "
        "the default guard, four clients back to back:",
        "",
        "| candidate | promoted | rolled back | as expected | decided in s (median) | a rollback's reason |",
        "|---|---|---|---|---|---|",
    ]
    with ServerProcess(repo, log_dir=work) as server, server.admin_client() as admin:
        load = SteadyLoad(server.url, "/v2/models/wine/infer",
                          lambda i: {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 13],
                                                 "data": rows[i % len(rows)].tolist()}]},
                          lambda response: "")  # fmt: skip
        with load:
            for name, candidate, expected in kinds:
                ends: list[tuple[str, float, str]] = []
                for _ in range(count):
                    ends.append(_one_rollout(admin, candidate))
                right = sum(state == expected for state, _, _ in ends)
                reason = next((r for state, _, r in ends if state == "rolled_back"), "")
                seconds = statistics.median(t for _, t, _ in ends)
                lines.append(
                    f"| {name} | {sum(s == 'promoted' for s, _, _ in ends)} | "
                    f"{sum(s == 'rolled_back' for s, _, _ in ends)} | {right}/{count} | {seconds:.1f} | "
                    f"{_short(reason)} |"
                )
                print(lines[-1], flush=True)
        assert not [f for f in load.failures if "500" not in f], load.failures[:3]
    return lines


def _one_rollout(admin: Any, candidate: str) -> tuple[str, float, str]:
    admin.delete("/v2/routing/wine")
    began = time.monotonic()
    admin.post("/v2/routing/wine/rollout/start",
               json={"candidate": candidate, "baseline": "1", "steps": REAL_STEPS}).raise_for_status()  # fmt: skip
    while True:
        rollout = admin.get("/v2/routing/wine").json()["rollout"]
        if rollout["state"] != "running":
            return rollout["state"], time.monotonic() - began, rollout["reason"]
        time.sleep(0.1)


def _short(reason: str) -> str:
    return re.sub(r"\s+", " ", reason)[:140]


if __name__ == "__main__":
    main()
