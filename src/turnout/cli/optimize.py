"""``turnout optimize REPO MODEL --from V``: a cheaper version of an ONNX model
written beside it (``turnout/optimize``), its report printed and saved as the
new version's ``optimize.json``; with ``--shadow`` or ``--canary``, put in
front of real traffic through a running server's admin plane.

Exit status: 0 written, 1 refused by ``--min-agreement`` (nothing written),
2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from turnout.cli.admin_client import AdminError, add_admin_options, call
from turnout.errors import ConfigError
from turnout.optimize import OptimizeError

DEFAULT_STEPS = "5:60s,25:60s,50:60s,100:60s"


def add_command(commands: Any) -> None:
    parser = commands.add_parser(
        "optimize",
        help="write a cheaper version of an ONNX model (fusion, int8, fp16, pruning), with a report",
        description="Write a new version of MODEL from version --from: pruned, quantized to int8 or fp16, "
        "its graph optimised offline; report the agreement with the source and the speed, size and load "
        "time of both, measured in this run. The source version is never changed.",
    )
    parser.add_argument("repository", type=Path, help="the model repository")
    parser.add_argument("model", help="the model's name")
    parser.add_argument("--from", dest="source", type=int, required=True, help="the version to start from")
    parser.add_argument("--to", dest="target", type=int, help="the new version's number (default: the next free)")
    parser.add_argument("--graph", choices=("basic", "extended", "all"), help="ONNX Runtime's fusions, saved offline")
    parser.add_argument("--int8", choices=("dynamic", "static"), help="int8 quantization (static needs --calibration)")
    parser.add_argument("--fp16", action="store_true", help="half-precision weights (for a GPU; slower on most CPUs)")
    parser.add_argument("--fp16-io", action="store_true", help="with --fp16: inputs and outputs in fp16 too")
    parser.add_argument("--prune", type=float, metavar="RATIO", help="remove this share of each hidden layer's units")
    parser.add_argument("--calibration", type=Path, help="representative inputs: .npy, .npz, .csv, .parquet, or a "
                        "payload log (.jsonl)")  # fmt: skip
    parser.add_argument("--validation", type=Path, help="inputs (and labels) to compare on (default: --calibration)")
    parser.add_argument("--label-column", help="in a .csv or .parquet: the column of labels (a .npz: 'label')")
    parser.add_argument("--min-agreement", type=float, help="write nothing if the agreement is lower (e.g. 0.99)")
    parser.add_argument("--report", type=Path, help="also write the report (JSON) here, written or not")
    rollout = parser.add_mutually_exclusive_group()
    rollout.add_argument("--shadow", action="store_true", help="then shadow the serving version with it")
    rollout.add_argument("--canary", action="store_true", help="then start a progressive canary rollout of it")
    parser.add_argument("--steps", default=DEFAULT_STEPS, help=f"--canary's steps (default {DEFAULT_STEPS})")
    add_admin_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        from turnout.optimize import samples
        from turnout.optimize.version import Plan, optimize, source_of
    except ImportError as exc:  # onnx is an extra's (pyproject: optimize)
        print(f"turnout optimize needs {exc.name}: pip install 'turnout[optimize]'", file=sys.stderr)
        return 2

    plan = Plan(args.prune, args.int8, args.fp16, not args.fp16_io, args.graph)
    live = args.shadow or args.canary
    held: _Held | None = None
    try:
        plan.check()
        source = source_of(args.repository, args.model, args.source)
        calibration = None
        if args.calibration is not None:
            calibration = samples.read(args.calibration, source.signature, args.label_column, args.model)
        if args.validation is not None:
            validation = samples.read(args.validation, source.signature, args.label_column, args.model)
        elif calibration is not None:
            validation = calibration
        else:
            raise OptimizeError("give --validation (or --calibration) FILE: inputs to compare the versions on")
        if live:  # before the version appears: a server polling the repository must not swap to it first
            held = _hold(args, args.source)
        report = optimize(source, args.target, plan, validation, calibration, args.min_agreement)
    except (OptimizeError, ConfigError, AdminError) as exc:
        _release(args, held)
        print(f"turnout optimize: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        _release(args, held)
        raise
    print(report.text())
    if args.report is not None:
        args.report.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    if not report.written:
        _release(args, held)
        return 1
    if live:
        try:
            _go_live(args, report.source_version, report.version, _summary(report))
        except AdminError as exc:
            undo = f"`turnout models unpin {args.model}` to undo"
            print(f"turnout optimize: version {report.version} is written, but not live: {exc} (version "
                  f"{report.source_version} stays pinned: {undo})", file=sys.stderr)  # fmt: skip
            return 2
    return 0


@dataclass(frozen=True)
class _Held:
    """The pin ``_hold`` replaced (None: there was none), to put back if no version goes live."""

    before: str | None


def _hold(args: argparse.Namespace, source: int) -> _Held | None:
    """Pin the source version, so it stays loaded and the default (as the baseline) whatever
    the version policy does once the new version is on disk; None if it was pinned already."""
    before = call(args, "GET", f"/v2/repository/models/{args.model}/versions").get("pinned")
    if before == str(source):
        return None
    call(args, "POST", f"/v2/repository/models/{args.model}/pin", {"version": str(source)})
    return _Held(before)


def _release(args: argparse.Namespace, held: _Held | None) -> None:
    if held is None:
        return
    try:
        if held.before is None:
            call(args, "POST", f"/v2/repository/models/{args.model}/unpin")
        else:
            call(args, "POST", f"/v2/repository/models/{args.model}/pin", {"version": held.before})
    except AdminError as exc:
        print(f"turnout optimize: the pin of version {args.source} could not be undone: {exc}", file=sys.stderr)


def _go_live(args: argparse.Namespace, source: int, version: int, note: str) -> None:
    """The new version loaded beside the pinned source, then shadowed or rolled out."""
    model = args.model
    call(args, "POST", f"/v2/repository/models/{model}/load")
    if args.shadow:
        body = {"policy": "shadow", "primary": str(source), "shadow": str(version), "note": note}
        call(args, "PUT", f"/v2/routing/{model}", body)
        print(f"version {version} shadows version {source}: `turnout routing show {model}` compares their outputs")
    else:
        body = {"candidate": str(version), "baseline": str(source), "steps": args.steps, "note": note}
        call(args, "POST", f"/v2/routing/{model}/rollout/start", body)
        print(f"canary rollout of version {version} started: `turnout rollout status {model}`")


def _summary(report: Any) -> str:
    """The report in one line of the event log."""
    speeds = "; ".join(f"{batch} {s['optimized'] / s['source']:.2f}x rows/s" for batch, s in
                       report.rows_per_second.items())  # fmt: skip
    metric = ""
    if report.task_metric is not None:
        found = report.task_metric
        metric = f"; {found['name']} {found['source']:.4f} -> {found['optimized']:.4f}"
    return (f"turnout optimize: version {report.version} from {report.source_version} "
            f"({', '.join(report.steps)}): agreement {report.agreement:.4f}{metric}; {speeds}; "
            f"{report.size_bytes['source']:,} -> {report.size_bytes['optimized']:,} bytes")  # fmt: skip
