"""Every number that bounds what one HTTP/1.1 connection may cost the server.

Each default is what a well-behaved client never reaches; an attacker who
reaches one gets an answer (or a closed connection) after a bounded amount of
memory and CPU. All durations are in seconds, on the event loop's monotonic
clock.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

KIB = 1024


@dataclass(frozen=True, slots=True)
class HttpLimits:
    # The request line and headers together, in bytes: 431 past it. Counted
    # before the bytes reach the parser, so a header line that never ends
    # costs at most this much parsing (httptools joins the pieces of a header
    # value once per read, quadratic without a cap). 64 KiB: nginx's largest
    # default (4 x 8 KiB buffers) is half of it; large JWTs and cookies fit.
    max_head_bytes: int = 64 * KIB
    # Header fields per request: 431 past it. Browsers send ~20, proxies a
    # few more; 100 is Go's and Tomcat's order of magnitude.
    max_headers: int = 100
    # The request target, in bytes: 414 past it. V2 paths are under 200 bytes.
    max_url_bytes: int = 8 * KIB
    # From a request's first byte (the connection's start, for the first one)
    # until its headers are complete: 408 past it. A connection that never
    # sends a byte is closed after it. A 64 KiB head needs 52 kbit/s to make it.
    head_timeout: float = 10.0
    # From a request's first byte to its last, body included: 408 past it
    # (slowloris bodies hold their buffers this long at most).
    read_timeout: float = 30.0
    # Idle between requests before the connection is closed. Longer than the
    # 60 s idle timeout of common load balancers and proxy pools (AWS ALB,
    # nginx upstream keep-alive), so a proxy never reuses a connection just as
    # the server closes it (Node.js's 5 s default made ALBs answer 502); idle
    # connections cost a descriptor and little memory, and are the first
    # closed when the connection limit is reached.
    keep_alive_timeout: float = 75.0
    # How long the client may leave our replies unread (the transport's write
    # buffer above its high-water mark, reading paused) before the connection
    # is aborted.
    write_timeout: float = 30.0
    # Complete requests waiting for their answers before the server stops
    # reading the connection (pipelining); reading resumes as they are answered.
    max_pipelined: int = 8
    # A refused request's declared body (401, 503, ...) up to this size is
    # read and dropped to keep the connection; a larger or chunked one, or one
    # that waits for 100 Continue, is answered and the connection closed.
    max_discard_bytes: int = 64 * KIB
    # After an answer that ends a connection early (the client may still be
    # sending), the server half-closes and reads and drops up to this much
    # for up to ``linger_timeout``, so the client reads the answer instead of
    # a reset (nginx's lingering close).
    max_linger_bytes: int = 256 * KIB
    linger_timeout: float = 2.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value <= 0:
                raise ValueError(f"HttpLimits.{field.name} must be positive, got {value}")
