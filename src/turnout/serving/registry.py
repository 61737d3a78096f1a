"""The models being served: which versions are live, and the state of each.

Sits above batching: it turns loaded versions into batchers and keeps the
index the repository API reports. Which versions a (re)load puts live is
decided in ``loading.py``; which models stay in memory, in ``residency.py``;
pins and the default's history, in ``pins.py`` and ``defaults.py``.

Concurrency: the registry lives on the event loop. Loading runs in a worker
thread; a model's loads and unloads are serialised by a per-model lock, and a
reload swaps the whole set of versions at once, then drains the old batchers,
so a request is always answered by a complete version. During a reload the
versions still serving stay READY; only new ones show LOADING.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from turnout.errors import ConfigError, NotFound
from turnout.model.config import CONFIG_FILE
from turnout.model.contract import Contract, keeps_the_contract
from turnout.model.fingerprint import digests_and_size
from turnout.model.loader import load_version
from turnout.model.repository import ModelRepository, ModelSource, is_model_name, parse_version
from turnout.observability.metrics import Metrics, VersionObserver
from turnout.routing.document import RoutingDocument, from_config
from turnout.serving.loading import load_older, load_versions
from turnout.serving.pins import PinStore
from turnout.serving.residency import Budget, Residency
from turnout.serving.served import (
    LAZY,
    UNLOADED,
    IndexEntry,
    ServedVersion,
    State,
    VersionsFailed,
    describe,
    none_ready,
    serve,
    version_unavailable,
)
from turnout.serving.shared_cache import SharedCache, VersionCache

log = logging.getLogger("turnout.registry")


@dataclass(slots=True)
class _Model:
    live: dict[int, ServedVersion] = field(default_factory=dict)
    states: dict[int | None, tuple[State, str]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    unloaded: bool = False  # explicitly unloaded: not counted against server readiness
    digests: dict[int, str] = field(default_factory=dict)  # each live version's files when loaded
    default_version: int | None = None  # model.toml's default_version
    lazy: bool = False  # not in memory on purpose (lazy start, evicted, idle): loads on the next request
    loading: asyncio.Future[None] | None = None  # an on-demand load under way, shared by its waiters
    first_load: asyncio.Event | None = None  # set when a load of a model with nothing live ends
    waiters: int = 0  # requests waiting for an on-demand load: not evicted meanwhile


class ModelRegistry:
    def __init__(
        self,
        repository: ModelRepository,
        metrics: Metrics,
        drain_seconds: float = 30.0,
        allow_trusted_models: bool = False,
        pins: PinStore | None = None,
        budget: Budget | None = None,
        clock: Callable[[], float] = time.monotonic,
        shared_cache: SharedCache | None = None,
    ) -> None:
        self._shared_cache = shared_cache  # the response cache's level shared by replicas (--cache-redis)
        self._pins = pins or PinStore()
        # a version that forwards (a remote set) has been loaded here: only then is a request
        # offered to the relay path (DataPlane.relay), which a replica's requests need not pay for
        self.forwards = False
        self._residency = Residency(budget or Budget())
        self._tracking = self._residency.budget.limited or self._residency.budget.idle_seconds is not None
        self._clock = clock
        self._allow_trusted = allow_trusted_models
        self._repository = repository
        root = repository.root
        self._root_prefixes = tuple(dict.fromkeys((f"{root}/", f"{root.resolve()}/")))  # cut from reasons shown
        self._metrics = metrics
        self._drain_seconds = drain_seconds
        self._models: dict[str, _Model] = {}
        self._changes: set[asyncio.Task[None]] = set()  # loads and unloads under way

    async def load_all(self, lazy: bool = False) -> None:
        """Load every model; ``lazy``: none now, each on its first request."""
        names = await asyncio.to_thread(self._repository.model_names)
        for name in names:
            if not is_model_name(name):  # listed, so the operator sees why it is not served
                reason = f"{self._repository.root / name}: not a valid model name (letters, digits, '_', '.', '-')"
                self._models[name] = _Model(states={None: (State.UNAVAILABLE, reason)})
                log.error("model directory %r not loaded: %s", name, reason)
            elif lazy:
                self._models.setdefault(name, _Model(states={None: (State.UNAVAILABLE, LAZY)}, lazy=True))
            else:  # known from the start, so requests meanwhile hear "loading" (503), not "unknown" (404)
                self._models.setdefault(name, _Model(states={None: (State.LOADING, "")}))
        if not lazy:
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
        await asyncio.shield(self._in_background(change))

    def _in_background(self, change: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Start a state change without waiting for it (it runs to its end)."""
        task = asyncio.ensure_future(change)
        self._changes.add(task)
        task.add_done_callback(self._change_done)
        return task

    def _change_done(self, task: asyncio.Task[None]) -> None:
        self._changes.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller still waiting has it; a gone one was logged

    async def _load(self, name: str) -> None:
        model = self._models.setdefault(name, _Model())
        if not model.live and model.first_load is None:  # requests meanwhile wait for it, not fail
            model.first_load = asyncio.Event()
        try:
            await self._load_locked(name, model)
        finally:
            if model.first_load is not None:
                model.first_load.set()
                model.first_load = None

    def load_in_progress(self, name: str) -> asyncio.Event | None:
        """Set when the load of a model with no live version ends (None: no such load)."""
        model = self._models.get(name)
        return None if model is None or model.live else model.first_load

    async def _load_locked(self, name: str, model: _Model) -> None:
        async with model.lock:
            try:
                source = await asyncio.to_thread(self._repository.read, name)
                routing = from_config(source.config.routing, str(source.directory / CONFIG_FILE))
            except ConfigError as exc:
                if model.live:  # what serves keeps serving; the index says why the edit did not apply
                    why = f"{exc}; still serving as loaded before this model.toml"
                    model.states = {v: (State.READY, why) for v in model.live}
                else:
                    model.states = {None: (State.UNAVAILABLE, str(exc))}
                raise
            wanted = set(source.versions) | (self._pins.kept(name) & set(source.on_disk))
            digests, size = await asyncio.to_thread(digests_and_size, source, sorted(wanted))
            unchanged = {v for v in wanted if v in model.live and model.digests.get(v) == digests[v]}
            # versions serving stay READY until the swap; only new or changed ones are LOADING
            model.states = {v: (State.READY, "") for v in model.live}
            model.states |= {v: (State.LOADING, "") for v in wanted - unchanged}

            async def make(version: int) -> ServedVersion:
                return await self._make(source, version, routing, self._contract(name, model), digests.get(version))

            def failed_to_load(version: int) -> None:
                self._metrics.load_failures(name, str(version)).inc()

            outcome = await load_versions(source, wanted, digests, model.live, model.digests, make, failed_to_load)
            if not outcome.live and wanted:  # nothing in memory to keep (a restart, an eviction): an older one
                await load_older(source, wanted, outcome, make, partial(self._digests, source))
            loaded = outcome.live
            old = model.live
            before = self._default(name, model)
            model.live, model.states, model.unloaded = loaded, outcome.states, False
            model.digests, model.default_version = outcome.digests, source.config.default_version
            model.lazy = False
            self._note_default(name, model, before)
            self._remember_contract(name, model)
            if loaded and self._tracking:
                self._residency.loaded(name, size, self._clock())
                self._keep_to_budget(keep=name)
            self._publish(name, old, loaded)
            kept = {id(v) for v in loaded.values()}
            await self._drain(v for v in old.values() if id(v) not in kept)
            failed = outcome.failures(wanted)
            if failed:
                raise VersionsFailed(name, failed)

    async def _shared_level(self, source: ModelSource, version: int, digest: str | None) -> VersionCache | None:
        """The version's keys in the shared response cache, named by its files' digest
        (as the load found it; an older version loaded instead has none yet)."""
        cache = source.config.cache
        if not (cache.enabled and cache.shared):
            return None
        if self._shared_cache is None:
            log.warning("model %s: [cache] shared = true, but the server has no --cache-redis: not shared", source.name)
            return None
        if digest is None:
            digest = (await self._digests(source, [version]))[version]
        return self._shared_cache.scope(source.name, version, digest, cache.ttl_seconds)

    def _contract(self, name: str, model: _Model) -> Contract | None:
        """What clients call: the serving default version's signature, which a
        new version must keep unless model.toml declares the signature; when
        nothing is live (evicted, or just started), the last one that was."""
        default = self._default(name, model)
        if default is not None:
            served = model.live[default]
            return Contract(served.version, served.signature, served.max_batch_size)
        return self._pins.contract(name)

    def _remember_contract(self, name: str, model: _Model) -> None:
        contract = self._contract(name, model)
        if contract is not None and model.live:
            self._pins.remember_contract(name, contract)

    async def _make(
        self,
        source: ModelSource,
        version: int,
        routing: RoutingDocument | None,
        contract: Contract | None,
        digest: str | None = None,
    ) -> ServedVersion:
        """Load one version and make it servable; ``LoadFailed`` saying why not."""
        began = time.monotonic()
        await source.runtime.ready_to_load(source.version_dir(version))
        result = await asyncio.to_thread(load_version, source, version, self._allow_trusted)
        keeps_the_contract(source, version, result, contract)
        self._metrics.load_time(source.name, str(version)).observe(time.monotonic() - began)
        log.info("model %s version %d ready (%s)", source.name, version, describe(result.signature))
        observer = VersionObserver(self._metrics, source.name, str(version))
        served = serve(source, version, result, routing, observer, await self._shared_level(source, version, digest))
        if served.forwarder is not None:
            self.forwards = True
        return served

    @staticmethod
    async def _digests(source: ModelSource, versions: list[int]) -> dict[int, str]:
        return (await asyncio.to_thread(digests_and_size, source, versions))[0]

    def _default(self, name: str, model: _Model) -> int | None:
        """The version requests that name none get: the pinned one, else
        model.toml's default_version, else the highest live one."""
        if not model.live:
            return None
        for choice in (self._pins.pinned(name), model.default_version):
            if choice is not None and choice in model.live:
                return choice
        return max(model.live)

    def _note_default(self, name: str, model: _Model, before: int | None) -> None:
        after = self._default(name, model)
        if before is not None and after is not None and after != before:
            self._pins.default_changed(name, before)
            log.info("model %s: version %d is now the default (was %d)", name, after, before)

    @property
    def pins(self) -> PinStore:
        """Pins, the history of defaults and the signature contract, kept on disk."""
        return self._pins

    def require(self, name: str) -> None:
        """``NotFound`` unless the registry knows ``name``."""
        self._known(name)

    async def on_disk(self, name: str) -> list[int]:
        """The version directories on disk (ConfigError if the model cannot be read)."""
        return list((await asyncio.to_thread(self._repository.read, name)).on_disk)

    def default_version(self, name: str) -> int | None:
        model = self._models.get(name)
        return None if model is None else self._default(name, model)

    def note_default(self, name: str, before: int | None) -> None:
        """Log and remember a change of ``name``'s default from ``before`` (for rollback)."""
        model = self._models.get(name)
        if model is not None:
            self._note_default(name, model, before)

    def policy_versions(self, name: str) -> list[int]:
        """The versions the version policy selects now ([] if the model cannot be read)."""
        try:
            return list(self._repository.read(name).versions)
        except ConfigError:
            return []

    def _known(self, name: str) -> _Model:
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"unknown model '{name[:200]}'")
        return model

    async def unload(self, name: str) -> None:
        """Stop serving ``name`` once its queued and running requests are answered."""
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"unknown model '{name[:200]}'")
        await self._shielded(self._unload(name, model))

    async def _unload(self, name: str, model: _Model) -> None:
        self._residency.unloaded(name)
        async with model.lock:
            old = model.live
            model.live = {}
            model.states = {v: (State.UNLOADING, "") for v in old}
            self._publish(name, old, {})
            await self._drain(old.values())
            model.states = {v: (State.UNAVAILABLE, UNLOADED) for v in old} or {None: (State.UNAVAILABLE, UNLOADED)}
            model.unloaded, model.lazy = True, False

    # scale to zero
    async def _evict(self, name: str, why: str) -> None:
        """Out of memory until the next request brings it back."""
        model = self._models.get(name)
        if model is None:
            return
        self._residency.unloaded(name)
        async with model.lock:
            if not model.live or model.unloaded:
                return
            old = model.live
            model.live, model.lazy = {}, True
            model.states = {None: (State.UNAVAILABLE, LAZY)}
            self._publish(name, old, {})
            self._metrics.evictions(name).inc()
            log.info("model %s unloaded: %s (it loads again on its next request)", name, why)
            await self._drain(old.values())

    async def evict_idle(self) -> None:
        for name in self._residency.idle(self._clock()):
            await self._shielded(self._evict(name, f"unused for {self._residency.budget.idle_seconds:g} s"))

    def is_lazy(self, name: str) -> bool:
        model = self._models.get(name)
        return model is not None and model.lazy and not model.live

    async def load_on_demand(self, name: str) -> None:
        """Load a lazy model for a request that wants it; concurrent requests
        share one load, and the model is not evicted while they wait. Raises
        what the load raised."""
        model = self._known(name)
        if model.live or not model.lazy:
            return
        model.waiters += 1
        try:
            await self._load_on_demand(name, model)
        finally:
            model.waiters -= 1
            if not model.waiters and self._tracking:
                # a model spared while requests waited for it: the budget is kept once they are in
                self._keep_to_budget(keep=name)

    def _keep_to_budget(self, keep: str) -> None:
        """Evict the least recently used models past the budget, never ``keep``
        nor a model requests are waiting to see loaded (each under its own lock, later)."""
        busy = frozenset(n for n, m in self._models.items() if m.waiters)
        for victim in self._residency.to_evict(keep=keep, busy=busy):
            self._in_background(self._evict(victim, "over the memory budget"))

    async def _load_on_demand(self, name: str, model: _Model) -> None:
        if model.loading is None:
            model.states = {None: (State.LOADING, "")}
            model.loading = self._in_background(self._load(name))

            def done(future: asyncio.Future[None]) -> None:
                model.loading = None
                if not future.cancelled() and future.exception() is not None and not model.live:
                    model.lazy = True  # the next request tries again

            model.loading.add_done_callback(done)
        await asyncio.shield(model.loading)

    def get(self, name: str, version: str | None = None) -> ServedVersion:
        """The live version to serve; the highest live one when none is named."""
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"unknown model '{name[:200]}'")
        if version:
            number = parse_version(version)
            served = model.live.get(number) if number is not None else None
            if served is not None:
                if self._tracking:
                    self._residency.used(name, self._clock())
                return served
            if number is None or number not in model.states:
                raise NotFound(f"model '{name}' has no version '{version[:40]}'")
            state, reason = model.states[number]
            raise version_unavailable(name, number, state, self._shown(reason))
        default = self._default(name, model)
        if default is None:
            raise none_ready(name, [(state, self._shown(reason)) for state, reason in model.states.values()])
        if self._tracking:
            self._residency.used(name, self._clock())
        return model.live[default]

    def versions(self, name: str) -> list[int]:
        model = self._models.get(name)
        return sorted(model.live) if model else []

    def index(self) -> list[IndexEntry]:
        """Each model's and version's state, its reason with paths relative to
        the repository root (the server's log keeps the absolute ones)."""
        entries = []
        for name in sorted(self._models):
            for version, (state, reason) in sorted(self._models[name].states.items(), key=lambda kv: kv[0] or 0):
                entries.append(IndexEntry(name, "" if version is None else str(version), state, self._shown(reason)))
        return entries

    def _shown(self, reason: str) -> str:
        """``reason`` for a client: where the repository lies on the server's
        disk is not theirs to know (issue 15), so its root is cut from every
        path, as given and as resolved (ONNX Runtime's messages may use either)."""
        for prefix in self._root_prefixes:
            reason = reason.replace(prefix, "")
        return reason

    def known(self, name: str) -> bool:
        return name in self._models

    def all_ready(self) -> bool:
        """Every model that should serve does (has a live default version). Not
        counted: explicitly unloaded models, and those out of memory on purpose
        (they load on demand). A reload's new versions loading, or one that
        failed while another serves, do not make the server unready."""
        return all(model.live or model.unloaded or model.lazy for model in self._models.values())

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
