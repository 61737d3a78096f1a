"""Prometheus families for shadow traffic, read from the mirror when scraped.

The mirror already keeps every total (``ShadowMirror.snapshot``), so nothing
is counted twice and the request path does no metrics work for the shadow:
this collector turns a snapshot into families at scrape time only. Scrapes run
on the event loop, like the mirror, so the snapshot is consistent without a
lock.

Gauges that are averages over compared requests (agreement ratio, latency
difference) are absent until a pair has a compared request, rather than NaN,
so that alerts see "no data" instead of a number that compares false.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from turnout.routing.shadow import ShadowMirror, ShadowReport

PAIR = ["endpoint", "shadow"]


class ShadowCollector(Collector):
    def __init__(self, mirror: ShadowMirror) -> None:
        self._mirror = mirror

    def describe(self) -> Iterator[Metric]:
        # Lets the registry refuse a second collector with the same names, without a snapshot.
        return iter(_families())

    def collect(self) -> Iterator[Metric]:
        families = _families()
        for report in self._mirror.snapshot():
            pair = [report.endpoint, report.shadow]
            for outcome, count in _outcomes(report):
                families.requests.add_metric([*pair, outcome], count)
            if report.requests:
                families.agreement.add_metric(pair, report.agreement_rate)
                families.latency.add_metric(pair, report.mean_latency_difference_seconds)
            for output, value in report.max_rel.items():
                families.max_rel.add_metric([*pair, output], value)
            for output, value in report.output_agreement.items():
                families.output_agreement.add_metric([*pair, output], value)
            for output, value in report.max_abs.items():
                families.max_abs.add_metric([*pair, output], value)
            for output, value in report.mean_abs.items():
                if not math.isnan(value):
                    families.mean_abs.add_metric([*pair, output], value)
            for reason, count in report.dropped_by.items():
                families.dropped.add_metric([*pair, reason], count)
        families.queue.add_metric([], self._mirror.queued)
        families.in_flight.add_metric([], self._mirror.in_flight)
        yield from families


def _outcomes(report: ShadowReport) -> tuple[tuple[str, int], ...]:
    return (
        ("agree", report.agreeing),
        ("disagree", report.disagreements),
        ("error", report.errors),
        ("dropped", report.dropped),
    )


class _Families(NamedTuple):
    requests: CounterMetricFamily
    agreement: GaugeMetricFamily
    max_abs: GaugeMetricFamily
    mean_abs: GaugeMetricFamily
    latency: GaugeMetricFamily
    queue: GaugeMetricFamily
    output_agreement: GaugeMetricFamily
    max_rel: GaugeMetricFamily
    dropped: CounterMetricFamily
    in_flight: GaugeMetricFamily


def _families() -> _Families:
    output = [*PAIR, "output"]
    return _Families(
        CounterMetricFamily(
            "turnout_shadow_requests",
            "Copies of requests sent to a shadow variant, by outcome of the comparison with the primary.",
            labels=[*PAIR, "outcome"],
        ),
        GaugeMetricFamily(
            "turnout_shadow_agreement_ratio",
            "Compared requests on which the shadow agreed with the primary.",
            labels=PAIR,
        ),
        GaugeMetricFamily(
            "turnout_shadow_max_abs_difference",
            "Largest absolute difference seen between the shadow's and the primary's numeric output.",
            labels=output,
        ),
        GaugeMetricFamily(
            "turnout_shadow_mean_abs_difference",
            "Mean over compared requests of each request's largest absolute difference, per numeric output.",
            labels=output,
        ),
        GaugeMetricFamily(
            "turnout_shadow_latency_difference_seconds",
            "Mean latency of the shadow minus the primary's, over compared requests.",
            labels=PAIR,
        ),
        GaugeMetricFamily("turnout_shadow_queue_length", "Copies waiting to be run on a shadow variant."),
        GaugeMetricFamily(
            "turnout_shadow_output_agreement_ratio",
            "Compared requests on which this output agreed (for a label output: the classification agreement).",
            labels=output,
        ),
        GaugeMetricFamily(
            "turnout_shadow_max_rel_difference",
            "Largest relative difference seen between the shadow's and the primary's numeric output.",
            labels=output,
        ),
        CounterMetricFamily(
            "turnout_shadow_dropped",
            "Copies never compared, by reason: busy (never made: the process's CPU was over 75% busy, or more "
            "requests were in flight than the budget of copies), full (the queue was), cancelled (the policy "
            "stopped mirroring), closed (the server was stopping).",
            labels=[*PAIR, "reason"],
        ),
        GaugeMetricFamily("turnout_shadow_in_flight", "Shadow copies running now (at most --shadow-workers)."),
    )


def register_shadow_metrics(registry: CollectorRegistry, mirror: ShadowMirror) -> None:
    registry.register(ShadowCollector(mirror))
