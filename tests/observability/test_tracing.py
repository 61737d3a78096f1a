"""Traces from a real server (in this process, on free ports), captured
with the OpenTelemetry SDK's in-memory exporter: a request carrying a W3C
traceparent gets spans with that trace id and the documented names, over
REST and gRPC; with tracing off, the transports hold no tracer at all."""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import orjson
import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support import RedisServer, free_port
from turnout.app import Server
from turnout.observability.tracing import SPAN_NAMES, Tracer
from turnout.settings import (
    AdminSettings,
    GrpcSettings,
    HttpSettings,
    RoutingSettings,
    SecuritySettings,
    Settings,
    StreamSettings,
)
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb
from turnout.transports.grpc.v2 import grpc_predict_v2_pb2_grpc as pb_grpc

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
ROW = [0.05] * 10


def settings(repository: Path, tmp_path: Path, access_log: bool = False) -> Settings:
    return Settings(
        access_log=access_log,
        repository=repository,
        http=HttpSettings(port=free_port()),
        grpc=GrpcSettings(port=free_port()),
        admin=AdminSettings(port=None),
        security=SecuritySettings(inference_auth=False),
        routing=RoutingSettings(state_dir=tmp_path),
    )


def test_a_traced_request_continues_the_clients_trace(
    example_repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="turnout.access")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def scenario() -> None:
        server = Server(settings(example_repo, tmp_path, access_log=True))
        server.tracer = Tracer(provider)  # the in-memory exporter instead of an OTLP collector
        serving = asyncio.create_task(server.serve())
        http = server.settings.http
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}") as client:
            for _ in range(200):
                try:
                    if (await client.get("/v2/health/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": ROW}]}
            answer = await client.post("/v2/models/diabetes/infer", json=body, headers={"traceparent": PARENT})
            assert answer.status_code == 200
            refused = await client.post("/v2/models/diabetes/infer", json={"inputs": []})
            assert refused.status_code == 400

        def grpc_call() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{server.settings.grpc.port}") as channel:
                request = pb.ModelInferRequest(model_name="diabetes")
                tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 10])
                tensor.contents.fp32_contents.extend(ROW)
                pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=(("traceparent", PARENT),))

        await asyncio.to_thread(grpc_call)
        server.request_stop()
        await serving

    asyncio.run(scenario())
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name == "turnout.infer"]
    assert len(roots) == 3
    rest, refused, over_grpc = roots
    for root in (rest, over_grpc):
        assert format(root.context.trace_id, "032x") == TRACE_ID  # the client's trace, continued
        assert format(root.parent.span_id, "016x") == "00f067aa0ba902b7"
        assert root.attributes["turnout.model"] == "diabetes" and root.attributes["turnout.version"] == "1"
        assert root.attributes["turnout.status"] == "success"
        children = {s.name: s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id}
        assert set(children) == {"turnout.receive", "turnout.validate", "turnout.queue", "turnout.batch",
                                 "turnout.respond"}  # fmt: skip
        batch = children["turnout.batch"]
        compute = [s for s in spans if s.parent is not None and s.parent.span_id == batch.context.span_id]
        assert [s.name for s in compute] == ["turnout.compute"]
        ordered = [children[n] for n in ("turnout.validate", "turnout.queue", "turnout.batch", "turnout.respond")]
        assert all(a.start_time <= b.start_time for a, b in itertools.pairwise(ordered))
        assert (
            root.start_time <= children["turnout.receive"].start_time
            and children["turnout.respond"].end_time <= root.end_time
        )
    assert rest.attributes["rpc.system"] == "rest" and over_grpc.attributes["rpc.system"] == "grpc"
    assert format(refused.context.trace_id, "032x") != TRACE_ID  # no traceparent: a trace of its own
    assert refused.attributes["turnout.status"] == "invalid" and not refused.status.is_ok
    assert {s.name for s in spans} <= set(SPAN_NAMES)
    access = [r for r in caplog.records if r.name == "turnout.access"]
    assert [getattr(r, "trace_id", None) for r in access] == [TRACE_ID, None, TRACE_ID]  # the access log joins up


def test_tracing_is_off_by_default(example_repo: Path, tmp_path: Path) -> None:
    server = Server(settings(example_repo, tmp_path))
    assert server.tracer is None


@pytest.mark.redis
def test_a_stream_entry_with_a_traceparent_continues_the_producers_trace(example_repo: Path, tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    body = orjson.dumps({"id": "t1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": ROW}]})

    with RedisServer(tmp_path / "redis") as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        client.xadd(
            "turnout:diabetes:requests", {"v": "1", "reply_to": "traced", "request": body, "traceparent": PARENT}
        )
        client.xadd("turnout:diabetes:requests", {"v": "1", "reply_to": "traced", "request": b'{"inputs": []}'})

        async def scenario() -> None:
            server = Server(replace(settings(example_repo, tmp_path), stream=StreamSettings(url=redis_server.url)))
            server.tracer = Tracer(provider)
            serving = asyncio.create_task(server.serve())
            for _ in range(400):
                if client.xlen("traced") == 2:
                    break
                await asyncio.sleep(0.05)
            server.request_stop()
            await serving

        asyncio.run(scenario())
    roots = sorted((s for s in exporter.get_finished_spans() if s.name == "turnout.infer"), key=lambda s: s.start_time)
    assert len(roots) == 2
    traced, refused = roots
    assert format(traced.context.trace_id, "032x") == TRACE_ID
    assert traced.attributes["rpc.system"] == "stream" and traced.attributes["turnout.status"] == "success"
    assert traced.attributes["turnout.model"] == "diabetes" and traced.attributes["turnout.version"] == "1"
    children = {
        s.name for s in exporter.get_finished_spans() if s.parent and s.parent.span_id == traced.context.span_id
    }
    assert children == {"turnout.receive", "turnout.validate", "turnout.queue", "turnout.batch", "turnout.respond"}
    assert refused.attributes["turnout.status"] == "invalid" and not refused.status.is_ok


async def _until_ready(client: httpx.AsyncClient) -> None:
    for _ in range(200):
        try:
            if (await client.get("/v2/health/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)


def test_a_pipeline_request_is_one_trace_with_a_span_per_step(repo: Path, tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    from load_features import load as load_features  # examples/ (tests/conftest.py puts it on the path)

    with RedisServer(tmp_path / "redis") as store:
        load_features(store.url)
        for pipeline in (repo / "cancer_screening").glob("*/pipeline.toml"):
            pipeline.write_text(pipeline.read_text().replace("redis://127.0.0.1:6379/0", store.url))

        async def scenario() -> None:
            server = Server(settings(repo, tmp_path))
            server.tracer = Tracer(provider)
            serving = asyncio.create_task(server.serve())
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.settings.http.port}") as client:
                await _until_ready(client)
                for patient in ("3", "9999"):
                    body = {"inputs": [{"name": "patient_id", "datatype": "BYTES", "shape": [1], "data": [patient]}]}
                    await client.post("/v2/models/cancer_screening/versions/1/infer", json=body,
                                      headers={"traceparent": PARENT})  # fmt: skip
            server.request_stop()
            await serving

        asyncio.run(scenario())
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name == "turnout.infer"]
    assert [r.attributes["turnout.model"] for r in roots] == ["cancer_screening"] * 2  # the steps' models: no roots
    answered, refused = roots
    steps = [s for s in spans if s.name == "turnout.step" and s.parent.span_id == answered.context.span_id]
    assert [(s.attributes["turnout.step"], s.attributes["turnout.step.kind"]) for s in steps] == [
        ("features", "features"),
        ("scale", "model"),
        ("risk", "ensemble"),
        ("label", "argmax"),
    ]
    assert all(s.attributes["turnout.status"] == "success" for s in steps)
    assert all(answered.start_time <= s.start_time <= s.end_time <= answered.end_time for s in steps)
    assert all(a.end_time <= b.start_time for a, b in itertools.pairwise(steps))  # one after the other
    failed = [s for s in spans if s.name == "turnout.step" and s.parent.span_id == refused.context.span_id]
    assert [(s.attributes["turnout.step"], s.attributes["turnout.status"]) for s in failed] == [("features", "invalid")]
    assert not failed[0].status.is_ok and refused.attributes["turnout.status"] == "invalid"
