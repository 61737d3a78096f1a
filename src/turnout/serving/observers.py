"""What watches answered requests without being part of answering them: each
model's SLO windows and each version's drift windows, hung on the data plane
as observers (``DataPlane(observers=...)``), so adding a watcher never touches
the request path.

Concurrency: observers are called on the event loop, once per request, after
it was answered or refused by the server; they must not block. Drift windows
are binned off the loop, in one thread, so their alerts fire in the order the
windows filled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from turnout.observability.drift import DriftReport
from turnout.observability.metrics import Metrics
from turnout.observability.notifier import AlertNotifier
from turnout.observability.slo import SloWindow
from turnout.serving.served import ServedVersion

log = logging.getLogger("turnout.dataplane")

Arrays = Mapping[str, np.ndarray[Any, Any]]


class RequestObserver(Protocol):
    def answered(self, served: ServedVersion, inputs: Arrays, outputs: Arrays, seconds: float) -> None:
        """A request ``served`` answered, ``seconds`` after it arrived."""

    def failed(self, served: ServedVersion) -> None:
        """A request ``served`` failed on the server's side (not a client's bad request)."""


class SloJudge:
    """Each model's requests in windows; at a window's end, an alert on a missed objective (or its clearing)."""

    def __init__(self, notifier: AlertNotifier | None = None) -> None:
        self._notifier = notifier
        self._windows: dict[str, SloWindow] = {}

    def answered(self, served: ServedVersion, inputs: Arrays, outputs: Arrays, seconds: float) -> None:
        if _judged(served):
            self._judge(served, seconds)

    def failed(self, served: ServedVersion) -> None:
        if _judged(served):
            self._judge(served, None)

    def _judge(self, served: ServedVersion, seconds: float | None) -> None:
        slo, model = served.config.slo, served.model
        window = self._windows.get(model)
        if window is None or window.size != slo.window_requests:
            window = self._windows[model] = SloWindow(slo.window_requests)
        verdict = window.add(seconds)
        if verdict is None:
            return
        if slo.p99_ms is not None and verdict.p99_seconds is not None:
            p99_ms = verdict.p99_seconds * 1000
            summary = f"{model}: p99 latency {p99_ms:.1f} ms over the {slo.p99_ms:g} ms SLO"
            self._alert("TurnoutLatencyOverSLO", model, p99_ms > slo.p99_ms, summary)
        if slo.max_error_rate is not None:
            summary = f"{model}: {verdict.error_rate:.1%} of requests fail (SLO {slo.max_error_rate:.1%})"
            self._alert("TurnoutHighErrorRate", model, verdict.error_rate > slo.max_error_rate, summary)

    def _alert(self, alertname: str, model: str, missed: bool, summary: str) -> None:
        if missed:
            log.warning("%s", summary)
        if self._notifier is not None:
            self._notifier.observe(missed, {"alertname": alertname, "model": model}, {"summary": summary})


def _judged(served: ServedVersion) -> bool:
    slo = served.config.slo
    return slo.p99_ms is not None or slo.max_error_rate is not None


class DriftWatch:
    """Each version's inputs and predictions against its profile.json; at a
    window's end, the gauges, a log line, and alerts per drifting feature.
    Keeps each version's last report for the admin API and the dashboard."""

    def __init__(self, metrics: Metrics, notifier: AlertNotifier | None = None) -> None:
        self._metrics = metrics
        self._notifier = notifier
        self.reports: dict[tuple[str, str], tuple[float, DriftReport]] = {}  # (model, version): (time, report)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="turnout-drift")

    def answered(self, served: ServedVersion, inputs: Arrays, outputs: Arrays, seconds: float) -> None:
        window = served.drift
        if window is None:
            return
        profile = window.profile
        features, predictions = inputs.get(profile.input_name), outputs.get(profile.output_name)
        if features is None or predictions is None:  # the request did not ask for the profiled output
            return
        rows = window.add(features, predictions)
        if rows is None:
            return
        # binning a window's thousand rows takes milliseconds: off the event loop, the gauges after
        done = asyncio.get_running_loop().run_in_executor(self._worker, profile.report, rows)
        done.add_done_callback(lambda future: self._reported(served, future))

    def failed(self, served: ServedVersion) -> None:
        pass

    def _reported(self, served: ServedVersion, future: asyncio.Future[DriftReport]) -> None:
        model, version = served.model, str(served.version)
        if future.cancelled() or future.exception() is not None:
            log.error("model %s version %s: drift not computed: %r", model, version, future.exception())
            return
        report = future.result()
        self.reports[(model, version)] = (time.time(), report)
        for feature, statistics in report.features.items():
            for statistic, value in statistics.items():
                self._metrics.feature_drift(model, version, feature, statistic).set(value)
        for statistic, value in report.prediction.items():
            self._metrics.prediction_drift(model, version, statistic).set(value)
        limit, warn = served.config.drift.alert_psi, served.config.drift.warn_psi
        drifting = sorted(name for name, stats in report.features.items() if stats["psi"] > limit)
        moving = sorted(name for name, stats in report.features.items() if warn < stats["psi"] <= limit)
        if moving:
            log.info("model %s version %s: %s moving (PSI over %g)", model, version, ", ".join(moving), warn)
        if drifting:
            log.warning("model %s version %s: drift in %s (PSI over %g over %d rows)", model, version,
                        ", ".join(drifting), limit, report.rows)  # fmt: skip
        if self._notifier is not None:
            for feature, stats in report.features.items():
                labels = {"alertname": "TurnoutFeatureDrift", "model": model, "version": version, "feature": feature}
                summary = f"{model} v{version}: feature {feature} drifted (PSI {stats['psi']:.3g} over {limit:g})"
                self._notifier.observe(stats["psi"] > limit, labels, {"summary": summary})
