"""One stream's state: its request as it arrives, its reply as it leaves."""

from __future__ import annotations

import asyncio

from turnout.overload.gate import Pass


class Stream:
    __slots__ = (
        "body", "ended", "headers", "held", "pending", "send_window", "size", "stamp", "task", "ticket", "timer",
        "too_large", "unacked",
    )  # fmt: skip

    def __init__(self, headers: dict[str, str], send_window: int) -> None:
        self.headers = headers
        self.body: list[bytes] = []
        self.size = 0  # request body bytes received
        self.held = 0  # of them, bytes held in memory (the connection's total, the body budget)
        self.too_large = False
        self.ended = False  # the client sent END_STREAM
        self.unacked = 0  # bytes received on this stream not yet credited back
        self.send_window = send_window
        self.pending: tuple[bytes, bytes | None] | None = None  # reply data waiting to go, and trailers
        self.stamp = 0.0  # when a waiting reply last moved
        self.task: asyncio.Task[None] | None = None
        self.ticket: Pass | None = None  # the gate's, left when the stream ends
        # the read timeout while the request arrives; the write timeout while its reply waits
        self.timer: asyncio.TimerHandle | None = None

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
