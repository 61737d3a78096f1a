"""The attack tests, run and tabulated: what each attack of issue 15 did to a
steady client on another connection, and to the server's memory.

    python bench/attacks.py [--report BENCHMARKS.md]

Runs the attack tests (tests/integration/test_http1_attacks.py,
test_http2_attacks.py, test_body_attacks.py) and the decoder fuzzing
(test_fuzz_decoders.py) with ``TURNOUT_ATTACK_REPORT`` set, so that each test
appends what it measured (the steady client's calls, p99 and longest gap
during the attack, the server's RSS growth); then prints one table row per
test with its outcome, and with ``--report`` writes them as the ``attacks``
section of that file. The bars the tests assert: p99 <= 1 s, no failed call,
RSS growth <= 200 MB, served again within 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import sections  # noqa: E402

FILES = [
    "tests/integration/test_http1_attacks.py",
    "tests/integration/test_http2_attacks.py",
    "tests/integration/test_body_attacks.py",
    "tests/integration/test_fuzz_decoders.py",
    "tests/integration/test_logs.py::test_no_credential_reaches_any_log_at_debug_level",
]

# issue 15's items, by the words in a test's name
ITEMS = [
    ("echoes_a_long_path", "1"),
    ("pipelined", "2"),
    ("answers_never_read", "2"),
    ("hpack", "3"),
    ("rapid_reset", "4"),
    ("control_frame_floods", "5"),
    ("silent_connections", "6"),
    ("audit_log", "7"),
    ("credential_reaches_any_log", "8"),
    ("unauthenticated_body", "9"),
    ("expect_100", "9"),
    ("budget", "9"),
    ("without_a_credential", "9"),
    ("compressed", "9"),
    ("header_line", "10"),
    ("200000_headers", "10"),
    ("long_url", "10"),
    ("test_fuzz_decoders", "12"),
]


COLUMNS = ("steady_calls", "steady_p99_ms", "steady_max_gap_ms", "rss_growth_mb")  # what attack_support reports


def item(test: str) -> str:
    return next((number for words, number in ITEMS if words in test), "11")


def listener(test: str) -> str:
    if "http1" in test:
        return "HTTP/1.1"
    if "http2" in test:
        return "HTTP/2"
    return "both"


def run(report_file: Path, junit: Path) -> float:
    env = {**os.environ, "TURNOUT_ATTACK_REPORT": str(report_file)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *FILES]
    began = time.monotonic()
    subprocess.run(command, cwd=ROOT, env=env, check=False)
    return time.monotonic() - began


def outcomes(junit: Path) -> dict[str, tuple[str, float]]:
    """test id -> (passed/failed/error/skipped, seconds)."""
    found: dict[str, tuple[str, float]] = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/") + ".py"
        test = f"{module}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcome = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
        found[test] = ({"failure": "failed"}.get(outcome, outcome), float(case.get("time", 0)))
    return found


def measured(report_file: Path) -> dict[str, dict[str, object]]:
    numbers: dict[str, dict[str, object]] = {}
    if report_file.exists():
        for line in report_file.read_text().splitlines():
            record = json.loads(line)
            numbers.setdefault(record.pop("test"), {}).update(record)
    return numbers


def table(found: dict[str, tuple[str, float]], numbers: dict[str, dict[str, object]], seconds: float) -> str:
    lines = [
        "## Attacks (issue 15)",
        "",
        "Each attack from one raw-socket connection (the `h2` library's HPACK and hand-made frames, or raw "
        "HTTP/1.1 bytes) against a real `turnout serve` process with its default limits, while a steady client "
        "on another connection calls `breast_cancer` back to back (gRPC for the HTTP/2 attacks, REST for the "
        "others). Steady p99, longest gap between its calls and the server's RSS growth are measured over the "
        "attack; each test also asserts the defence's own answer (431, 414, 401, 503 + Retry-After, GOAWAY "
        "ENHANCE_YOUR_CALM, a server that stops reading, ...). Bars: no failed call, p99 <= 1 s, RSS growth "
        "<= 200 MB, served again within 2 s. Item 8 runs a server at `--log-level debug` and greps every log "
        "for the key. Item 12 is the decoder fuzzing (hypothesis: nesting to 200k, "
        "4,000-digit integers, invalid UTF-8, lying binary-extension lengths, 1-8 MB strings; REST and gRPC): "
        "no 5xx, no hang. Item 13 is the overload section below. "
        f"`.venv/bin/python bench/attacks.py --report BENCHMARKS.md` ({seconds / 60:.1f} min on this machine).",
        "",
        "| item | listener | test | outcome | steady calls | steady p99 ms | longest gap ms | RSS growth MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fuzz = [t for t in found if "test_fuzz_decoders" in t]
    for test, (outcome, _) in sorted(found.items(), key=lambda kv: (int(item(kv[0])), kv[0])):
        if test in fuzz:
            continue
        n = numbers.get(test, {})
        name = test.split("::", 1)[1]
        cells = [
            str(n.get(key, "-")) for key in ("steady_calls", "steady_p99_ms", "steady_max_gap_ms", "rss_growth_mb")
        ]
        lines.append(f"| {item(test)} | {listener(test)} | `{name}` | {outcome} | " + " | ".join(cells) + " |")
    if fuzz:
        passed = sum(found[t][0] == "passed" for t in fuzz)
        took = sum(found[t][1] for t in fuzz)
        fuzzing = f"decoder fuzzing ({len(fuzz)} tests, {took:.0f} s)"
        lines.append(f"| 12 | both | {fuzzing} | {passed} of {len(fuzz)} passed | - | - | - | - |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", type=Path, default=None, help="write the table as a section of this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        report_file, junit = Path(work) / "attacks.jsonl", Path(work) / "junit.xml"
        seconds = run(report_file, junit)
        text = table(outcomes(junit), measured(report_file), seconds)
    print(text)
    if args.report is not None:
        sections.put(args.report, "attacks", text)


if __name__ == "__main__":
    main()
