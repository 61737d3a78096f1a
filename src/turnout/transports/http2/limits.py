"""Every number that bounds what one HTTP/2 connection may cost the server.

Each default is what a well-behaved client (grpcio, grpc-go, the h2 library,
curl) never reaches; a client that reaches one gets an answer, a reset stream
or a closed connection after a bounded amount of memory and CPU. Durations are
in seconds on the monotonic clock.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class Http2Limits:
    # The largest frame a client may send (advertised as SETTINGS_MAX_FRAME_SIZE;
    # FRAME_SIZE_ERROR past it). 16 KiB is the protocol's default and what
    # every client uses unless told more: a bigger frame only lets one frame
    # hold the event loop longer (a 1 MiB HEADERS frame cost 1.28 s of HPACK).
    max_frame_size: int = 16 * KIB
    # A request's header block, in bytes, both as sent (HEADERS and its
    # CONTINUATION frames) and decoded (SETTINGS_MAX_HEADER_LIST_SIZE, as
    # HPACK counts it); COMPRESSION_ERROR past it.
    max_header_bytes: int = 64 * KIB
    # CONTINUATION frames after one HEADERS frame (nghttp2's limit):
    # ENHANCE_YOUR_CALM past it, so empty CONTINUATION frames cannot spin.
    max_continuations: int = 8
    # Streams open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS);
    # more are refused with REFUSED_STREAM, each refusal counted as a reset.
    max_concurrent_streams: int = 1024
    # What a client may send on one stream, and on the connection, before the
    # server credits it (the receive windows). Request bodies held for one
    # connection stop being credited once they pass the largest body allowed.
    stream_window: int = 4 * MIB
    connection_window: int = 16 * MIB
    # Entries in one SETTINGS frame (nghttp2's limit): ENHANCE_YOUR_CALM past
    # it, so one frame cannot carry thousands of settings to apply.
    max_settings: int = 32
    # Frames handled from one connection before the event loop turns to the
    # others: a 256 KiB read can hold 20,000 tiny HEADERS frames, ~0.5 s of
    # work that would stall every other client. A read of a busy gRPC client
    # holds far fewer (64 calls: 128 frames).
    frames_per_turn: int = 128
    # Rapid Reset (CVE-2023-44487): streams the client resets before their
    # answer, or opens past the concurrency limit, drawn from a token bucket
    # of this size, refilled at this rate and by one token per stream
    # answered; empty, the connection gets GOAWAY ENHANCE_YOUR_CALM. nghttp2's
    # defaults: a client that cancels calls now and then never comes near.
    reset_burst: int = 1000
    resets_per_second: float = 33.0
    # Frames that make the server work without moving a request forward
    # (nghttp2's "glitches"): PING, SETTINGS, WINDOW_UPDATE when nothing waits
    # for it, PRIORITY, RST_STREAM or HEADERS on a closed stream, empty DATA
    # without END_STREAM, unknown frame types, malformed requests. Same bucket
    # rules as resets, but each stream answered gives back
    # ``glitches_per_answer`` tokens: grpcio sends two WINDOW_UPDATE frames per
    # call (one for the connection, one for the stream it just read) and now
    # and then a PING, so a client's housekeeping while calls flow never runs
    # it dry, while a client making no calls gets only the burst and the rate.
    glitch_burst: int = 1000
    glitches_per_second: float = 33.0
    glitches_per_answer: int = 4
    # The client's connection preface and first SETTINGS frame must arrive
    # within this time of the connection's start, or it is closed.
    preface_timeout: float = 10.0
    # A connection with no open stream for this long gets GOAWAY NO_ERROR and
    # is closed. Silent connections are the connection limit's to evict
    # (longest idle first), so this is housekeeping, not the defence, and can
    # be generous: five minutes keeps a gRPC channel's connection (and its TLS
    # session and HPACK state) between a session's calls, outlives the 60 s
    # idle timeouts of load balancers (the proxy closes its pooled connection
    # first), and lets abandoned ones go within minutes. GOAWAY names the last
    # stream processed, so a call racing the close is retried by the client.
    idle_timeout: float = 300.0
    # From a stream's HEADERS to its END_STREAM: reset (CANCEL) past it, its
    # buffered body dropped (slowloris bodies).
    read_timeout: float = 30.0
    # How long replies may wait for the client to read them: with the write
    # buffer above its high-water mark (reading paused meanwhile) the
    # connection is aborted after this; a reply waiting for flow-control
    # window with no progress, its stream reset (CANCEL).
    write_timeout: float = 30.0
    # After the server ends a connection (GOAWAY sent, then FIN), what the
    # client still sends is read and dropped this long before the socket
    # closes, so the client reads the GOAWAY instead of a reset (Go's 1 s).
    linger_timeout: float = 1.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value <= 0:
                raise ValueError(f"Http2Limits.{field.name} must be positive, got {value}")
        if not 16 * KIB <= self.max_frame_size <= 2**24 - 1:
            raise ValueError(f"Http2Limits.max_frame_size must be within 16 KiB and 16 MiB, got {self.max_frame_size}")
        if self.stream_window > 2**31 - 1 or not 65_535 <= self.connection_window <= 2**31 - 1:
            raise ValueError("Http2Limits windows must be below 2**31 (the connection's at least 65,535)")
