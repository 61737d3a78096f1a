"""Which header blocks make a well-formed request (RFC 9113 sections 8.1-8.3).

A malformed request is a stream error: the stream is reset (PROTOCOL_ERROR)
and its handler never runs. Without these checks the last of two ``:path``
fields won, and a ModelInfer body ran as ServerLive; a client could also pass
names and values that an HTTP/1.1 hop would read differently.

Pure functions of a decoded field list; ``headers`` caches what they return
per block, so a steady client pays for them once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 9113 8.2.1: no controls, space, upper case, DEL or non-ASCII in a name,
# and a colon only to start a pseudo-header's.
_BAD_NAME = re.compile(r"[\x00-\x20A-Z:\x7f-\U0010ffff]")
# ... no NUL, CR or LF in a value, and no whitespace at either end.
_BAD_VALUE = re.compile(r"[\x00\r\n]|\A[ \t]|[ \t]\Z")
# 8.2.2: fields that mean something only to one HTTP/1.1 hop
_CONNECTION_SPECIFIC = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
# 8.3.1 (no extended CONNECT: :protocol is not advertised, so it is unknown)
_REQUEST_PSEUDO = frozenset({":method", ":scheme", ":authority", ":path"})
_REQUIRED = (":method", ":scheme", ":path")
_SHOWN = 64  # characters of a name a reason quotes: reasons reach logs


@dataclass(frozen=True, slots=True)
class Malformed:
    """Why a header block is not a well-formed request or trailer section."""

    reason: str


def request(fields: list[tuple[str, str]]) -> dict[str, str] | Malformed:
    """The request's headers by name (a repeated regular field keeps its last
    value), or why they are malformed."""
    headers: dict[str, str] = {}
    regular = False
    for name, value in fields:
        if name[:1] == ":":
            if regular:
                return Malformed(f"pseudo-header {name[:_SHOWN]!r} after a regular field")
            if name not in _REQUEST_PSEUDO:
                return Malformed(f"pseudo-header {name[:_SHOWN]!r} is not a request's")
            if name in headers:
                return Malformed(f"pseudo-header {name!r} repeated")
            if _BAD_VALUE.search(value):
                return Malformed(_bad_value(name))
        else:
            regular = True
            problem = _regular(name, value)
            if problem is not None:
                return Malformed(problem)
        headers[name] = value
    for required in _REQUIRED:
        if required not in headers:
            return Malformed(f"no {required}")
    if not headers[":path"]:
        return Malformed("an empty :path")
    return headers


def trailers(fields: list[tuple[str, str]]) -> dict[str, str] | Malformed:
    """A request's trailers by name, or why they are malformed (8.1: no pseudo-headers)."""
    found: dict[str, str] = {}
    for name, value in fields:
        if name[:1] == ":":
            return Malformed(f"pseudo-header {name[:_SHOWN]!r} in trailers")
        problem = _regular(name, value)
        if problem is not None:
            return Malformed(problem)
        found[name] = value
    return found


def _regular(name: str, value: str) -> str | None:
    if not name or _BAD_NAME.search(name):
        return f"field name {name[:_SHOWN]!r} is not lower-case token characters"
    if name in _CONNECTION_SPECIFIC:
        return f"connection-specific field {name!r}"
    if name == "te" and value != "trailers":
        return "te other than trailers"
    if _BAD_VALUE.search(value):
        return _bad_value(name)
    return None


def _bad_value(name: str) -> str:
    return f"the value of {name[:_SHOWN]!r} has a forbidden character or surrounding whitespace"
