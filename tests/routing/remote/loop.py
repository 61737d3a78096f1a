"""Running a test's scenario on uvloop, as the server runs (its transports are none of asyncio's classes)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import uvloop


def run(scenario: Coroutine[Any, Any, None]) -> None:
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(scenario)
    finally:
        loop.close()
