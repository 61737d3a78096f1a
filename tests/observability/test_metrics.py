"""The lock-free metrics render as standard Prometheus families."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from turnout.observability.metrics import LATENCY_BUCKETS, Metrics


def test_histograms_are_cumulative_with_sum_and_count() -> None:
    metrics = Metrics()
    latency = metrics.latency("m", "1", "", "rest")
    for value in (0.00005, 0.0003, 0.0003, 100.0):  # below the first bucket, twice mid, beyond the last
        latency.observe(value)
    metrics.request_outcome("m", "1", "", "rest", "success").inc()
    metrics.queue_depth("m", "1").set(3)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }
    labels = (("model", "m"), ("protocol", "rest"), ("variant", ""), ("version", "1"))
    bucket = "turnout_request_duration_seconds_bucket"

    def le(bound: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return bucket, tuple(sorted((*labels, ("le", bound))))

    assert samples[le("0.0001")] == 1
    assert samples[le("0.0005")] == 3
    assert samples[le(str(LATENCY_BUCKETS[-1]))] == 3
    assert samples[le("+Inf")] == 4
    assert samples[("turnout_request_duration_seconds_count", labels)] == 4
    assert abs(samples[("turnout_request_duration_seconds_sum", labels)] - 100.00065) < 1e-9
    outcome = (("model", "m"), ("protocol", "rest"), ("status", "success"), ("variant", ""), ("version", "1"))
    assert samples[("turnout_requests_total", outcome)] == 1
    assert samples[("turnout_queue_depth", (("model", "m"), ("version", "1")))] == 3


def test_registries_are_independent() -> None:
    first, second = Metrics(), Metrics()
    first.request_outcome("m", "1", "", "grpc", "success").inc()
    assert b'turnout_requests_total{model="m"' in first.exposition()
    assert b'turnout_requests_total{model="m"' not in second.exposition()


def test_a_remote_replica_that_leaves_its_set_leaves_the_metrics() -> None:
    """Pods come and go behind a DNS name: their series must not pile up."""
    metrics = Metrics(process_metrics=False)
    metrics.remote_attempts("m", "1", "10.0.0.1:8080", "answered").inc()
    metrics.remote_attempts("m", "1", "10.0.0.2:8080", "answered").inc()
    metrics.remote_latency("m", "1", "10.0.0.1:8080").observe(0.001)
    metrics.forget_replica("m", "1", "10.0.0.1:8080")
    text = metrics.exposition().decode()
    assert "10.0.0.1" not in text and 'replica="10.0.0.2:8080"' in text
    metrics.remote_attempts("m", "1", "10.0.0.1:8080", "answered").inc()  # back again: counted afresh
    assert 'outcome="answered",replica="10.0.0.1:8080",version="1"} 1.0' in metrics.exposition().decode()
