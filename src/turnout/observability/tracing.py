"""OpenTelemetry traces of inference requests, continuing a client's W3C
``traceparent``.

The request path only notes timestamps on a ``RequestTrace`` (a few
``perf_counter_ns`` calls, and none at all when tracing is off: the
transports then hold ``None``); the spans are made in one go when the
answer has been sent, with those times:

    turnout.infer            (SERVER; the request, receive to respond)
      turnout.receive        reading and decoding the body
      turnout.validate       checking it against the signature
      turnout.queue          waiting in the batcher's queue
      turnout.batch          the batch that held it: joined, run, split
        turnout.compute      the model's own run of that batch
      turnout.respond        encoding the answer
      turnout.step           a pipeline's step (one per step, ``turnout.step`` its name)

Attributes: ``turnout.model``, ``turnout.version``, ``turnout.variant``,
``rpc.system`` (``rest`` / ``grpc``), ``turnout.status``.

The OpenTelemetry SDK is the optional extra ``turnout[otel]``; the server
imports it only when tracing is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from turnout.errors import TurnoutError

SPAN_NAMES = ("turnout.infer", "turnout.receive", "turnout.validate", "turnout.queue", "turnout.batch",
              "turnout.compute", "turnout.respond", "turnout.step")  # fmt: skip


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """``endpoint``: an OTLP/HTTP collector (e.g. http://localhost:4318/v1/traces); None: tracing off."""

    endpoint: str | None = None
    service_name: str = "turnout"
    sample_ratio: float = 1.0  # of requests without a sampled parent


class RequestTrace:
    """One request's timestamps (ns, wall clock), noted as it passes."""

    __slots__ = (
        "answered",
        "compute_seconds",
        "decoded",
        "encoded",
        "model",
        "parent",
        "protocol",
        "queue_seconds",
        "started",
        "status",
        "steps",
        "validated",
        "variant",
        "version",
    )

    def __init__(self, protocol: str, parent: Mapping[str, str]) -> None:
        self.started = time.time_ns()
        self.protocol = protocol
        self.parent = parent  # the carrier holding traceparent / tracestate, if the client sent them
        self.decoded = self.validated = self.answered = self.encoded = 0
        self.queue_seconds = self.compute_seconds = 0.0
        self.model = self.version = self.variant = ""
        self.status = "success"
        self.steps: list[tuple[str, str, int, int, str]] | None = None  # a pipeline's: name, kind, start, end, status

    def note_step(self, name: str, kind: str, start: int, end: int, status: str) -> None:
        if self.steps is None:
            self.steps = []
        self.steps.append((name, kind, start, end, status))

    @staticmethod
    def now() -> int:
        return time.time_ns()


# the request being traced, set by the transport for the data plane to note its times on
CURRENT: ContextVar[RequestTrace | None] = ContextVar("turnout_request_trace", default=None)


def current_trace_id() -> str | None:
    """The trace id of the request being traced, when its client sent a W3C
    traceparent (for the access log); None otherwise."""
    trace = CURRENT.get()
    if trace is None:
        return None
    parts = trace.parent.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class Tracer:
    """Turns finished ``RequestTrace`` records into spans on an SDK tracer provider."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._tracer = provider.get_tracer("turnout")
        self._propagator = TraceContextTextMapPropagator()
        self._server = SpanKind.SERVER
        self._provider = provider

    def begin(self, protocol: str, headers: Mapping[str, str]) -> RequestTrace:
        carrier = {k: v for k, v in headers.items() if k in ("traceparent", "tracestate")}
        return RequestTrace(protocol, carrier)

    @contextlib.contextmanager
    def request(
        self, protocol: str, headers: Mapping[str, str], model: str, cancelled: str = "cancelled"
    ) -> Iterator[RequestTrace]:
        """One request's trace around its handling, the one wrapper every way
        in uses: the trace is ``CURRENT`` while the request is handled; the
        exception that ends it sets its status (an error's own code, anything
        else ``internal``, a cancellation ``cancelled``); then its spans are
        made, named for ``model`` unless the handling named it."""
        trace = self.begin(protocol, headers)
        token = CURRENT.set(trace)
        try:
            yield trace
        except asyncio.CancelledError:
            trace.status = cancelled
            raise
        except Exception as exc:  # a bug (a 500) is traced as internal
            trace.status = exc.code.value if isinstance(exc, TurnoutError) else "internal"
            raise
        finally:
            CURRENT.reset(token)
            trace.model = trace.model or model
            trace.encoded = RequestTrace.now()
            self.finish(trace)

    def finish(self, trace: RequestTrace) -> None:
        from opentelemetry.trace import Status, StatusCode

        end = trace.encoded or RequestTrace.now()
        context = self._propagator.extract(dict(trace.parent)) if trace.parent else None
        attributes = {
            "turnout.model": trace.model,
            "turnout.version": trace.version,
            "turnout.variant": trace.variant,
            "rpc.system": trace.protocol,
            "turnout.status": trace.status,
        }
        root = self._tracer.start_span(
            "turnout.infer", context=context, kind=self._server, start_time=trace.started, attributes=attributes
        )
        if trace.status != "success":
            root.set_status(Status(StatusCode.ERROR, trace.status))
        from opentelemetry.trace import set_span_in_context

        inside = set_span_in_context(root)

        def child(name: str, start: int, stop: int, parent: Any = inside) -> Any:
            span = self._tracer.start_span(name, context=parent, start_time=start)
            span.end(end_time=max(stop, start))
            return span

        if trace.decoded:
            child("turnout.receive", trace.started, trace.decoded)
        if trace.validated:
            child("turnout.validate", trace.decoded or trace.started, trace.validated)
        if trace.answered:
            queued_until = trace.validated + int(trace.queue_seconds * 1e9)
            child("turnout.queue", trace.validated, queued_until)
            batch = self._tracer.start_span("turnout.batch", context=inside, start_time=queued_until)
            compute_start = max(queued_until, trace.answered - int(trace.compute_seconds * 1e9))
            child("turnout.compute", compute_start, compute_start + int(trace.compute_seconds * 1e9),
                  set_span_in_context(batch))  # fmt: skip
            batch.end(end_time=trace.answered)
            child("turnout.respond", trace.answered, end)
        for name, kind, start, stop, status in trace.steps or ():
            span = self._tracer.start_span(
                "turnout.step",
                context=inside,
                start_time=start,
                attributes={"turnout.step": name, "turnout.step.kind": kind, "turnout.status": status},
            )
            if status != "success":
                span.set_status(Status(StatusCode.ERROR, status))
            span.end(end_time=max(stop, start))
        root.end(end_time=end)

    def shutdown(self) -> None:
        self._provider.shutdown()


def make_tracer(settings: TracingSettings) -> Tracer | None:
    """The tracer for these settings (None when off), exporting over OTLP/HTTP in batches."""
    if settings.endpoint is None:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError:
        raise RuntimeError("tracing needs the OpenTelemetry SDK: pip install 'turnout[otel]'") from None
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint)))
    return Tracer(provider)
