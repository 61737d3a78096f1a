"""``turnout routing``, ``turnout rollout`` and ``turnout ab``: traffic
control of a running server, through its admin plane (REST). Stdlib HTTP
only, so the commands work wherever turnout is installed.

The admin address and key come from ``--admin-url`` / ``--key`` or the
environment (``TURNOUT_ADMIN_URL``, ``TURNOUT_ADMIN_KEY``).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from turnout.cli.admin_client import AdminError, add_admin_options, call


def add_commands(commands: Any) -> None:
    """Add the three command groups to the ``turnout`` parser's subcommands."""
    routing = commands.add_parser("routing", help="show and change endpoints' traffic policies (admin plane)")
    sub = routing.add_subparsers(title="routing commands")
    _command(sub, "show", "an endpoint's policy, rollout and shadow statistics (all endpoints without one)",
             _show, endpoint="?")  # fmt: skip
    setter = _command(sub, "set", "set an endpoint's policy from a JSON document", _set)
    source = setter.add_mutually_exclusive_group(required=True)
    source.add_argument("--json", help='the policy, e.g. \'{"policy": "blue_green", "blue": "1", "green": "2"}\'')
    source.add_argument("--file", type=Path, help="a file holding the policy as JSON")
    _command(sub, "clear", "remove an endpoint's policy: its default version serves", _clear)
    switch = _command(sub, "switch", "blue/green: move all traffic to the other variant", _switch)
    switch.add_argument("--to", help="the variant to switch to (default: the one not live)")
    _command(sub, "events", "the endpoint's event log: every change and automatic decision", _events)

    rollout = commands.add_parser("rollout", help="progressive canary rollouts (admin plane)")
    sub = rollout.add_subparsers(title="rollout commands")
    start = _command(sub, "start", "start a canary rollout of a candidate variant", _start)
    start.add_argument(
        "--candidate", required=True, help="the variant to roll out: a version ('2') or 'model[:version]'"
    )
    start.add_argument("--baseline", help="the variant it replaces (default: the one serving now)")
    start.add_argument(
        "--steps",
        default="5:60s,25:60s,50:60s,100:60s",
        help="WEIGHT:HOLD (seconds, 's') and/or WEIGHT:COUNT (candidate requests, 'r'), comma-separated "
        "(default 5:60s,25:60s,50:60s,100:60s)",
    )
    start.add_argument("--max-error-ratio", type=float, help="candidate error rate at most this x the baseline's")
    start.add_argument("--max-p99-ratio", type=float, help="candidate p99 latency at most this x the baseline's")
    start.add_argument(
        "--latency-slack-ms", type=float, help="...or the baseline's plus this many milliseconds, whichever is larger"
    )
    start.add_argument("--min-samples", type=int, help="requests on each side before the guard judges")
    start.add_argument(
        "--confidence", type=float, help="of the guard's bounds on error rates and p99s, at each look (0.999)"
    )
    start.add_argument(
        "--mirror-percent", type=float, help="also send this percent of the baseline's requests to the candidate..."
    )
    start.add_argument(
        "--min-agreement", type=float, help="...and roll back if their outputs agree on less than this fraction"
    )
    for name, text in (
        ("status", "the rollout's state, step and windows"),
        ("pause", "hold the current step (traffic stays as it is)"),
        ("resume", "continue a paused rollout"),
        ("promote", "send all traffic to the candidate now"),
        ("rollback", "send all traffic back to the baseline now"),
    ):
        _command(sub, name, text, _status if name == "status" else _operation(name))

    ab = commands.add_parser("ab", help="A/B test results (admin plane)")
    sub = ab.add_subparsers(title="ab commands")
    report = _command(sub, "report", "per-variant outcomes, the difference with a 95% CI and a p-value", _ab_report)
    report.add_argument("--min", type=int, default=30, help="outcomes per variant before testing (default 30)")
    report.add_argument("--baseline", help="the variant the others are compared with")


def _command(sub: Any, name: str, text: str, run: Any, endpoint: str | None = None) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text)
    parser.add_argument("endpoint", nargs=endpoint, help="the model name clients call")
    add_admin_options(parser)
    parser.set_defaults(run=run)
    return parser


def _run(args: argparse.Namespace, method: str, path: str, body: Any = None) -> int:
    try:
        answer = call(args, method, path, body)
    except AdminError as exc:
        print(f"turnout: {exc}", file=sys.stderr)
        return 1
    if args.json_output:
        print(json.dumps(answer, indent=2))
    elif isinstance(answer, list):
        for item in answer:
            print(_format_status(item) if "policy" in item else _format_event(item))
    elif isinstance(answer, dict) and "endpoint" in answer:
        print(_format_status(answer))
    else:
        print(json.dumps(answer, indent=2))
    return 0


def _path(args: argparse.Namespace, suffix: str = "") -> str:
    return f"/v2/routing/{urllib.parse.quote(args.endpoint, safe='')}{suffix}"


def _show(args: argparse.Namespace) -> int:
    return _run(args, "GET", _path(args) if args.endpoint else "/v2/routing")


def _set(args: argparse.Namespace) -> int:
    text = args.json if args.json is not None else args.file.read_text(encoding="utf-8")
    try:
        document = json.loads(text)
    except ValueError as exc:
        print(f"turnout: the policy is not valid JSON: {exc}", file=sys.stderr)
        return 2
    return _run(args, "PUT", _path(args), document)


def _clear(args: argparse.Namespace) -> int:
    return _run(args, "DELETE", _path(args))


def _switch(args: argparse.Namespace) -> int:
    return _run(args, "POST", _path(args, "/switch"), {"to": args.to} if args.to else {})


def _events(args: argparse.Namespace) -> int:
    return _run(args, "GET", _path(args, "/events"))


def _start(args: argparse.Namespace) -> int:
    guard = {
        name: value
        for name, value in (
            ("max_error_ratio", args.max_error_ratio),
            ("max_p99_ratio", args.max_p99_ratio),
            ("min_samples", args.min_samples),
            ("latency_slack_ms", args.latency_slack_ms),
            ("confidence", args.confidence),
            ("mirror_percent", args.mirror_percent),
            ("min_agreement", args.min_agreement),
        )
        if value is not None
    }
    body = {"candidate": args.candidate, "baseline": args.baseline, "steps": args.steps, "guard": guard}
    return _run(args, "POST", _path(args, "/rollout/start"), body)


def _status(args: argparse.Namespace) -> int:
    return _run(args, "GET", _path(args))


def _operation(name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        return _run(args, "POST", _path(args, f"/rollout/{name}"), {})

    return run


def _ab_report(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"min_count": args.min}
    if args.baseline:
        body["baseline"] = args.baseline
    try:
        answer = call(args, "POST", _path(args, "/ab"), body)
    except AdminError as exc:
        print(f"turnout: {exc}", file=sys.stderr)
        return 1
    if args.json_output:
        print(json.dumps(answer, indent=2))
        return 0
    print(answer["text"])
    return 0


def _format_status(status: dict[str, Any]) -> str:
    lines = [f"{status['endpoint']}:"]
    policy = status.get("policy")
    if policy is None:
        lines.append("  no policy: the default version serves every request")
        return "\n".join(lines)
    kind = policy["policy"]
    shown = ", ".join(f"{k}={v}" for k, v in policy.items() if k != "policy")
    lines.append(f"  policy: {kind} ({shown}), set by {status.get('source')}")
    plan = status.get("rollout")
    if plan is not None:
        steps = " -> ".join(f"{s['weight']:g}%" for s in plan["steps"])
        lines.append(
            f"  rollout: {plan['baseline']} -> {plan['candidate']}, {plan['state']}, "
            f"candidate at {plan['weight']:g}% (step {plan['step'] + 1} of {len(plan['steps'])}: {steps})"
        )
        if plan.get("reason"):
            lines.append(f"  reason: {plan['reason']}")
    for variant, window in (status.get("window") or {}).items():
        p50, p99 = (window.get(name) for name in ("p50_seconds", "p99_seconds"))
        median, tail = ("-" if value is None else f"{value * 1000:.1f} ms" for value in (p50, p99))
        lines.append(
            f"  window {variant}: {window['requests']} requests, {window['errors']} errors, median {median}, p99 {tail}"
        )
    for shadow in status.get("shadow") or []:
        rate = shadow.get("agreement_rate")
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted((shadow.get("dropped_by") or {}).items()))
        lines.append(
            f"  shadow {shadow['shadow']}: {shadow['requests']} compared, agreement "
            f"{'-' if rate is None else f'{rate:.1%}'}, {shadow['errors']} errors, {shadow['dropped']} dropped"
            + (f" ({reasons})" if reasons else "")
        )
        lines.extend(_output_lines(shadow))
    return "\n".join(lines)


def _output_lines(shadow: dict[str, Any]) -> list[str]:
    """Each output's own agreement: two classifiers whose labels always agree
    still disagree as a pair wherever their probabilities differ by over 1e-3."""
    lines = []
    for name, rate in sorted((shadow.get("output_agreement") or {}).items()):
        line = f"    {name}: agreement {'-' if rate is None else f'{rate:.1%}'}"
        largest, mean = (shadow.get(kind, {}).get(name) for kind in ("max_abs", "mean_abs"))
        if largest is not None and mean is not None:
            line += f", |difference| up to {largest:.3g}, {mean:.3g} a request on average"
        lines.append(line)
    return lines


def _format_event(event: dict[str, Any]) -> str:
    return f"{event['time']}  {event['kind']:<12} {event['detail']}  ({event['actor']})"
