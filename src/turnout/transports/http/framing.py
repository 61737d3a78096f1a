"""Where a request's head ends, before the parser sees it.

The parser (httptools) is fed a head only once it is whole: httptools joins
the pieces of a header value once per read, so a head fed as it trickles in
costs time quadratic in its size, and a head that never ends would be parsed
without end. Here the pieces wait in a buffer of at most the head limit, and
finding the end costs one scan of each new byte.
"""

from __future__ import annotations

MORE = -1  # the head goes on: its bytes so far are buffered
TOO_LONG = -2  # the head passed the limit without ending

_END = b"\r\n\r\n"


def head_piece(buffered: bytearray, data: bytes, start: int, limit: int) -> tuple[bytes, int] | int:
    """The whole head that ``data[start:]`` completes, and where it ends in
    ``data``; or ``MORE`` (``data[start:]`` joins ``buffered``), or ``TOO_LONG``.
    ``buffered`` holds the head's earlier bytes, and is emptied when it ends."""
    if not buffered:
        end = data.find(_END, start, start + limit)  # within the limit, or not at all
        if end >= 0:
            end += len(_END)
            return (data if start == 0 and end == len(data) else data[start:end]), end
        if len(data) - start >= limit:
            return TOO_LONG
        buffered += data[start:] if start else data
        return MORE
    had = len(buffered)
    buffered += data[start : start + limit + len(_END) - had]
    end = buffered.find(_END, max(had - len(_END) + 1, 0))
    if end < 0:
        return MORE if len(buffered) < limit else TOO_LONG
    end += len(_END)
    if end > limit:
        return TOO_LONG
    piece = bytes(buffered[:end])
    del buffered[:]
    return piece, start + end - had
