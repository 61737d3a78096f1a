"""``turnout stream``: a model's dead letters, listed and put back on its
request stream once whatever failed them is fixed (a new model version, say).

Talks to Redis directly, not to a server: the streams are the interface.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from turnout.errors import ConfigError
from turnout.model.config import ModelConfig, load_config

DEAD_FIELDS = (b"dead_entry", b"dead_stream", b"dead_reason", b"dead_deliveries")


def add_commands(commands: Any) -> None:
    stream = commands.add_parser(
        "stream", help="list a model's dead-lettered stream entries, or put them back on its request stream"
    ).add_subparsers(title="stream commands")
    listing = stream.add_parser("dead-letters", help="list the dead letters of a model's stream")
    _common(listing)
    listing.add_argument("--count", type=int, default=20, help="the most to list, oldest first (default 20)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=_list)
    replay = stream.add_parser("replay", help="put dead letters back on the request stream, and remove them")
    _common(replay)
    replay.add_argument("--id", dest="ids", action="append", default=[], help="only this dead letter (repeatable)")
    replay.set_defaults(run=_replay)


def _common(command: argparse.ArgumentParser) -> None:
    command.add_argument("model")
    command.add_argument("--redis", required=True, metavar="redis://HOST:PORT/DB", help="the server's --stream URL")
    command.add_argument("--repo", type=Path, default=None, help="the model repository, for [stream] in model.toml")


def _names(args: argparse.Namespace) -> tuple[str, str]:
    from turnout.streams.service import dead_letter_name, stream_name

    config = ModelConfig() if args.repo is None else load_config(args.repo / args.model)
    return stream_name(args.model, config), dead_letter_name(args.model, config)


def _client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=5)


def _list(args: argparse.Namespace) -> int:
    try:
        _, dead = _names(args)
        entries = _client(args.redis).xrange(dead, count=args.count)
    except (ConfigError, OSError, ValueError) as exc:
        return _fail(str(exc))
    except Exception as exc:  # redis' own errors: unreachable, refused
        return _fail(f"{args.redis}: {exc}")
    for entry_id, fields in entries:
        record = {
            "id": entry_id.decode(),
            "entry": _text(fields.get(b"dead_entry")),
            "deliveries": _text(fields.get(b"dead_deliveries")),
            "reason": _text(fields.get(b"dead_reason")),
            "reply_to": _text(fields.get(b"reply_to")),
        }
        if args.json:
            print(orjson.dumps(record).decode())
        else:
            print(f"{record['id']}  entry {record['entry']}  after {record['deliveries']}: {record['reason']}")
    if not args.json:
        print(f"{len(entries)} dead letter(s) in {dead}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    try:
        requests, dead = _names(args)
        client = _client(args.redis)
        entries = client.xrange(dead) if not args.ids else [e for i in args.ids for e in client.xrange(dead, i, i)]
        replayed = 0
        for entry_id, fields in entries:
            original = {k: v for k, v in fields.items() if k not in DEAD_FIELDS}
            if not original:  # a result that could not be written: there is no request to put back
                continue
            with client.pipeline(transaction=True) as pipe:  # back on the stream and out of the dead letters, at once
                pipe.xadd(requests, original)
                pipe.xdel(dead, entry_id)
                pipe.execute()
            replayed += 1
    except (ConfigError, OSError, ValueError) as exc:
        return _fail(str(exc))
    except Exception as exc:
        return _fail(f"{args.redis}: {exc}")
    print(f"put {replayed} dead letter(s) back on {requests}")
    return 0


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def _fail(message: str) -> int:
    print(f"turnout stream: {message}", file=sys.stderr)
    return 2
