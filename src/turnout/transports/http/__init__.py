"""turnout's own HTTP/1.1 server, on httptools and asyncio.

Why not uvicorn: with the V2 path made lean, uvicorn's own Python code was
the largest share of the server's time (27.5% of py-spy samples at 64
concurrent requests on a small model). This server does only what the REST
transport needs: keep-alive, requests answered in order (pipelining
included), ``Expect: 100-continue``, HEAD, the limits in ``HttpLimits``
enforced while bytes arrive, checks at the door (``Screen``, ``Gate``,
``BodyBudget``, ``Connections``) before any body is kept, and a graceful
close. It calls the same ``RestApi`` that runs under any ASGI server.
"""

from __future__ import annotations

from turnout.transports.http.limits import HttpLimits
from turnout.transports.http.protocol import HttpProtocol
from turnout.transports.http.server import HttpServer
from turnout.transports.http.shared import Handle, Screen, admit_all

__all__ = ["Handle", "HttpLimits", "HttpProtocol", "HttpServer", "Screen", "admit_all"]
