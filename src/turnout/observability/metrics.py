"""Prometheus metrics on an injected registry (no process-wide globals).

Labelled children are cached per label set: ``labels()`` is the costly part of
prometheus-client on a hot path.
"""

from __future__ import annotations

from functools import cache
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

# 100 µs .. ~30 s: small tabular models answer in tens of microseconds.
LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._requests = Counter(
            "turnout_requests",
            "Inference requests answered, by outcome.",
            ["model", "version", "protocol", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "turnout_request_duration_seconds",
            "Time from a request reaching the data plane to its successful answer.",
            ["model", "version", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._queue_time = Histogram(
            "turnout_queue_duration_seconds",
            "Time a request waited in the batcher's queue.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._compute_time = Histogram(
            "turnout_compute_duration_seconds",
            "Time the model took for the batch that held the request.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch_rows = Histogram(
            "turnout_batch_size",
            "Rows per executed batch.",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self._queue_depth = Gauge(
            "turnout_queue_depth",
            "Requests waiting in the batcher's queue.",
            ["model", "version"],
            registry=self.registry,
        )
        self._model_ready = Gauge(
            "turnout_model_ready",
            "1 when the model version is loaded and serving, else 0.",
            ["model", "version"],
            registry=self.registry,
        )
        self.request_outcome = cache(self._requests.labels)
        self.latency = cache(self._latency.labels)
        self.queue_time = cache(self._queue_time.labels)
        self.compute_time = cache(self._compute_time.labels)
        self.batch_rows = cache(self._batch_rows.labels)
        self.queue_depth = cache(self._queue_depth.labels)
        self.model_ready = cache(self._model_ready.labels)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class VersionObserver:
    """The batcher's observer for one model version."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self._depth = metrics.queue_depth(model, version)
        self._rows = metrics.batch_rows(model, version)

    def queue_depth(self, depth: int) -> None:
        self._depth.set(depth)

    def batch_ran(self, rows: int, requests: int, seconds: float) -> None:
        self._rows.observe(rows)
