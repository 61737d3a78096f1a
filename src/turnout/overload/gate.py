"""The seam between the transports and admission control.

A server asks its gate once per request, as soon as the request's head has
arrived and passed the screen (authentication), before any of its body is
kept: ``enter`` returns a ``Pass`` to go ahead, or None to shed the request
at once (HTTP 503 with Retry-After, gRPC RESOURCE_EXHAUSTED). The server
calls ``Pass.leave()`` when the exchange ends however it ends (answered,
reset, timed out, connection lost); ``leave`` is idempotent, so every exit
path may call it.

Requests that must never be shed (health probes, metrics) get ``FREE``, a
pass that counts nothing.
"""

from __future__ import annotations

from typing import Protocol


class Pass(Protocol):
    def leave(self) -> None: ...


class Gate(Protocol):
    def enter(self, path: str) -> Pass | None: ...

    @property
    def retry_after(self) -> int:
        """Seconds a shed client is told to wait (the Retry-After header)."""
        ...


class _FreePass:
    __slots__ = ()

    def leave(self) -> None:
        pass


FREE: Pass = _FreePass()


class OpenGate:
    """Admits everything: no admission control."""

    retry_after = 1

    def enter(self, path: str) -> Pass | None:
        return FREE
