"""What the registry serves: a live version (its batcher, signature and
configuration), the states a version passes through, and the index entries
the repository API reports."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from turnout.batcher.passthrough import Passthrough
from turnout.batcher.planner import BatchLimits
from turnout.batcher.queue import Batcher, BatchObserver
from turnout.errors import Unavailable
from turnout.model.config import BatchingConfig, ModelConfig
from turnout.model.loader import LoadedVersion
from turnout.model.repository import ModelSource
from turnout.model.runtimes.base import LoadedModel, Tensors
from turnout.model.signature import Signature
from turnout.observability.drift import PROFILE_FILE, DriftWindow, Profile
from turnout.routing.document import RoutingDocument
from turnout.serving.response_cache import ResponseCache
from turnout.serving.shared_cache import VersionCache

log = logging.getLogger("turnout.registry")

UNLOADED = "unloaded"
LAZY = "not in memory: loads on the next request"


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
    batcher: Batcher | Passthrough  # a pipeline's requests pass straight through to its steps' batchers
    prepare: Callable[[Tensors], Tensors]  # the runtime's per-request check, before queueing
    drift: DriftWindow | None = None  # live counts against the version's profile.json, if it has one
    routing: RoutingDocument | None = None  # model.toml's [routing], checked when the model was read
    steps: tuple[dict[str, str], ...] = ()  # a pipeline's steps, in order (LoadedModel.steps)
    # a remote set: passes a REST body on unread (its ``forward``, ``start_forward``); None for other models
    forwarder: LoadedModel | None = None
    # model.toml's [cache] enabled: this version's answers, its own (a new version starts empty)
    cache: ResponseCache | None = None
    shared_cache: VersionCache | None = None  # its second level, shared by replicas through Redis

    @property
    def timeout(self) -> float:
        return self.config.batching.timeout_ms / 1000.0


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str  # "" when the problem is the model's, not a version's
    state: State
    reason: str = ""


class VersionsFailed(Exception):
    """Some versions of a model failed to load; any others are live."""

    def __init__(self, model: str, reasons: dict[int, str]) -> None:
        self.model = model
        self.reasons = reasons
        listed = "; ".join(f"version {v}: {r}" for v, r in sorted(reasons.items()))
        super().__init__(f"model '{model}' did not fully load: {listed}")


def retry_after(state: State) -> float | None:
    """Loading and unloading end on their own: worth a retry in a second."""
    return 1.0 if state in (State.LOADING, State.UNLOADING) else None


def because(reason: str) -> str:
    return f": {reason}" if reason else ""


def version_unavailable(model: str, version: int, state: State, reason: str) -> Unavailable:
    """A request named a version that is not live: its state and why."""
    text = f"model '{model}' version {version} is {state.value.lower()}{because(reason)}"
    return Unavailable(text, retry_after=retry_after(state))


def none_ready(model: str, states: Iterable[tuple[State, str]]) -> Unavailable:
    """No version of ``model`` serves: every reason given once, or what is under way (worth a retry)."""
    states = list(states)
    reasons = "; ".join(dict.fromkeys(reason for _, reason in states if reason))
    busy = next((state for state, _ in states if retry_after(state)), None)
    if busy and not reasons:
        reasons = busy.value.lower()
    wait = None if busy is None else retry_after(busy)
    return Unavailable(f"model '{model}' has no ready version{because(reasons)}", retry_after=wait)


def describe(signature: Signature) -> str:
    ins = ", ".join(s.describe() for s in signature.inputs)
    outs = ", ".join(s.describe() for s in signature.outputs)
    return f"{ins} -> {outs}"


def drift_window(source: ModelSource, version: int) -> DriftWindow | None:
    path = source.version_dir(version) / PROFILE_FILE
    if not path.is_file():
        return None
    try:
        profile = Profile.load(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a bad profile: no drift, the model still serves
        log.error("model %s version %d: %s not used: %s", source.name, version, path.name, exc)
        return None
    return DriftWindow(profile, source.config.drift.window_rows)


def queue_delay(batching: BatchingConfig, instance: LoadedModel) -> float:
    """Seconds a batch may wait: ``model.toml``'s, 0 included, else the runtime's default."""
    if "max_queue_delay_ms" in batching.model_fields_set:
        return batching.max_queue_delay_ms / 1000.0
    return instance.batch_delay


def serve(
    source: ModelSource,
    version: int,
    loaded: LoadedVersion,
    routing: RoutingDocument | None,
    observer: BatchObserver,
    shared_cache: VersionCache | None = None,
) -> ServedVersion:
    """A loaded version made live: its batcher started, its drift window open."""
    config = source.config
    batcher: Batcher | Passthrough
    first = loaded.instances[0]
    if first.forwards or (first.concurrent and loaded.max_batch_size == 0):  # nothing to batch: each as it comes
        batcher = Passthrough(loaded.instances, config.batching.max_queue_size, observer)
    else:
        delay = queue_delay(config.batching, loaded.instances[0])
        limits = BatchLimits(loaded.max_batch_size, delay, tuple(config.batching.preferred_batch_sizes))
        batcher = Batcher(
            loaded.instances, limits, config.batching.max_queue_size, observer, niceness=config.instances.niceness
        )
    batcher.start()
    cache = None
    if config.cache.enabled:
        if first.forwards:  # its bodies go on unread: there is nothing to key an answer by
            log.warning("model %s version %d: [cache] has no effect on a remote set", source.name, version)
        else:
            cache = ResponseCache(config.cache.max_bytes, config.cache.ttl_seconds)
    return ServedVersion(
        source.name,
        version,
        source.runtime.platform,
        config,
        loaded.signature,
        loaded.max_batch_size,
        batcher,
        loaded.instances[0].prepare,
        drift_window(source, version),
        routing,
        tuple(loaded.instances[0].steps()),
        first if first.forwards else None,
        cache,
        shared_cache if cache is not None else None,
    )
