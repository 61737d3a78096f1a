"""``turnout keys`` (create, list and revoke API keys) and ``turnout audit``
(read the audit log): offline, on the key store and the log file."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from turnout.cli.arguments import positive_int, rate
from turnout.security.principal import Role


def add_commands(commands: Any) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke API keys").add_subparsers(title="keys commands")
    create = keys.add_parser("create", help="create a key and print it (it is shown only this once)")
    create.add_argument("--store", type=Path, required=True, help="the key store: a .json file or a SQLite .db")
    create.add_argument("--name", required=True, help="who or what the key is for (shown in logs and audit)")
    create.add_argument(
        "--role", dest="roles", action="append", choices=[r.value for r in Role], required=True,
        help="infer, read or admin; repeat for several",
    )  # fmt: skip
    create.add_argument("--model", dest="models", action="append", default=None, help="allow only this model; repeat")
    create.add_argument("--rate-limit", type=rate, default=None, metavar="RATE[/BURST]", help="this key's own limit")
    create.set_defaults(run=_keys_create)
    listing = keys.add_parser("list", help="list the keys (never their secrets)")
    listing.add_argument("--store", type=Path, required=True)
    listing.add_argument("--json", action="store_true", help="one JSON object per key")
    listing.set_defaults(run=_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by id or name; a running server stops accepting it")
    revoke.add_argument("--store", type=Path, required=True)
    revoke.add_argument("key", help="the key's id (or its name, if unique)")
    revoke.set_defaults(run=_keys_revoke)

    audit = commands.add_parser("audit", help="read the audit log").add_subparsers(title="audit commands")
    tail = audit.add_parser("tail", help="print the last events (and follow with -f)")
    tail.add_argument("log", type=Path, help="the audit log file")
    tail.add_argument("-n", "--lines", type=positive_int, default=20, help="how many (default 20)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing events as they are appended")
    tail.set_defaults(run=_audit_tail)


def _keys_create(args: argparse.Namespace) -> int:
    from turnout.security.keys import new_key, open_backend

    rate = args.rate_limit
    try:
        backend = open_backend(args.store)
        record, token = new_key(
            args.name,
            [Role(r) for r in args.roles],
            args.models,
            rate=None if rate is None else rate.per_second,
            burst=None if rate is None else rate.burst,
        )
        backend.add(record)
    except (ValueError, OSError, sqlite3.Error) as exc:
        print(f"turnout keys: {exc}", file=sys.stderr)
        return 1
    print(f"created key {record.id} for {record.name!r} ({', '.join(sorted(args.roles))})", file=sys.stderr)
    print("the key (shown only now; send it as 'Authorization: Bearer <key>'):", file=sys.stderr)
    print(token)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    from turnout.security.keys import open_backend

    try:
        records = open_backend(args.store).load()
    except (ValueError, OSError, sqlite3.Error) as exc:
        print(f"turnout keys: {exc}", file=sys.stderr)
        return 1
    for record in records:
        shown = record.public()
        if args.json:
            print(json.dumps(shown))
            continue
        models = "all models" if shown["models"] is None else ",".join(shown["models"])
        state = f"revoked {shown['revoked']}" if shown["revoked"] else "active"
        rate = f"  {shown['rate']}/s burst {shown['burst']}" if shown["rate"] else ""
        print(f"{shown['id']}  {shown['name']}  {','.join(shown['roles'])}  {models}  {state}{rate}")
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from turnout.security.keys import open_backend, revoke

    try:
        record = revoke(open_backend(args.store), args.key)
    except (LookupError, ValueError, OSError, sqlite3.Error) as exc:
        print(f"turnout keys: {exc.args[0] if isinstance(exc, LookupError) else exc}", file=sys.stderr)
        return 1
    print(f"revoked key {record.id} ({record.name!r}) at {record.revoked}; a running server drops it within a second")
    return 0


def _audit_tail(args: argparse.Namespace) -> int:
    from turnout.security.audit import follow, tail

    try:
        for line in tail(args.log, args.lines):
            print(line)
        if args.follow:
            for line in follow(args.log):
                print(line, flush=True)
    except FileNotFoundError:
        print(f"turnout audit: no audit log at {args.log}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
