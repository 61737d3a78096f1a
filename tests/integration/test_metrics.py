"""Prometheus metrics at /metrics, labelled by model, version, protocol and status."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ServerProcess


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_requests_latency_queue_and_batches_are_measured(server: ServerProcess) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 10], "data": [0.01] * 20}]}
    bad = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 10], "data": [0.01] * 10}]}
    before = samples(server.url)
    with httpx.Client(base_url=server.url) as client:
        for _ in range(3):
            assert client.post("/v2/models/diabetes/infer", json=body).status_code == 200
        assert client.post("/v2/models/diabetes/infer", json=bad).status_code == 400
        assert client.post("/v2/models/unknown_thing/infer", json=body).status_code == 404
    after = samples(server.url)

    def delta(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    model = {"model": "diabetes", "version": "1"}
    unrouted = {**model, "variant": ""}  # diabetes has no routing policy
    assert delta("turnout_requests_total", **unrouted, protocol="rest", status="success") == 3
    assert delta("turnout_requests_total", **unrouted, protocol="rest", status="invalid") == 1
    assert delta("turnout_requests_total", model="", version="", variant="", protocol="rest", status="not_found") == 1
    assert delta("turnout_request_duration_seconds_count", **unrouted, protocol="rest") == 3
    assert delta("turnout_queue_duration_seconds_count", **unrouted) == 3
    assert delta("turnout_compute_duration_seconds_count", **unrouted) == 3
    assert delta("turnout_batch_size_count", **model) == 3
    assert delta("turnout_batch_size_sum", **model) == 6  # 2 rows each
    assert after[("turnout_queue_depth", frozenset(model.items()))] == 0
    assert after[("turnout_model_ready", frozenset(model.items()))] == 1
    assert after[("turnout_model_ready", frozenset({"model": "breast_cancer", "version": "2"}.items()))] == 1
    assert after[("turnout_inflight_requests", frozenset({"model": "diabetes", "protocol": "rest"}.items()))] == 0
    assert after[("turnout_model_load_duration_seconds_count", frozenset(model.items()))] == 1  # loaded once
    assert after[("turnout_model_load_duration_seconds_sum", frozenset(model.items()))] > 0
    assert after[("process_resident_memory_bytes", frozenset())] > 10_000_000  # the process, from /proc
    assert after[("process_cpu_seconds_total", frozenset())] > 0


def test_refused_bodies_are_counted(server: ServerProcess) -> None:
    before = samples(server.url)
    oversized = httpx.post(f"{server.url}/v2/models/diabetes/infer", content=b"[" + b"0," * 600_000 + b"0]")
    assert oversized.status_code == 413
    malformed = httpx.post(f"{server.url}/v2/models/diabetes/infer", content=b"{")
    assert malformed.status_code == 400
    after = samples(server.url)
    for status in ("too_large", "invalid"):
        key = (
            "turnout_requests_total",
            frozenset(
                {"model": "diabetes", "version": "1", "variant": "", "protocol": "rest", "status": status}.items()
            ),
        )
        assert after.get(key, 0.0) - before.get(key, 0.0) == 1
