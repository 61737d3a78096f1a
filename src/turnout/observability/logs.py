"""Logging set-up: plain text for a terminal, or structured JSON (one object
per line) for a log pipeline; and the access log, one record per inference
request, as fields a log store can index.

The access log is off unless asked for (``--access-log``): at ten thousand
requests a second, formatting a record each costs a visible share of a core.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

ACCESS = logging.getLogger("turnout.access")
# fields the access log puts on a record (as ``extra``); the JSON formatter writes them out
ACCESS_FIELDS = ("request_id", "trace_id", "model", "version", "variant", "protocol", "status", "latency_ms")


class JsonFormatter(logging.Formatter):
    """Each record as one JSON object: time (UTC, ISO 8601), level, logger,
    message, the access fields a record carries, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ACCESS_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document).decode()


def configure(level: str, fmt: str) -> None:
    """The root logger to stderr, as text or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def access(
    request_id: str | None,
    model: str,
    version: str,
    variant: str,
    protocol: str,
    status: str,
    seconds: float | None,
    trace_id: str | None = None,
) -> None:
    """One inference request, answered or refused (``seconds`` None: refused
    before it reached the data plane, as a body that does not decode)."""
    latency_ms = None if seconds is None else round(seconds * 1000, 3)
    ACCESS.info(
        "%s %s v%s %s %s ms",
        protocol,
        model,
        version or "-",
        status,
        "-" if latency_ms is None else f"{latency_ms:.3f}",
        extra={
            "request_id": request_id or None,
            "trace_id": trace_id,
            "model": model,
            "version": version,
            "variant": variant,
            "protocol": protocol,
            "status": status,
            "latency_ms": latency_ms,
        },
    )
