"""The process's stream consumers: one per model with a stream, kept in step
with the models the server knows (added, removed, or their ``[stream]``
table changed) and stopped before the server stops answering."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from turnout.model.config import ModelConfig
from turnout.observability.metrics import Metrics
from turnout.observability.tracing import Tracer
from turnout.protocol.limits import InputLimits
from turnout.streams.answers import Answer
from turnout.streams.consumer import ModelStream
from turnout.streams.group import StreamOptions
from turnout.streams.health import RedisHealth

log = logging.getLogger("turnout.streams")
RECONCILE_SECONDS = 2.0


def stream_name(model: str, config: ModelConfig) -> str:
    return config.stream.name or f"turnout:{model}:requests"


def dead_letter_name(model: str, config: ModelConfig) -> str:
    return config.stream.dead_letter or f"{stream_name(model, config)}:dead"


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Inference requests from Redis Streams (``url`` None: none consumed).

    ``group``: the deployment's consumer group; ``consumer``: this process's
    name in it (None: host name and process id). An entry pending longer than
    ``claim_idle_seconds`` is taken over by a live consumer; one delivered
    more than ``max_deliveries`` times goes to the dead-letter stream."""

    url: str | None = None
    group: str = "turnout"
    consumer: str | None = None
    max_deliveries: int = 3
    claim_idle_seconds: float = 30.0
    block_seconds: float = 1.0  # how long one read waits for entries


class StreamService:
    def __init__(
        self,
        settings: StreamSettings,
        answer: Answer,
        stream_models: Callable[[], dict[str, ModelConfig]],
        metrics: Metrics,
        limits: InputLimits,
        max_request_bytes: int,
    ) -> None:
        assert settings.url is not None
        self._settings = settings
        self._answer = answer
        self._stream_models = stream_models  # blocking (reads model.toml files): run in a thread
        self._metrics = metrics
        self._limits = limits
        self._max_request_bytes = max_request_bytes
        self._consumer = settings.consumer or default_consumer_name()
        self._redis = Redis.from_url(
            settings.url,
            socket_connect_timeout=2.0,
            # a blocked read holds the connection this long; past it, the connection is dead
            socket_timeout=settings.block_seconds + 10.0,
        )
        kwargs = self._redis.connection_pool.connection_kwargs
        self.address = f"{kwargs.get('host', kwargs.get('path', '?'))}:{kwargs.get('port', '')}/{kwargs.get('db', 0)}"
        self._health = RedisHealth(self.address, metrics)
        self._streams: dict[str, ModelStream] = {}
        self._reconciler: asyncio.Task[None] | None = None
        self._tracer: Tracer | None = None

    async def start(self, tracer: Tracer | None = None) -> None:
        self._tracer = tracer
        await self._reconcile()
        self._reconciler = asyncio.get_running_loop().create_task(self._keep_in_step())
        streams = ", ".join(f"{s.model} <- {s.options.stream}" for s in self._streams.values())
        log.info("consuming inference requests from Redis at %s as %r in group %r: %s", self.address,
                 self._consumer, self._settings.group, streams or "no models yet")  # fmt: skip

    async def stop(self, grace: float) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
            await asyncio.gather(self._reconciler, return_exceptions=True)
        await asyncio.gather(*(stream.stop(grace) for stream in self._streams.values()))
        self._streams.clear()
        await self._redis.aclose()

    async def _keep_in_step(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_SECONDS)
            try:
                await self._reconcile()
            except Exception:  # the next round tries again; the running consumers go on
                log.exception("updating the stream consumers failed")

    async def _reconcile(self) -> None:
        wanted = {
            model: self._options(model, config)
            for model, config in (await asyncio.to_thread(self._stream_models)).items()
            if config.stream.enabled
        }
        for model in [m for m, s in self._streams.items() if wanted.get(m) != s.options]:
            stream = self._streams.pop(model)
            log.info("no longer consuming %s for %s", stream.options.stream, model)
            await stream.stop(self._settings.claim_idle_seconds / 2)
        for model, options in wanted.items():
            if model not in self._streams:
                stream = ModelStream(
                    self._redis, model, options, self._answer, self._metrics, self._health, self._tracer
                )
                stream.start()
                self._streams[model] = stream

    def _options(self, model: str, config: ModelConfig) -> StreamOptions:
        settings = self._settings
        # by default half the batcher's queue: the other half stays for HTTP and gRPC
        prefetch = config.stream.prefetch or max(1, config.batching.max_queue_size // 2)
        return StreamOptions(
            stream=stream_name(model, config),
            dead_letter=dead_letter_name(model, config),
            group=settings.group,
            consumer=self._consumer,
            prefetch=prefetch,
            max_deliveries=settings.max_deliveries,
            claim_idle_seconds=settings.claim_idle_seconds,
            block_seconds=settings.block_seconds,
            limits=self._limits,
            max_request_bytes=self._max_request_bytes,
        )
