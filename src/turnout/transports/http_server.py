"""Where the HTTP/1.1 server used to live; it is now ``turnout.transports.http``."""

from __future__ import annotations

from turnout.transports.http import Handle, HttpLimits, HttpProtocol, HttpServer, Screen, admit_all

__all__ = ["Handle", "HttpLimits", "HttpProtocol", "HttpServer", "Screen", "admit_all"]
