"""``turnout models pin|unpin|rollback|versions``: a running server's default
versions, through its admin plane."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

from turnout.cli.admin_client import AdminError, add_admin_options, call


def add_commands(models: Any) -> None:
    """Add the commands to the ``turnout models`` subcommands."""
    pin = _command(models, "pin", "make VERSION the default of a running server's model (loading it if needed)", "pin")
    pin.add_argument("version", help="the version to pin")
    _command(models, "unpin", "back to the default the version policy gives", "unpin")
    _command(models, "rollback", "back to the previous default version (pinned)", "rollback")
    _command(models, "versions", "the default, the pin, earlier defaults and each version's state", None)


def _command(models: Any, name: str, text: str, action: str | None) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = models.add_parser(name, help=text, description=text)
    parser.add_argument("model")
    add_admin_options(parser)
    parser.set_defaults(run=lambda args: _run(args, action))
    return parser


def _run(args: argparse.Namespace, action: str | None) -> int:
    path = f"/v2/repository/models/{urllib.parse.quote(args.model, safe='')}"
    try:
        if action is None:
            answer = call(args, "GET", path + "/versions")
        else:
            body = {"version": args.version} if action == "pin" else {}
            answer = call(args, "POST", f"{path}/{action}", body)
    except AdminError as exc:
        print(f"turnout: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if args.json_output else _format(answer))
    return 0


def _format(status: dict[str, Any]) -> str:
    pinned = f" (pinned to {status['pinned']})" if status.get("pinned") else ""
    lines = [f"{status['name']}: default version {status.get('default') or '-'}{pinned}"]
    if status.get("history"):
        lines.append(f"  earlier defaults: {', '.join(status['history'])}")
    for version in status.get("versions", []):
        reason = f": {version['reason']}" if version.get("reason") else ""
        lines.append(f"  version {version['version'] or '-'}: {version['state']}{reason}")
    return "\n".join(lines)
