"""What a stream consumer writes for one request entry: its result, its
error, its dead letter, or nothing yet (left pending, to be redelivered).

Which failures are worth another delivery: a busy, loading or late model is
waited out here for up to half the claim time, then the entry is left
pending; a model's internal error is redelivered; both go to the
dead-letter stream once ``max_deliveries`` is spent. A request the client
got wrong is answered with its error at once.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from turnout.errors import Code, PayloadTooLarge, TurnoutError
from turnout.observability import tracing
from turnout.observability.metrics import Metrics
from turnout.observability.tracing import Tracer
from turnout.protocol.types import InferenceRequest, InferenceResponse
from turnout.streams.envelope import (
    Entry,
    Envelope,
    Fields,
    UnreadableEnvelope,
    dead_letter_fields,
    decode,
    error_fields,
    open_envelope,
    reply_stream_of,
    request_id_of,
    response_fields,
)
from turnout.streams.group import StreamOptions
from turnout.streams.health import Backoff

log = logging.getLogger("turnout.streams")

Answer = Callable[[InferenceRequest], Awaitable[InferenceResponse]]
# worth another try later, in this process: the model is busy, loading or late
WAIT_AND_RETRY = {Code.OVERLOADED, Code.UNAVAILABLE, Code.TIMEOUT}
# the model failed on this entry: redelivered (after claim_idle) up to max_deliveries
REDELIVER = {Code.INTERNAL}
REMEMBERED_FAILURES = 10_000


@dataclass(slots=True)
class Write:
    """What to XADD for one entry before acknowledging it."""

    entry_id: str
    adds: list[tuple[str, Entry]]
    outcome: str
    original: Fields  # the request entry's fields, for a dead letter if the result cannot be written


class EntryAnswers:
    def __init__(
        self, model: str, options: StreamOptions, answer: Answer, metrics: Metrics, tracer: Tracer | None
    ) -> None:
        self.model = model
        self._options = options
        self._answer = answer
        self._metrics = metrics
        self._tracer = tracer  # None: tracing off, and nothing is done for it
        self._failures: OrderedDict[str, str] = OrderedDict()  # entry id -> the last failure here

    async def outcome(self, entry_id: str, fields: Fields, deliveries: int) -> Write | None:
        """What to write for this entry, or None to leave it pending (redelivered later)."""
        options = self._options
        try:
            envelope = open_envelope(entry_id, fields)
        except UnreadableEnvelope as exc:
            return self._dead_letter(entry_id, fields, None, f"unreadable envelope: {exc}", deliveries)
        if deliveries > options.max_deliveries:
            reason = self._failures.get(entry_id, "not acknowledged (its consumer died or gave up on it)")
            return self._dead_letter(entry_id, fields, envelope, f"failed {deliveries - 1} deliveries: {reason}",
                                     deliveries - 1)  # fmt: skip
        tracer = self._tracer
        if tracer is None:
            return await self._answered(entry_id, fields, envelope, deliveries)
        # stopped before it was answered: left pending for another consumer
        with tracer.request("stream", envelope.trace_context, self.model, cancelled="unavailable"):
            return await self._answered(entry_id, fields, envelope, deliveries)

    async def _answered(self, entry_id: str, fields: Fields, envelope: Envelope, deliveries: int) -> Write | None:
        options = self._options
        request_id: str | None = None
        try:
            if len(envelope.body) > options.max_request_bytes:
                raise PayloadTooLarge(
                    f"the request is {len(envelope.body)} bytes, more than the limit of {options.max_request_bytes}"
                )
            request = decode(envelope, self.model, options.limits)
            request_id = request.id
            trace = tracing.CURRENT.get()
            if trace is not None:
                trace.decoded = tracing.RequestTrace.now()
            response = await self._infer(request)
        except TurnoutError as exc:
            trace = tracing.CURRENT.get()
            if trace is not None:
                trace.status = exc.code.value
            if exc.code in REDELIVER or exc.code in WAIT_AND_RETRY:
                self.remember_failure(entry_id, f"{exc.code.value}: {exc.message}")
                self._metrics.stream_entries(self.model, "retry").inc()
                if deliveries >= options.max_deliveries:
                    return self._dead_letter(entry_id, fields, envelope,
                                             f"failed {deliveries} deliveries: {exc.code.value}: {exc.message}",
                                             deliveries)  # fmt: skip
                return None
            request_id = request_id or request_id_of(envelope)
            reply = error_fields(entry_id, request_id, self.model, exc.code.value, exc.message)
            return Write(entry_id, [(envelope.reply_to, reply)], "error", fields)
        answer = response_fields(envelope, request, response)
        return Write(entry_id, [(envelope.reply_to, answer)], "answered", fields)

    async def _infer(self, request: InferenceRequest) -> InferenceResponse:
        """The answer, waiting out a busy or loading model for up to half the
        claim time (past that, another consumer may take the entry over)."""
        patience = time.monotonic() + self._options.claim_idle_seconds / 2
        backoff = Backoff(first=0.02, most=1.0)
        while True:
            try:
                return await self._answer(request)
            except TurnoutError as exc:
                if exc.code not in WAIT_AND_RETRY or time.monotonic() >= patience:
                    raise
            await backoff.wait()

    def _dead_letter(
        self, entry_id: str, fields: Fields, envelope: Envelope | None, reason: str, deliveries: int
    ) -> Write:
        log.warning("entry %s of %s goes to the dead-letter stream %s: %s", entry_id, self._options.stream,
                    self._options.dead_letter, reason)  # fmt: skip
        adds: list[tuple[str, Entry]] = [
            (self._options.dead_letter, dead_letter_fields(entry_id, fields, self._options.stream, reason, deliveries))
        ]
        reply_to = envelope.reply_to if envelope is not None else reply_stream_of(fields)
        if reply_to:  # the producer hears of it too
            request_id = request_id_of(envelope) if envelope is not None else None
            adds.append((reply_to, error_fields(entry_id, request_id, self.model, "dead_letter", reason)))
        return Write(entry_id, adds, "dead_letter", fields)

    def remember_failure(self, entry_id: str, reason: str) -> None:
        self._failures[entry_id] = reason
        self._failures.move_to_end(entry_id)
        while len(self._failures) > REMEMBERED_FAILURES:
            self._failures.popitem(last=False)

    def forget(self, entry_id: str) -> None:
        """The entry's outcome is written: its failures need no remembering."""
        self._failures.pop(entry_id, None)
