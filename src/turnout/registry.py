"""The models being served: which versions are live, and the state of each.

Sits above batching: it turns loaded versions into batchers and keeps the
index the repository API reports.

Concurrency: the registry lives on the event loop. Loading runs in a worker
thread; a model's loads and unloads are serialised by a per-model lock, and a
reload swaps the whole set of versions at once, then drains the old batchers,
so a request is always answered by a complete version. During a reload the
versions still serving stay READY; only new ones show LOADING.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from turnout.batching.batcher import Batcher
from turnout.batching.planner import BatchLimits
from turnout.errors import ConfigError, NotFound, Unavailable
from turnout.model.config import ModelConfig
from turnout.model.loader import LoadedVersion, LoadFailed, load_version
from turnout.model.repository import ModelRepository, ModelSource, is_model_name, parse_version
from turnout.model.runtime import Tensors
from turnout.model.signature import Signature
from turnout.observability.metrics import Metrics, VersionObserver

log = logging.getLogger("turnout.registry")


class State(enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"


@dataclass(frozen=True, slots=True)
class ServedVersion:
    model: str
    version: int
    platform: str
    config: ModelConfig
    signature: Signature
    max_batch_size: int
    batcher: Batcher
    prepare: Callable[[Tensors], Tensors]  # the runtime's per-request check, before queueing

    @property
    def timeout(self) -> float:
        return self.config.batching.timeout_ms / 1000.0


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str  # "" when the problem is the model's, not a version's
    state: State
    reason: str = ""


@dataclass(slots=True)
class _Model:
    live: dict[int, ServedVersion] = field(default_factory=dict)
    states: dict[int | None, tuple[State, str]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    unloaded: bool = False  # explicitly unloaded: not counted against server readiness


UNLOADED = "unloaded"


class ModelRegistry:
    def __init__(
        self,
        repository: ModelRepository,
        metrics: Metrics,
        drain_seconds: float = 30.0,
        allow_trusted_models: bool = False,
    ) -> None:
        self._allow_trusted = allow_trusted_models
        self._repository = repository
        self._metrics = metrics
        self._drain_seconds = drain_seconds
        self._models: dict[str, _Model] = {}
        self._changes: set[asyncio.Task[None]] = set()  # loads and unloads under way

    async def load_all(self) -> None:
        names = await asyncio.to_thread(self._repository.model_names)
        for name in names:
            if not is_model_name(name):  # listed, so the operator sees why it is not served
                reason = f"{self._repository.root / name}: not a valid model name (letters, digits, '_', '.', '-')"
                self._models[name] = _Model(states={None: (State.UNAVAILABLE, reason)})
                log.error("model directory %r not loaded: %s", name, reason)
            else:  # known from the start, so requests meanwhile hear "loading" (503), not "unknown" (404)
                self._models.setdefault(name, _Model(states={None: (State.LOADING, "")}))
        await asyncio.gather(*(self._load_logged(name) for name in names if is_model_name(name)))

    async def _load_logged(self, name: str) -> None:
        try:
            await self.load(name)
        except ConfigError as exc:
            log.error("model %s not loaded: %s", name, exc)
        except VersionsFailed as exc:  # each version's failure was logged where it happened
            log.debug("%s", exc)
        except Exception:  # one model's surprise must not stop the others from loading
            log.exception("model %s not loaded: unexpected error", name)

    async def load(self, name: str) -> None:
        """(Re)load ``name`` from the repository.

        A broken configuration leaves any live versions serving and raises
        ``ConfigError``; a version that fails to load is marked UNAVAILABLE
        with its reason while the others go live, never replaces a live
        version of the same number, and makes the call raise
        ``VersionsFailed`` once the others are live. The change runs to its end
        even if the caller stops waiting (a client's deadline, say).
        """
        if name not in self._models and not (
            is_model_name(name) and await asyncio.to_thread(self._repository.has, name)
        ):
            raise NotFound(f"no model '{name[:200]}' in the repository")
        await self._shielded(self._load(name))

    async def _shielded(self, change: Coroutine[Any, Any, None]) -> None:
        """Run a state change to completion whatever happens to the caller:
        a half-done load or unload would leave states and batchers behind."""
        task = asyncio.ensure_future(change)
        self._changes.add(task)
        task.add_done_callback(self._change_done)
        await asyncio.shield(task)

    def _change_done(self, task: asyncio.Task[None]) -> None:
        self._changes.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller still waiting has it; a gone one was logged

    async def _load(self, name: str) -> None:
        model = self._models.setdefault(name, _Model())
        async with model.lock:
            try:
                source = await asyncio.to_thread(self._repository.read, name)
            except ConfigError as exc:
                if not model.live:
                    model.states = {None: (State.UNAVAILABLE, str(exc))}
                raise
            # versions serving stay READY until the swap; only new ones are LOADING
            model.states = {v: (State.READY, "") for v in model.live}
            model.states |= {v: (State.LOADING, "") for v in source.versions if v not in model.live}
            loaded: dict[int, ServedVersion] = {}
            states: dict[int | None, tuple[State, str]] = {}
            for version in source.versions:
                try:
                    result = await asyncio.to_thread(load_version, source, version, self._allow_trusted)
                except LoadFailed as exc:
                    log.error("model %s version %d not loaded: %s", name, version, exc)
                    previous = model.live.get(version)
                    if previous is not None:
                        loaded[version] = previous
                        states[version] = (State.READY, f"reload failed, still serving the earlier load: {exc}")
                    else:
                        states[version] = (State.UNAVAILABLE, str(exc))
                    continue
                loaded[version] = self._serve(source, version, result)
                states[version] = (State.READY, "")
                log.info("model %s version %d ready (%s)", name, version, _describe(result.signature))
            old = model.live
            model.live, model.states, model.unloaded = loaded, states, False
            self._publish(name, old, loaded)
            kept = {id(v) for v in loaded.values()}
            await self._drain(v for v in old.values() if id(v) not in kept)
            failed = {v: reason for v, (state, reason) in states.items() if reason and v is not None}
            if failed:
                raise VersionsFailed(name, failed)

    def _serve(self, source: ModelSource, version: int, loaded: LoadedVersion) -> ServedVersion:
        config = source.config
        batcher = Batcher(
            loaded.instances,
            BatchLimits(
                loaded.max_batch_size,
                config.batching.max_queue_delay_ms / 1000.0,
                tuple(config.batching.preferred_batch_sizes),
            ),
            config.batching.max_queue_size,
            VersionObserver(self._metrics, source.name, str(version)),
            niceness=config.instances.niceness,
        )
        batcher.start()
        return ServedVersion(
            source.name,
            version,
            source.runtime.platform,
            config,
            loaded.signature,
            loaded.max_batch_size,
            batcher,
            loaded.instances[0].prepare,
        )

    async def unload(self, name: str) -> None:
        """Stop serving ``name`` once its queued and running requests are answered."""
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"unknown model '{name[:200]}'")
        await self._shielded(self._unload(name, model))

    async def _unload(self, name: str, model: _Model) -> None:
        async with model.lock:
            old = model.live
            model.live = {}
            model.states = {v: (State.UNLOADING, "") for v in old}
            self._publish(name, old, {})
            await self._drain(old.values())
            model.states = {v: (State.UNAVAILABLE, UNLOADED) for v in old} or {None: (State.UNAVAILABLE, UNLOADED)}
            model.unloaded = True

    def get(self, name: str, version: str | None = None) -> ServedVersion:
        """The live version to serve; the highest live one when none is named."""
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"unknown model '{name[:200]}'")
        if version:
            number = parse_version(version)
            served = model.live.get(number) if number is not None else None
            if served is not None:
                return served
            if number is None or number not in model.states:
                raise NotFound(f"model '{name}' has no version '{version[:40]}'")
            state, reason = model.states[number]
            raise Unavailable(
                f"model '{name}' version {number} is {state.value.lower()}{_because(reason)}",
                retry_after=_retry_after(state),
            )
        if model.live:
            return model.live[max(model.live)]
        reasons = "; ".join(dict.fromkeys(r for _, r in model.states.values() if r))
        busy = next((s for s, _ in model.states.values() if _retry_after(s)), None)
        if busy and not reasons:
            reasons = busy.value.lower()
        raise Unavailable(
            f"model '{name}' has no ready version{_because(reasons)}", retry_after=busy and _retry_after(busy)
        )

    def versions(self, name: str) -> list[int]:
        model = self._models.get(name)
        return sorted(model.live) if model else []

    def index(self) -> list[IndexEntry]:
        entries = []
        for name in sorted(self._models):
            for version, (state, reason) in sorted(self._models[name].states.items(), key=lambda kv: kv[0] or 0):
                entries.append(IndexEntry(name, "" if version is None else str(version), state, reason))
        return entries

    def known(self, name: str) -> bool:
        return name in self._models

    def all_ready(self) -> bool:
        """Every model that should serve does: explicitly unloaded ones do not count."""
        return all(
            state == State.READY
            for model in self._models.values()
            if not model.unloaded
            for state, _ in model.states.values()
        )

    def flush(self) -> None:
        """Run whatever is queued without waiting out batching delays (shutdown)."""
        for model in self._models.values():
            for served in model.live.values():
                served.batcher.flush()

    async def close(self) -> None:
        for name, model in self._models.items():
            old, model.live = model.live, {}
            self._publish(name, old, {})
            await self._drain(old.values())

    def _publish(self, name: str, old: dict[int, ServedVersion], new: dict[int, ServedVersion]) -> None:
        for version in old.keys() - new.keys():
            self._metrics.model_ready(name, str(version)).set(0)
        for version in new:
            self._metrics.model_ready(name, str(version)).set(1)

    async def _drain(self, versions: Iterable[ServedVersion]) -> None:
        await asyncio.gather(*(v.batcher.close(self._drain_seconds) for v in versions))


class VersionsFailed(Exception):
    """Some versions of a model failed to load; any others are live."""

    def __init__(self, model: str, reasons: dict[int, str]) -> None:
        self.model = model
        self.reasons = reasons
        listed = "; ".join(f"version {v}: {r}" for v, r in sorted(reasons.items()))
        super().__init__(f"model '{model}' did not fully load: {listed}")


def _retry_after(state: State) -> float | None:
    """Loading and unloading end on their own: worth a retry in a second."""
    return 1.0 if state in (State.LOADING, State.UNLOADING) else None


def _because(reason: str) -> str:
    return f": {reason}" if reason else ""


def _describe(signature: Signature) -> str:
    ins = ", ".join(s.describe() for s in signature.inputs)
    outs = ", ".join(s.describe() for s in signature.outputs)
    return f"{ins} -> {outs}"
