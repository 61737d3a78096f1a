"""Talking to a running server's admin plane from the command line (REST,
stdlib HTTP only, so it works wherever turnout is installed). The address and
key come from ``--admin-url`` / ``--key`` or the environment
(``TURNOUT_ADMIN_URL``, ``TURNOUT_ADMIN_KEY``)."""

from __future__ import annotations

import argparse
import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_ADMIN_URL = "http://127.0.0.1:8082"


def add_admin_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("TURNOUT_ADMIN_URL", DEFAULT_ADMIN_URL),
        help=f"the admin plane (default $TURNOUT_ADMIN_URL or {DEFAULT_ADMIN_URL})",
    )
    parser.add_argument("--key", default=None, help="an admin API key or JWT (default $TURNOUT_ADMIN_KEY)")
    parser.add_argument("--ca", type=Path, default=None, help="CA certificate to verify an https admin plane")
    parser.add_argument("--json-output", action="store_true", help="print the server's JSON answer")


class AdminError(Exception):
    pass


def call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    url = args.admin_url.rstrip("/") + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("content-type", "application/json")
    key = args.key or os.environ.get("TURNOUT_ADMIN_KEY")
    if key:
        request.add_header("authorization", f"Bearer {key}")
    context = ssl.create_default_context(cafile=str(args.ca)) if args.ca else None
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        raise AdminError(f"{exc.code}: {message}") from None
    except urllib.error.URLError as exc:
        raise AdminError(f"cannot reach the admin plane at {args.admin_url}: {exc.reason}") from None
