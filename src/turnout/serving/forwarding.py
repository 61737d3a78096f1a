"""A request to a remote endpoint set passed on as the bytes it came in.

A gateway in front of replicas decodes nothing it does not have to: when
nothing here reads the request (no drift profile, no payload log, no
routing policy choosing among variants, no ``timeout`` of the client's to
honour here), the REST body goes to a replica unread and the replica's
answer comes back as it is. The replica checks the request against the
model, as it would for a client of its own, so a bad request is its 400.
Decoding and encoding the tensors again would cost the gateway about what
the whole answer costs the replica (see BENCHMARKS.md, issue 21).

Counted as any request is (``turnout_requests``, latency, the SLO window,
the access log), under the status the replica gave.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from turnout.batcher.passthrough import Passthrough
from turnout.errors import Code, InferenceFailed, TurnoutError
from turnout.model.runtimes.base import Forwarded, Relayed
from turnout.observability import logs, tracing
from turnout.observability.metrics import Metrics
from turnout.serving.outcomes import Outcomes
from turnout.serving.served import ServedVersion

_CODES: Mapping[int, Code] = {
    400: Code.INVALID, 401: Code.UNAUTHENTICATED, 403: Code.FORBIDDEN, 404: Code.NOT_FOUND, 409: Code.CONFLICT,
    413: Code.TOO_LARGE, 429: Code.RATE_LIMITED, 503: Code.UNAVAILABLE, 504: Code.TIMEOUT,
}  # fmt: skip
_TIMEOUT = b'"timeout"'  # a client's own deadline: honoured by the decoded path

log = logging.getLogger("turnout.remote")


class Forwarding:
    def __init__(self, metrics: Metrics, outcomes: Outcomes) -> None:
        self._metrics = metrics
        self._outcomes = outcomes

    def may_forward(self, served: ServedVersion, body: bytes, header_length: int | None) -> bool:
        """Whether ``served`` may take this body unread."""
        return (
            served.forwarder is not None
            and served.drift is None
            and self._outcomes.payloads is None
            and not served.batcher.closing
            and _TIMEOUT not in (body if header_length is None else body[:header_length])
        )

    async def forward(
        self, served: ServedVersion, body: bytes, header_length: int | None, protocol: str, deadline: float | None
    ) -> Relayed:
        forwarder, batcher = served.forwarder, served.batcher
        assert forwarder is not None and isinstance(batcher, Passthrough)  # never batched here (served.py)
        started = time.monotonic()
        within = served.timeout if deadline is None else min(served.timeout, deadline)
        in_flight = self._metrics.in_flight(served.model, protocol)
        in_flight.inc()
        try:
            relayed = await batcher.relay(lambda: forwarder.forward(body, header_length, started + within))
        except TurnoutError as exc:
            self._settled(served, protocol, started, None, exc)
            raise
        finally:
            in_flight.inc(-1)
        self._settled(served, protocol, started, relayed, None)
        return relayed

    def start(self, served: ServedVersion, body: bytes, header_length: int | None, protocol: str,
              deadline: float | None, done: Forwarded) -> bool:  # fmt: skip
        """``forward`` driven by callbacks (the replica's answer reaches ``done``
        with no task or future between: a gateway's CPU per request is its
        product). False: not now, ``forward`` it; ``done`` is then never called."""
        forwarder, batcher = served.forwarder, served.batcher
        assert forwarder is not None and isinstance(batcher, Passthrough)
        started = time.monotonic()
        within = served.timeout if deadline is None else min(served.timeout, deadline)
        try:
            batcher.enter()
        except TurnoutError as exc:
            self._settled(served, protocol, started, None, exc)
            done(None, exc)
            return True
        in_flight = self._metrics.in_flight(served.model, protocol)
        in_flight.inc()
        over = False

        def ended(relayed: Relayed | None, error: TurnoutError | None) -> None:
            nonlocal over
            if over:  # once, whatever calls it again
                return
            over = True
            batcher.leave()
            in_flight.inc(-1)
            try:
                self._settled(served, protocol, started, relayed, error)
            except Exception:  # a bug in the counting: the client is answered all the same
                log.exception("counting a forwarded request of %s failed", served.model)
            done(relayed, error)

        try:
            taken = forwarder.start_forward(body, header_length, started + within, ended)
        except TurnoutError as exc:
            ended(None, exc)
            return True
        except Exception:  # a bug: the request fails in shape, and what it holds is given back
            log.exception("forwarding a request of %s failed", served.model)
            ended(None, InferenceFailed("internal error forwarding the request; the server log has the details"))
            return True
        if not taken:
            batcher.leave()
            in_flight.inc(-1)
        return taken

    def _settled(
        self, served: ServedVersion, protocol: str, started: float, relayed: Relayed | None, error: TurnoutError | None
    ) -> None:
        """Count and log a forwarded request's outcome, under the status the replica gave."""
        if error is not None:
            self._outcomes.failed(served, error, protocol, "")
            self._logged(served, protocol, error.code.value, started)
            return
        assert relayed is not None  # one of the two is given
        if relayed.status == 200:
            self._outcomes.relayed(served, protocol, started)
            self._logged(served, protocol, "success", started)
        else:
            code = _CODES.get(relayed.status, Code.INTERNAL)
            self._outcomes.failed_as(served, code, protocol, "")
            self._logged(served, protocol, code.value, started)

    def _logged(self, served: ServedVersion, protocol: str, status: str, started: float) -> None:
        if self._outcomes.access_log:
            logs.access(None, served.model, str(served.version), "", protocol, status,
                        time.monotonic() - started, tracing.current_trace_id())  # fmt: skip
