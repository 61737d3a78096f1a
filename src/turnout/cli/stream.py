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
    replay.add_argument("--id", dest="ids", action="append", default=[], help="only this dead letter (repeat for more)")
    replay.set_defaults(run=_replay)


def _common(command: argparse.ArgumentParser) -> None:
    command.add_argument("model")
    command.add_argument("--redis", required=True, metavar="redis://HOST:PORT/DB", help="the server's --stream URL")
    command.add_argument("--repo", type=Path, default=None, help="the model repository, for [stream] in model.toml")


def _names(args: argparse.Namespace) -> tuple[str, str]:
    from turnout.streams.service import dead_letter_name, stream_name

    if args.repo is not None and not (args.repo / args.model).is_dir():
        raise ValueError(f"{args.repo / args.model}: no such model in the repository")
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
        return _fail(str(exc))
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


# One dead letter back on the request stream, atomically: read it, XADD its
# original fields, and only then XDEL it. An XADD that fails stops the script
# before the XDEL (a MULTI would run the XDEL anyway); one already replayed
# (by a repeated --id, a second operator, a resent command) is found gone and
# skipped, so none is lost and none is put back twice.
REPLAY_ONE = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local fields, original = found[1][2], {}
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 5) ~= 'dead_' then
    table.insert(original, fields[i])
    table.insert(original, fields[i + 1])
  end
end
if #original == 0 then return -1 end
redis.call('XADD', KEYS[2], '*', unpack(original))
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"""
PAGE = 100


def _replay(args: argparse.Namespace) -> int:
    replayed = skipped = 0
    try:
        requests, dead = _names(args)
        client = _client(args.redis)
        replay_one = client.register_script(REPLAY_ONE)
        for entry_id, fields in _dead_letters(client, dead, args.ids):
            if fields.get(b"dead_reason", b"").startswith(b"unreadable envelope"):
                skipped += 1  # not an answerable request: replaying it would only dead-letter it again
                continue
            replayed += replay_one(keys=[dead, requests], args=[entry_id]) == 1
    except (ConfigError, OSError, ValueError) as exc:
        return _fail(str(exc))
    except Exception as exc:  # redis' own errors: unreachable, refused, a key of another type
        done = f" after putting back {replayed}" if replayed else ""
        return _fail(f"{exc}{done}")
    kept = f"; left {skipped} unreadable envelope(s) in {dead}" if skipped else ""
    print(f"put {replayed} dead letter(s) back on {requests}{kept}")
    return 0


def _dead_letters(client: Any, dead: str, ids: list[str]) -> Any:
    """The dead letters named by ``ids`` (each once), or all of them, a page at a time."""
    if ids:
        for entry_id in dict.fromkeys(ids):
            yield from client.xrange(dead, entry_id, entry_id)
        return
    start = "-"
    while page := client.xrange(dead, start, "+", count=PAGE):
        yield from page
        start = "(" + page[-1][0].decode()


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def _fail(message: str) -> int:
    print(f"turnout stream: {message}", file=sys.stderr)
    return 2
