"""``turnout bench``: measure a V2 server over a list of concurrencies (closed
loop) or request rates (open loop), and report throughput, latency
percentiles, errors by kind and the generator's own CPU use."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from turnout.bench import payloads
from turnout.bench.grpc_client import GrpcCallError, GrpcConnection, GrpcTarget
from turnout.bench.http_client import HttpTarget
from turnout.bench.loadgen import Result, Send, SenderFactory, closed_loop, open_loop

PROTOCOLS = ("rest", "rest-binary", "grpc")
GRPC_CONNECTIONS = 4


@dataclass(frozen=True, slots=True)
class BenchSettings:
    model: str
    version: str | None
    protocol: str
    url: str
    grpc_url: str
    concurrencies: tuple[int, ...]
    rates: tuple[float, ...]
    duration: float
    warmup: float
    batch: int
    input_file: Path | None
    json_out: Path | None
    plot_out: Path | None
    quiet: bool
    busy_poll: str = "auto"  # "auto": at concurrency 1 only; "on"; "off"
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request (credentials), as gRPC metadata too


def run(settings: BenchSettings) -> list[Result]:
    try:
        import uvloop

        return uvloop.run(_run(settings))
    except ImportError:  # pragma: no cover - uvloop is a core dependency on Linux
        return asyncio.run(_run(settings))


async def _run(settings: BenchSettings) -> list[Result]:
    tensors = await _inputs(settings)
    factory = await _factory(settings, tensors)
    results: list[Result] = []
    points: list[tuple[str, float]] = [("closed", c) for c in settings.concurrencies]
    points += [("open", r) for r in settings.rates]
    for mode, value in points:
        label = f"c={int(value)}" if mode == "closed" else f"rate={value:g}/s"
        progress = None if settings.quiet else _progress(label)
        if mode == "closed":
            spin = settings.busy_poll == "on" or (settings.busy_poll == "auto" and int(value) == 1)
            result = await closed_loop(
                factory, int(value), settings.duration, settings.warmup, progress, busy_poll=spin
            )
        else:
            result = await open_loop(factory, value, settings.duration, settings.warmup, progress=progress)
        results.append(result)
        print(_line(settings, label, result), flush=True)
    if settings.json_out is not None:
        document = {
            "model": settings.model,
            "protocol": settings.protocol,
            "batch": settings.batch,
            "results": [r.as_json() for r in results],
        }
        settings.json_out.write_text(json.dumps(document, indent=2) + "\n")
    if settings.plot_out is not None:
        from turnout.bench.plot import plot

        plot(results, settings.plot_out, f"{settings.model} over {settings.protocol}")
    return results


def _progress(label: str) -> Any:
    def show(successes: int, errors: int) -> None:
        print(f"\r  {label}: {successes} answered, {errors} errors", end="", file=sys.stderr, flush=True)

    return show


def _line(settings: BenchSettings, label: str, result: Result) -> str:
    latency = result.latency_ms
    errors = ", ".join(f"{k} {v}" for k, v in sorted(result.errors.items())) or "none"
    return (
        f"\r{settings.protocol} {settings.model} {label}: {result.throughput:,.0f} req/s  "
        f"p50 {latency['p50']:.3f} ms  p90 {latency['p90']:.3f}  p99 {latency['p99']:.3f}  "
        f"p99.9 {latency['p99.9']:.3f}  errors: {errors}  client CPU {result.client_cpu_percent:.0f}%"
    )


async def _inputs(settings: BenchSettings) -> payloads.Tensors:
    if settings.input_file is not None:
        return payloads.tensors_from_file(settings.input_file)
    metadata = await _metadata(settings)
    return payloads.tensors_from_metadata(metadata, settings.batch)


def _model_path(settings: BenchSettings) -> str:
    path = f"/v2/models/{settings.model}"
    return path + f"/versions/{settings.version}" if settings.version else path


async def _metadata(settings: BenchSettings) -> dict[str, Any]:
    if settings.protocol == "grpc":
        from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]

        from turnout.transports.grpc.v2 import grpc_predict_v2_pb2 as pb

        grpc_target = GrpcTarget(settings.grpc_url, settings.headers)
        grpc_connection = await grpc_target.connect()
        request = pb.ModelMetadataRequest(name=settings.model, version=settings.version or "")
        path = "/inference.GRPCInferenceService/ModelMetadata"
        try:
            answer = await grpc_connection.call(grpc_target.header_block(path), request.SerializeToString())
        except GrpcCallError as exc:
            raise SystemExit(f"turnout bench: metadata of {settings.model!r}: {exc.message}") from None
        finally:
            grpc_connection.close()
        reply = pb.ModelMetadataResponse.FromString(answer)
        metadata: dict[str, Any] = MessageToDict(reply)
        for spec in metadata.get("inputs", []):
            spec["shape"] = [int(d) for d in spec.get("shape", [])]
        return metadata
    target = HttpTarget(settings.url)
    connection = await target.connect()
    try:
        status, body = await connection.send(
            target.request("GET", _model_path(settings), headers=dict(settings.headers)), keep_body=True
        )
    finally:
        connection.close()
    if status != 200:
        raise SystemExit(f"turnout bench: metadata of {settings.model!r}: HTTP {status}: {body[:200]!r}")
    document: dict[str, Any] = json.loads(body)
    return document


async def _factory(settings: BenchSettings, tensors: payloads.Tensors) -> SenderFactory:
    if settings.protocol == "grpc":
        return _grpc_factory(settings, tensors)
    target = HttpTarget(settings.url)
    payload = payloads.rest_json(tensors) if settings.protocol == "rest" else payloads.rest_binary(tensors)
    request = target.request(
        "POST", _model_path(settings) + "/infer", payload.body, {**payload.headers, **dict(settings.headers)}
    )

    async def factory() -> Send:
        connection = await target.connect()

        async def send() -> str | None:
            nonlocal connection
            if not connection.open:
                connection = await target.connect()
            status, _ = await connection.send(request)
            return None if status == 200 else f"http_{status}"

        return send

    return factory


def _grpc_factory(settings: BenchSettings, tensors: payloads.Tensors) -> SenderFactory:
    message = payloads.grpc_message(settings.model, settings.version or "", tensors)
    target = GrpcTarget(settings.grpc_url, settings.headers)
    header_block = target.header_block("/inference.GRPCInferenceService/ModelInfer")
    # a few HTTP/2 connections, shared round-robin by the clients, as gRPC channels would be
    connections: list[GrpcConnection | None] = [None] * GRPC_CONNECTIONS
    turn = itertools.count()
    connecting = asyncio.Lock()

    async def connection() -> GrpcConnection:
        slot = next(turn) % GRPC_CONNECTIONS
        current = connections[slot]
        if current is None or not current.open:
            async with connecting:  # one connect per slot, however many clients ask at once
                current = connections[slot]
                if current is None or not current.open:
                    current = connections[slot] = await target.connect()
        return current

    async def factory() -> Send:
        async def send() -> str | None:
            try:
                await (await connection()).call(header_block, message)
            except GrpcCallError as exc:
                return exc.kind
            return None

        return send

    return factory


def parse_list(text: str, kind: type) -> tuple[Any, ...]:
    return tuple(kind(part) for part in text.split(",") if part.strip())
