"""A producer and a result reader for the stream tests, written as a user
would write them with redis-py: XADD envelopes, XREAD results."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
import redis

REQUESTS = "turnout:{}:requests"


def envelope(request: dict[str, Any], reply_to: str, **extra: str | bytes) -> dict[str, Any]:
    return {"v": "1", "reply_to": reply_to, "request": orjson.dumps(request), **extra}


def rows_request(rows: np.ndarray[Any, Any], request_id: str | None = None, name: str = "input") -> dict[str, Any]:
    request: dict[str, Any] = {
        "inputs": [{"name": name, "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]
    }
    if request_id is not None:
        request["id"] = request_id
    return request


def produce(client: redis.Redis, stream: str, envelopes: Iterable[dict[str, Any]], chunk: int = 500) -> list[str]:
    """XADD every envelope (pipelined); the entry ids, in order."""
    ids: list[str] = []
    pipe = client.pipeline(transaction=False)
    pending = 0
    for item in envelopes:
        pipe.xadd(stream, item)
        pending += 1
        if pending == chunk:
            ids += [i.decode() for i in pipe.execute()]
            pending = 0
    if pending:
        ids += [i.decode() for i in pipe.execute()]
    return ids


def read_results(
    client: redis.Redis, reply_to: str, want: int, timeout: float = 60.0, key: bytes = b"id"
) -> dict[str, dict[bytes, bytes]]:
    """Results read from ``reply_to`` until ``want`` distinct ``key`` values are in,
    keyed by it (a result written twice, as at-least-once allows, counts once)."""
    found: dict[str, dict[bytes, bytes]] = {}
    last = "0-0"
    deadline = time.monotonic() + timeout
    while len(found) < want:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{len(found)} of {want} results on {reply_to} after {timeout} s")
        reply: Any = client.xread({reply_to: last}, count=1000, block=int(min(remaining, 1.0) * 1000) or 1)
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                last = entry_id.decode()
                found[fields[key].decode()] = fields
    return found


def outputs(result: dict[bytes, bytes]) -> dict[str, np.ndarray[Any, Any]]:
    assert result[b"kind"] == b"response", result
    document = orjson.loads(result[b"response"])
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in document["outputs"]}


def wait_acknowledged(client: redis.Redis, stream: str, group: str = "turnout", timeout: float = 10.0) -> None:
    """Until nothing is pending: acknowledgements follow the results they cover."""
    deadline = time.monotonic() + timeout
    while client.xpending(stream, group)["pending"]:
        assert time.monotonic() < deadline, client.xpending(stream, group)
        time.sleep(0.02)
