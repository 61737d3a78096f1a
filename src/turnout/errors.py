"""One error hierarchy for the whole server, with transport-neutral codes.

Transports map a :class:`Code` to an HTTP status or a gRPC status code; nothing
below the transports knows about either.
"""

from __future__ import annotations

import enum
import math


class Code(enum.Enum):
    INVALID = "invalid"  # the request is malformed or does not fit the signature
    NOT_FOUND = "not_found"  # unknown model or version
    TOO_LARGE = "too_large"  # payload over a configured limit
    UNAVAILABLE = "unavailable"  # not ready, being unloaded, shutting down
    OVERLOADED = "overloaded"  # the queue is full: retry later
    TIMEOUT = "timeout"  # the request's deadline passed before it could run
    INTERNAL = "internal"  # the model failed while running
    UNAUTHENTICATED = "unauthenticated"  # no credential, or one that is not valid
    FORBIDDEN = "forbidden"  # a valid credential without the right for this
    RATE_LIMITED = "rate_limited"  # the credential's request rate is spent: retry later
    CONFLICT = "conflict"  # the change clashes with what is already recorded (duplicate feedback)


class TurnoutError(Exception):
    """Base of every error turnout reports to a client.

    ``retry_after`` (seconds) is set where waiting and retrying can succeed.
    """

    code: Code = Code.INTERNAL

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def retry_after_header(self) -> str | None:
        """``Retry-After`` as HTTP and gRPC metadata carry it: whole seconds, at least 1."""
        return None if self.retry_after is None else str(max(1, math.ceil(self.retry_after)))


class InvalidRequest(TurnoutError):
    code = Code.INVALID


class NotFound(TurnoutError):
    code = Code.NOT_FOUND


class Conflict(TurnoutError):
    code = Code.CONFLICT


class PayloadTooLarge(TurnoutError):
    code = Code.TOO_LARGE


class Unavailable(TurnoutError):
    code = Code.UNAVAILABLE


class Overloaded(TurnoutError):
    code = Code.OVERLOADED


class DeadlineExceeded(TurnoutError):
    code = Code.TIMEOUT


class InferenceFailed(TurnoutError):
    code = Code.INTERNAL


class Unauthenticated(TurnoutError):
    code = Code.UNAUTHENTICATED


class Forbidden(TurnoutError):
    code = Code.FORBIDDEN


class RateLimited(TurnoutError):
    code = Code.RATE_LIMITED


class ConfigError(Exception):
    """A model directory or its ``model.toml`` is wrong.

    Carries where (file, field) and why, so ``turnout models validate`` and the
    repository index can say exactly what to fix.
    """

    def __init__(self, file: str, reason: str, field: str | None = None) -> None:
        self.file = file
        self.field = field
        self.reason = reason
        where = f"{file}: {field}" if field else file
        super().__init__(f"{where}: {reason}")
