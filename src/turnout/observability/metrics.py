"""Prometheus metrics on an injected registry (no process-wide globals).

Why not prometheus-client's Counter and Histogram objects: each observation
takes a lock and several calls, which measured ~40 µs of a ~170 µs request
on a small model (cProfile, 5,000 in-process requests). Every update here
happens on the event loop thread, and so does every scrape (/metrics is
served on the loop), so plain numbers need no lock. A custom collector turns
them into Prometheus families when scraped; prometheus-client still owns the
registry and the exposition format.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import Final

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# 100 µs .. ~30 s: small tabular models answer in tens of microseconds.
LATENCY_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LOAD_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


class Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = value


class Distribution:
    """Observations counted into fixed buckets (each value in the first bucket >= it)."""

    __slots__ = ("_buckets", "counts", "total")

    def __init__(self, buckets: Sequence[float]) -> None:
        self._buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self._buckets, value)] += 1
        self.total += value


class _Family:
    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels


class _Counts(_Family):
    """A counter or a gauge family: one number per label set."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str], gauge: bool = False) -> None:
        super().__init__(name, documentation, labels)
        self._kind = GaugeMetricFamily if gauge else CounterMetricFamily
        self.children: dict[tuple[str, ...], Count] = {}

    def child(self, *values: str) -> Count:
        found = self.children.get(values)
        if found is None:
            found = self.children[values] = Count()
        return found

    def collect(self) -> Metric:
        family = self._kind(self.name, self.documentation, labels=self.labels)
        for values, child in self.children.items():
            family.add_metric(list(values), child.value)
        return family


class _Distributions(_Family):
    def __init__(self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]) -> None:
        super().__init__(name, documentation, labels)
        self._buckets = buckets
        self.children: dict[tuple[str, ...], Distribution] = {}

    def child(self, *values: str) -> Distribution:
        found = self.children.get(values)
        if found is None:
            found = self.children[values] = Distribution(self._buckets)
        return found

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, child in self.children.items():
            cumulative, running = [], 0
            for bound, count in zip((*self._buckets, float("inf")), child.counts, strict=True):
                running += count
                cumulative.append((_bound(bound), running))
            family.add_metric(list(values), cumulative, child.total)
        return family


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _Families(Collector):
    def __init__(self, families: Sequence[_Counts | _Distributions]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            yield family.collect()


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, process_metrics: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        model = ["model", "version"]
        # variant: the routing policy's variant that answered ("" when the endpoint has no policy)
        requests = _Counts(
            "turnout_requests",
            "Inference requests answered, by outcome.",
            [*model, "variant", "protocol", "status"],
        )
        latency = _Distributions(
            "turnout_request_duration_seconds",
            "Time from a request reaching the data plane to its successful answer.",
            [*model, "variant", "protocol"],
            LATENCY_BUCKETS,
        )
        queue_time = _Distributions(
            "turnout_queue_duration_seconds",
            "Time a request waited in the batcher's queue.",
            [*model, "variant"],
            LATENCY_BUCKETS,
        )
        compute_time = _Distributions(
            "turnout_compute_duration_seconds",
            "Time the model took for the batch that held the request.",
            [*model, "variant"],
            LATENCY_BUCKETS,
        )
        batch_rows = _Distributions("turnout_batch_size", "Rows per executed batch.", model, BATCH_BUCKETS)
        queue_depth = _Counts("turnout_queue_depth", "Requests waiting in the batcher's queue.", model, gauge=True)
        model_ready = _Counts(
            "turnout_model_ready", "1 when the model version is loaded and serving, else 0.", model, gauge=True
        )
        load_failures = _Counts(
            "turnout_model_load_failures",
            "Version loads that failed (unreadable, corrupt, wrong signature, checksum mismatch, warm-up).",
            model,
        )
        evictions = _Counts(
            "turnout_model_evictions",
            "Models unloaded to keep to the memory budget or after their idle time (they load again on demand).",
            ["model"],
        )
        cold_start = _Distributions(
            "turnout_cold_start_seconds",
            "How long requests for a model not in memory waited for it to load.",
            ["model"],
            LATENCY_BUCKETS,
        )
        in_flight = _Counts(
            "turnout_inflight_requests",
            "Inference requests being answered now (decoded, not yet answered).",
            ["model", "protocol"],
            gauge=True,
        )
        load_time = _Distributions(
            "turnout_model_load_duration_seconds",
            "Time to load a model version: open, verify, warm up (successful loads).",
            model,
            LOAD_BUCKETS,
        )
        families: list[_Counts | _Distributions] = [requests, latency, queue_time, compute_time, batch_rows]
        feature_drift = _Counts(
            "turnout_feature_drift",
            "Drift of an input feature against the version's profile over the last window (PSI, KS).",
            [*model, "feature", "statistic"],
            gauge=True,
        )
        prediction_drift = _Counts(
            "turnout_prediction_drift",
            "Drift of the predictions against the version's profile over the last window (PSI, KS).",
            [*model, "statistic"],
            gauge=True,
        )
        families += [queue_depth, model_ready, load_failures, evictions, cold_start, in_flight, load_time]
        families += [feature_drift, prediction_drift]
        step_time = _Distributions(
            "turnout_pipeline_step_duration_seconds",
            "Time each step of a pipeline's request took, whatever its outcome.",
            [*model, "step"],
            LATENCY_BUCKETS,
        )
        step_outcome = _Counts(
            "turnout_pipeline_steps",
            "Steps of pipeline requests run, by outcome (success, or the error's code).",
            [*model, "step", "status"],
        )
        families += [step_time, step_outcome]
        self._step_time, self._step_outcome = step_time, step_outcome
        self.step_time = cache(step_time.child)
        self.step_outcome = cache(step_outcome.child)
        # Redis Streams: what waits (lag, pending) and what became of each entry read
        stream_pending = _Counts(
            "turnout_stream_pending",
            "Entries delivered to the consumer group and not yet acknowledged (XPENDING).",
            ["model", "stream"],
            gauge=True,
        )
        stream_oldest = _Counts(
            "turnout_stream_oldest_pending_age_seconds",
            "Age of the oldest unacknowledged entry, from the time its entry id records.",
            ["model", "stream"],
            gauge=True,
        )
        stream_lag = _Counts(
            "turnout_stream_lag",
            "Entries in the request stream not yet delivered to the consumer group.",
            ["model", "stream"],
            gauge=True,
        )
        stream_entries = _Counts(
            "turnout_stream_entries",
            "Request stream entries handled by this consumer, by outcome "
            "(answered, error: a V2 error was replied, dead_letter, retry: left pending after a failure).",
            ["model", "outcome"],
        )
        stream_redis_up = _Counts(
            "turnout_stream_redis_up", "1 while the stream consumer reaches Redis, else 0.", [], gauge=True
        )
        self._stream_consumer_pending = _Counts(
            "turnout_stream_consumer_pending",
            "Entries each consumer of the group holds unacknowledged (XINFO CONSUMERS); consumers removed "
            "from the group are dropped.",
            ["model", "stream", "consumer"],
            gauge=True,
        )
        families += [stream_pending, stream_oldest, stream_lag, stream_entries, stream_redis_up]
        # a remote endpoint set's attempts (routing/remote): per replica, so a slow or failing one shows
        remote_attempts = _Counts(
            "turnout_remote_attempts",
            "Attempts sent to a remote set's replicas, by how each ended (answered, failed, cancelled).",
            [*model, "replica", "outcome"],
        )
        remote_latency = _Distributions(
            "turnout_remote_attempt_duration_seconds",
            "Time from an attempt's sending to its replica's answer (answered attempts).",
            [*model, "replica"],
            LATENCY_BUCKETS,
        )
        remote_extra = _Counts(
            "turnout_remote_extra_attempts",
            "Extra attempts to a remote set: retry, hedge; refused: the retry budget allowed none.",
            [*model, "kind"],
        )
        remote_ejections = _Counts(
            "turnout_remote_ejections", "Replicas taken out of a remote set after failing.", [*model, "replica"]
        )
        families += [remote_attempts, remote_latency, remote_extra, remote_ejections]
        self._remote = (remote_attempts, remote_latency, remote_ejections)  # labelled by replica
        self.remote_attempts = cache(remote_attempts.child)
        self.remote_latency = cache(remote_latency.child)
        self.remote_extra = cache(remote_extra.child)
        self.remote_ejections = cache(remote_ejections.child)
        families.append(self._stream_consumer_pending)
        # a version's response cache ([cache] in model.toml)
        cache_lookups = _Counts(
            "turnout_cache_lookups",
            "Requests to a version with a response cache, by result: hit, shared_hit (from Redis), miss, bypass.",
            [*model, "result"],
        )
        cache_evictions = _Counts(
            "turnout_cache_evictions", "Answers dropped from a response cache to keep to its max_bytes.", model
        )
        cache_bytes = _Counts("turnout_cache_bytes", "Bytes of answers a response cache holds.", model, gauge=True)
        families += [cache_lookups, cache_evictions, cache_bytes]
        self.cache_lookups = cache(cache_lookups.child)
        self.cache_evictions = cache(cache_evictions.child)
        self.cache_bytes = cache(cache_bytes.child)
        self.registry.register(_Families(families))
        self.load_failures = cache(load_failures.child)
        self.in_flight = cache(in_flight.child)
        self.feature_drift = cache(feature_drift.child)
        self.prediction_drift = cache(prediction_drift.child)
        self.stream_pending = cache(stream_pending.child)
        self.stream_oldest_pending = cache(stream_oldest.child)
        self.stream_lag = cache(stream_lag.child)
        self.stream_entries = cache(stream_entries.child)
        self.stream_redis_up = cache(stream_redis_up.child)  # created by the consumer: absent without --stream
        self.load_time = cache(load_time.child)
        if process_metrics:  # the process's CPU, memory, open files (Linux /proc), the standard process_* names
            ProcessCollector(registry=self.registry)
        self.evictions = cache(evictions.child)
        self.cold_start = cache(cold_start.child)
        self._requests, self._latency = requests, latency
        self.request_outcome = cache(requests.child)
        self.latency = cache(latency.child)
        self.queue_time = cache(queue_time.child)
        self.compute_time = cache(compute_time.child)
        self.batch_rows = cache(batch_rows.child)
        self.queue_depth = cache(queue_depth.child)
        self.model_ready = cache(model_ready.child)

    def stream_consumers(self, model: str, stream: str, pending: Mapping[str, int]) -> None:
        """The group's consumers now and what each holds: those no longer in it are dropped."""
        family = self._stream_consumer_pending
        gone = [key for key in family.children if key[:2] == (model, stream) and key[2] not in pending]
        for key in gone:
            del family.children[key]
        for consumer, count in pending.items():
            family.child(model, stream, consumer).set(count)

    def per_model(self) -> dict[str, dict[str, float]]:
        """Totals by model (for the dashboard): answered, failed, latency sum and count."""
        totals: dict[str, dict[str, float]] = {}
        for (model, _, _, _, status), count in self._requests.children.items():
            entry = totals.setdefault(model, {"success": 0.0, "errors": 0.0, "latency_sum": 0.0, "latency_count": 0.0})
            entry["success" if status == "success" else "errors"] += count.value
        for (model, *_), distribution in self._latency.children.items():
            entry = totals.setdefault(model, {"success": 0.0, "errors": 0.0, "latency_sum": 0.0, "latency_count": 0.0})
            entry["latency_sum"] += distribution.total
            entry["latency_count"] += sum(distribution.counts)
        return totals

    def per_step(self, model: str, version: str) -> dict[str, dict[str, float]]:
        """A pipeline version's steps so far (for the dashboard): runs, failures, mean seconds."""
        steps: dict[str, dict[str, float]] = {}
        for (name, shown, step), distribution in self._step_time.children.items():
            if (name, shown) == (model, version):
                runs = sum(distribution.counts)
                steps[step] = {"runs": runs, "failed": 0.0, "mean_seconds": distribution.total / runs if runs else 0.0}
        for (name, shown, step, status), count in self._step_outcome.children.items():
            if (name, shown) == (model, version) and status != "success" and step in steps:
                steps[step]["failed"] += count.value
        return steps

    def forget_replica(self, model: str, version: str, replica: str) -> None:
        """A remote set's replica is gone: its series too (label values are model, version, replica, ...)."""
        for family in self._remote:
            for key in [k for k in family.children if k[:3] == (model, version, replica)]:
                del family.children[key]
        for cached in (self.remote_attempts, self.remote_latency, self.remote_ejections):
            cached.cache_clear()  # the cached children of the forgotten series are gone with them

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


class RemoteSetObserver:
    """A remote endpoint set's observer (``routing.remote.endpoint_set``) for one model version."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self._metrics, self._model, self._version = metrics, model, version

    def attempted(self, replica: str, outcome: str, seconds: float) -> None:
        self._metrics.remote_attempts(self._model, self._version, replica, outcome).inc()
        if outcome == "answered":
            self._metrics.remote_latency(self._model, self._version, replica).observe(seconds)

    def extra(self, kind: str) -> None:
        self._metrics.remote_extra(self._model, self._version, kind).inc()

    def ejected(self, replica: str) -> None:
        self._metrics.remote_ejections(self._model, self._version, replica).inc()

    def left(self, replica: str) -> None:
        self._metrics.forget_replica(self._model, self._version, replica)
