"""Logging set-up: plain text for a terminal, or structured JSON (one object
per line) for a log pipeline; and the access log, one record per inference
request, as fields a log store can index.

The access log is off unless asked for (``--access-log``): at ten thousand
requests a second, formatting a record each costs a visible share of a core.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import re
import sys
import time
import warnings
from typing import Any

import orjson

ACCESS = logging.getLogger("turnout.access")
# fields the access log puts on a record (as ``extra``); the JSON formatter writes them out
ACCESS_FIELDS = ("request_id", "trace_id", "model", "version", "variant", "protocol", "status", "latency_ms")
# Libraries whose debug records quote decoded headers, ``authorization: Bearer
# <key or JWT>`` included (hpack: "Decoded ('authorization', ...)"): held at
# WARNING whatever --log-level says, so a debug log holds no credential.
HEADER_DUMPING_LOGGERS = ("hpack", "h2", "hyperframe")
_MAX_ID_CHARS = 256  # of a request's id in its access record


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
        elif record.exc_text:  # rendered before it crossed to the writer thread
            document["exception"] = record.exc_text
        return orjson.dumps(document).decode()


class _Enqueue(logging.handlers.QueueHandler):
    """Hand records to the writer thread as they are: formatting and writing
    happen there, not on the event loop that serves requests."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info:  # a traceback cannot cross threads later: render it now (rare)
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


_listener: logging.handlers.QueueListener | None = None


_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


def _one_line(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    return _COLOURS.sub("", f"{filename}:{lineno}: {category.__name__}: {message}")


def capture_warnings() -> None:
    """A library's warnings (mlflow's, say) as one log record each, on the
    ``py.warnings`` logger: never bare stderr lines, nor the source line and
    terminal colours Python's own format adds."""
    warnings.formatwarning = _one_line
    logging.captureWarnings(True)


def configure(level: str, fmt: str) -> None:
    """The root logger to stderr, as text or JSON, written by a thread of its own."""
    global _listener
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if _listener is not None:
        _listener.stop()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(records, handler)
    _listener.start()
    atexit.register(_listener.stop)  # the last records are written before the process ends
    root = logging.getLogger()
    root.handlers[:] = [_Enqueue(records)]
    root.setLevel(level.upper())
    for name in HEADER_DUMPING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    capture_warnings()


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
    if request_id is not None and len(request_id) > _MAX_ID_CHARS:  # the client's own text, of any length
        request_id = f"{request_id[:_MAX_ID_CHARS]}...[{len(request_id)} chars]"
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
