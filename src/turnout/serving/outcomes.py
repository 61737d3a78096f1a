"""What is recorded of each request a model version answered or refused:
the request metrics, the observers' windows (drift, the SLO judge), and for
a request that came in already checked (a pipeline's step), the payload log
and the access log. One place, so the data plane's paths (a V2 request, a
step on the lean path, one answered at once) count alike."""

from __future__ import annotations

import time
from collections.abc import Sequence

from turnout.batcher.queue import BatchResult
from turnout.errors import Code, TurnoutError
from turnout.model.tensors import Tensors
from turnout.observability import logs, tracing
from turnout.observability.metrics import Metrics
from turnout.observability.payloads import PayloadLog
from turnout.protocol.types import InferenceRequest, InferenceResponse
from turnout.serving.observers import RequestObserver
from turnout.serving.served import ServedVersion

# failures that count against a variant in a rollout's guard
_NONE: Tensors = {}
SERVER_SIDE = frozenset({Code.INTERNAL, Code.TIMEOUT, Code.UNAVAILABLE, Code.OVERLOADED})


class Outcomes:
    def __init__(
        self,
        metrics: Metrics,
        observers: Sequence[RequestObserver],
        payloads: PayloadLog | None,
        access_log: bool,
    ) -> None:
        self._metrics = metrics
        self._observers = tuple(observers)  # SLO and drift windows (serving/observers.py)
        self.payloads = payloads  # sampled inputs and outputs to rotated JSON Lines
        self.access_log = access_log  # one structured record per inference request (observability/logs.py)

    def answered(
        self, served: ServedVersion, inputs: Tensors, result: BatchResult, protocol: str, variant: str, started: float
    ) -> None:
        # drift and SLOs belong to the model that answered (for a routed request, the variant's)
        seconds = time.monotonic() - started
        for observer in self._observers:
            observer.answered(served, inputs, result.outputs, seconds)
        metrics, model, version = self._metrics, served.model, str(served.version)
        metrics.request_outcome(model, version, variant, protocol, "success").inc()
        metrics.latency(model, version, variant, protocol).observe(seconds)
        metrics.queue_time(model, version, variant).observe(result.queue_seconds)
        metrics.compute_time(model, version, variant).observe(result.compute_seconds)

    def cached(
        self, served: ServedVersion, inputs: Tensors, outputs: Tensors, protocol: str, variant: str, started: float
    ) -> None:
        """An answer from the version's response cache: watched and counted as answered (no queue or compute time)."""
        seconds = time.monotonic() - started
        for observer in self._observers:
            observer.answered(served, inputs, outputs, seconds)
        metrics, model, version = self._metrics, served.model, str(served.version)
        metrics.request_outcome(model, version, variant, protocol, "success").inc()
        metrics.latency(model, version, variant, protocol).observe(seconds)

    def relayed(self, served: ServedVersion, protocol: str, started: float) -> None:
        """A request passed on unread, answered (serving/forwarding.py): no tensors to watch."""
        seconds = time.monotonic() - started
        for observer in self._observers:
            observer.answered(served, _NONE, _NONE, seconds)
        metrics, model, version = self._metrics, served.model, str(served.version)
        metrics.request_outcome(model, version, "", protocol, "success").inc()
        metrics.latency(model, version, "", protocol).observe(seconds)

    def failed(self, served: ServedVersion, exc: TurnoutError, protocol: str, variant: str) -> None:
        self.failed_as(served, exc.code, protocol, variant)

    def failed_as(self, served: ServedVersion, code: Code, protocol: str, variant: str) -> None:
        self._metrics.request_outcome(served.model, str(served.version), variant, protocol, code.value).inc()
        if code in SERVER_SIDE:
            for observer in self._observers:
                observer.failed(served)

    def logged(
        self,
        served: ServedVersion,
        inputs: Tensors,
        outputs: Sequence[str],
        result: BatchResult,
        protocol: str,
        started: float,
    ) -> None:
        """A checked request's answer in the payload log (when sampled) and the access log."""
        if self.payloads is not None:
            specs = served.signature  # the request was checked against it: every name is there
            self.payloads.offer_tensors(
                served.model,
                str(served.version),
                {name: (spec.datatype if (spec := specs.input(name)) else "", array) for name, array in inputs.items()},
                {
                    name: (spec.datatype if (spec := specs.output(name)) else "", result.outputs[name])
                    for name in outputs
                },
            )
        if self.access_log:
            logs.access(None, served.model, str(served.version), "", protocol, "success",
                        time.monotonic() - started, tracing.current_trace_id())  # fmt: skip

    def responded(self, request: InferenceRequest, response: InferenceResponse, protocol: str, started: float) -> None:
        """A V2 request's answer in the payload log (when sampled) and the access log."""
        if self.payloads is not None:
            self.payloads.offer(request, response)
        if self.access_log:
            variant = response.parameters.get("variant", "")
            logs.access(response.id, response.model_name, response.model_version, str(variant), protocol, "success",
                        time.monotonic() - started, tracing.current_trace_id())  # fmt: skip

    def request_failed(self, request: InferenceRequest, exc: Exception, protocol: str, started: float) -> None:
        """A V2 request refused, or failed by a bug the transport answers with a 500: in the access log."""
        if self.access_log:
            code = exc.code.value if isinstance(exc, TurnoutError) else "internal"
            logs.access(request.id, request.model_name, request.model_version or "", "", protocol,
                        code, time.monotonic() - started, tracing.current_trace_id())  # fmt: skip
