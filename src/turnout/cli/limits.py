"""``turnout serve``'s limits at the door: connections, timeouts, header and
body limits, admission control (the README's Limits table lists them all)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from turnout.cli.arguments import positive_int, positive_seconds
from turnout.overload.admission import AdmissionSettings
from turnout.settings import EdgeSettings
from turnout.transports.http import HttpLimits
from turnout.transports.http2.limits import Http2Limits

_EDGE = EdgeSettings()
_HTTP = HttpLimits()
_HTTP2 = Http2Limits()
_ADMISSION = AdmissionSettings()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits at the door (see the README's Limits)")
    group.add_argument(
        "--max-connections",
        type=positive_int,
        default=_EDGE.max_connections,
        help="open connections on the public ports; when full the longest-idle one is closed "
        f"(default {_EDGE.max_connections})",
    )
    group.add_argument(
        "--max-buffered-bytes",
        type=positive_int,
        default=_EDGE.max_buffered_body_bytes,
        help="request bodies held in memory by all connections together; past it 503 / RESOURCE_EXHAUSTED "
        f"(default {_EDGE.max_buffered_body_bytes})",
    )
    group.add_argument(
        "--max-header-bytes",
        type=positive_int,
        default=_HTTP.max_head_bytes,
        help=f"a request's headers, HTTP/1.1 (431) and HTTP/2 (default {_HTTP.max_head_bytes})",
    )
    group.add_argument(
        "--max-headers",
        type=positive_int,
        default=_HTTP.max_headers,
        help=f"header fields in one HTTP/1.1 request (431; default {_HTTP.max_headers})",
    )
    group.add_argument(
        "--head-timeout",
        type=positive_seconds,
        default=_HTTP.head_timeout,
        help="seconds for a request's line and headers to arrive (408), and for an HTTP/2 client's preface "
        f"(default {_HTTP.head_timeout:g})",
    )
    group.add_argument(
        "--keep-alive-timeout",
        type=positive_seconds,
        default=_HTTP.keep_alive_timeout,
        help=f"seconds an HTTP/1.1 connection may idle between requests (default {_HTTP.keep_alive_timeout:g})",
    )
    group.add_argument(
        "--idle-timeout",
        type=positive_seconds,
        default=_HTTP2.idle_timeout,
        help=f"seconds an HTTP/2 connection may have no open stream (default {_HTTP2.idle_timeout:g})",
    )
    group.add_argument(
        "--write-timeout",
        type=positive_seconds,
        default=_HTTP.write_timeout,
        help=f"seconds a client may leave answers unread before it is cut off (default {_HTTP.write_timeout:g})",
    )
    group.add_argument(
        "--max-concurrent-streams",
        type=positive_int,
        default=_HTTP2.max_concurrent_streams,
        help=f"open streams on one HTTP/2 connection (default {_HTTP2.max_concurrent_streams})",
    )
    group.add_argument(
        "--no-admission",
        action="store_true",
        help="never shed inference at the door (admission control off)",
    )
    group.add_argument(
        "--admission-target",
        type=positive_seconds,
        default=_ADMISSION.target,
        help="seconds of queueing (event-loop lag and time in flight) before inference is shed with 503 / "
        f"RESOURCE_EXHAUSTED (default {_ADMISSION.target:g})",
    )


def edge_settings(args: argparse.Namespace, read_timeout: float) -> EdgeSettings:
    """The limits from the command line; ``read_timeout``: --request-read-timeout."""
    http = replace(
        _HTTP,
        max_head_bytes=args.max_header_bytes,
        max_headers=args.max_headers,
        head_timeout=args.head_timeout,
        read_timeout=read_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        write_timeout=args.write_timeout,
    )
    http2 = replace(
        _HTTP2,
        max_header_bytes=args.max_header_bytes,
        preface_timeout=args.head_timeout,
        read_timeout=read_timeout,
        idle_timeout=args.idle_timeout,
        write_timeout=args.write_timeout,
        max_concurrent_streams=args.max_concurrent_streams,
    )
    admission = replace(_ADMISSION, enabled=not args.no_admission, target=args.admission_target)
    return EdgeSettings(args.max_connections, args.max_buffered_bytes, http, http2, admission)
