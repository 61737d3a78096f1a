"""The V2 operations, independent of any transport: health, metadata,
inference and the repository extension. REST and gRPC both call this."""

from __future__ import annotations

import time
from typing import Any

from turnout import __version__
from turnout.errors import ConfigError, InvalidRequest, TurnoutError, Unavailable
from turnout.observability.metrics import Metrics
from turnout.protocol.types import InferenceRequest, InferenceResponse, InferOutput
from turnout.registry import IndexEntry, ModelRegistry, ServedVersion, State, VersionsFailed
from turnout.validation import validate

SERVER_NAME = "turnout"
EXTENSIONS = ("binary_tensor_data", "model_repository", "parameters")


class DataPlane:
    def __init__(self, registry: ModelRegistry, metrics: Metrics, strict_readiness: bool = True) -> None:
        self._registry = registry
        self._metrics = metrics
        self._strict_readiness = strict_readiness
        self._started = False
        self._stopping = False

    def mark_started(self) -> None:
        self._started = True

    def mark_stopping(self) -> None:
        self._stopping = True

    def live(self) -> bool:
        """The process answers; it stays live while it drains at shutdown (ready does not)."""
        return True

    def ready(self) -> bool:
        if not self._started or self._stopping:
            return False
        return self._registry.all_ready() if self._strict_readiness else True

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def model_ready(self, name: str, version: str | None) -> bool:
        """Whether it would serve now; an unknown model or version raises NotFound."""
        try:
            self._registry.get(name, version)
        except Unavailable:
            return False
        return True

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        served = self._registry.get(name, version)
        return {
            "name": name,
            "versions": [str(v) for v in self._registry.versions(name)],
            "platform": served.platform,
            "inputs": [spec.as_metadata() for spec in served.signature.inputs],
            "outputs": [spec.as_metadata() for spec in served.signature.outputs],
        }

    def resolve(self, name: str, version: str | None, protocol: str) -> ServedVersion:
        """The live version that will answer; transports call this before
        decoding a body, so an unknown model is a 404 whatever the body holds."""
        try:
            return self._registry.get(name, version)
        except TurnoutError as exc:
            known = self._registry.known(name)
            # Unknown names are not used as labels: clients could grow the series without bound.
            self._metrics.request_outcome(name if known else "", "", protocol, exc.code.value).inc()
            raise

    def record_rejected(self, served: ServedVersion, protocol: str, error: TurnoutError) -> None:
        """Count a request the transport could not decode."""
        self._metrics.request_outcome(served.model, str(served.version), protocol, error.code.value).inc()

    def served_version(self, name: str, version: str | None) -> ServedVersion:
        """What answers for ``name`` (and ``version``): its configuration and signature."""
        return self._registry.get(name, version)

    async def infer(
        self,
        request: InferenceRequest,
        protocol: str,
        deadline: float | None = None,
    ) -> InferenceResponse:
        """Validate, queue and answer one request.

        ``deadline`` is the seconds the transport can still wait (a gRPC
        deadline); it shortens the model's queue timeout.
        """
        started = time.monotonic()
        served = self.resolve(request.model_name, request.model_version, protocol)
        model, version = served.model, str(served.version)
        try:
            checked = validate(request, served.signature, served.max_batch_size)
            inputs = served.prepare(checked.inputs)
            result = await served.batcher.submit(
                inputs, checked.outputs, _timeout(served.timeout, request.parameters, deadline)
            )
        except TurnoutError as exc:
            self._metrics.request_outcome(model, version, protocol, exc.code.value).inc()
            raise
        signature = served.signature
        outputs = []
        for name in checked.outputs:
            array = result.outputs[name]
            spec = signature.output(name)
            assert spec is not None  # validate() checked the name
            outputs.append(InferOutput(name, spec.datatype, array.shape, array))
        self._metrics.request_outcome(model, version, protocol, "success").inc()
        self._metrics.latency(model, version, protocol).observe(time.monotonic() - started)
        self._metrics.queue_time(model, version).observe(result.queue_seconds)
        self._metrics.compute_time(model, version).observe(result.compute_seconds)
        return InferenceResponse(model, version, outputs, id=request.id)

    def repository_index(self, ready_only: bool = False) -> list[IndexEntry]:
        entries = self._registry.index()
        return [e for e in entries if e.state == State.READY] if ready_only else entries

    async def load_model(self, name: str, parameters: object = None) -> None:
        """(Re)load from disk. Triton's load may carry a config override or model
        files; those are refused rather than reported done without being done."""
        if parameters:
            keys = sorted(parameters) if isinstance(parameters, dict) else parameters
            raise InvalidRequest(
                f"load parameters {keys!r} are not supported; change model.toml and the "
                "version directories on disk, then load"
            )
        try:
            await self._registry.load(name)
        except ConfigError as exc:
            raise InvalidRequest(f"model '{name}' cannot be loaded: {exc}") from None
        except VersionsFailed as exc:  # as Triton answers a failed load; the versions that loaded serve
            raise InvalidRequest(str(exc)) from None

    async def unload_model(self, name: str) -> None:
        await self._registry.unload(name)


def _timeout(configured: float | None, parameters: dict[str, Any], deadline: float | None) -> float | None:
    """The queue timeout: the model's, shortened by the transport's deadline and
    by a request's ``timeout`` parameter (microseconds, as Triton's clients send it)."""
    limits = [t for t in (configured, deadline) if t is not None]
    requested = parameters.get("timeout")
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested <= 0:
            raise InvalidRequest("parameter 'timeout' must be a positive integer (microseconds)")
        limits.append(requested / 1_000_000)
    return min(limits, default=None)
