"""The runtime protocol: what a runtime (ONNX Runtime, or one of your own)
implements to serve models. The README's "Runtimes" section says how one is
installed and named.

A :class:`ModelRuntime` names the files a version directory holds, checks its
own options (``[runtime.options]`` in ``model.toml``) and turns a version
directory into one :class:`LoadedModel` per instance. The shared schema never
learns a runtime's knobs.

Concurrency: ``predict`` runs in the instance's own thread, never on the event
loop (unless the model says ``inline``) and never concurrently on the same
instance; it must release the GIL for real work to overlap (ONNX Runtime
does). ``predict_async`` (when ``asynchronous``) runs on the event loop and
must not block it.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from turnout.errors import TurnoutError
from turnout.model.config import ModelConfig
from turnout.model.runtimes.merge import concatenate, split
from turnout.model.signature import Signature
from turnout.model.tensors import Outputs as Outputs
from turnout.model.tensors import Tensors as Tensors

NO_PARAMETERS: Mapping[str, Any] = {}


class NoOptions(BaseModel):
    """A runtime that takes no options: ``[runtime.options]`` must be empty."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


@dataclass(frozen=True, slots=True)
class LoadContext:
    """What one instance is loaded from."""

    version_dir: Path
    config: ModelConfig
    options: Any  # the runtime's own options, checked by its schema (an instance of ``ModelRuntime.options``)
    instance: int = 0  # which instance of ``[instances] count``, from 0: to choose a device, say


@dataclass(frozen=True, slots=True)
class Relayed:
    """Another server's HTTP answer, passed on as it came (``LoadedModel.forward``)."""

    status: int
    headers: Mapping[bytes, bytes]  # names lower-cased
    body: bytes


# what ``LoadedModel.start_forward`` calls once: the answer as it came, or why there is none
Forwarded = Callable[[Relayed | None, TurnoutError | None], None]


class LoadedModel(abc.ABC):  # noqa: B024 - predict or predict_async is the model; each has a default
    #: request parameters this model reads (``predict``'s ``parameters``): requests
    #: join one batch only when these are equal; the others never reach it
    parameters: ClassVar[frozenset[str]] = frozenset()
    #: ``predict`` is cheap and never blocks: run it on the event loop, not a thread
    inline: ClassVar[bool] = False
    #: use ``predict_async`` (on the event loop) instead of ``predict``
    asynchronous: ClassVar[bool] = False
    #: ``predict_lone`` awaits its answer without holding the event loop (a
    #: worker process's round trip): a lone request may run straight through
    #: it whatever the model's cost, while batches still use ``predict``
    lone_awaits: ClassVar[bool] = False
    #: seconds a batch may wait for more requests where ``model.toml`` sets no
    #: ``max_queue_delay_ms``: for models whose every batch has a fixed cost
    #: worth sharing (the batcher waits only while waiting gathers requests)
    batch_delay: ClassVar[float] = 0.0
    #: ``predict_async`` may run for many requests at once: with no batch axis
    #: (``max_batch_size = 0``) each runs as it comes, no queue (a pipeline,
    #: whose steps batch at their own models)
    concurrent: ClassVar[bool] = False
    #: each request passes on as it comes, whatever ``max_batch_size`` says
    #: (a remote endpoint set: its replicas batch)
    forwards: ClassVar[bool] = False
    #: warm up with zeros at load (``warmup`` in model.toml); False for a model
    #: zeros say nothing to (a pipeline: its steps warm up as models of their own)
    warms_up: ClassVar[bool] = True

    @property
    def signature(self) -> Signature | None:
        """The signature the artifact itself reports; None: ``model.toml``'s
        ``[[inputs]]`` and ``[[outputs]]`` say it."""
        return None

    def serving(self, signature: Signature, max_batch_size: int) -> None:  # noqa: B027 - optional hook
        """Told once loaded: the signature it serves under (``model.toml``'s
        reconciled with its own) and the batch size; to check its answers by."""

    def prepare(self, inputs: Tensors) -> Tensors:
        """Check and convert one request's inputs before it is queued.

        Runs on the event loop for each request, so a request the runtime
        cannot take (text that is not UTF-8, say) is refused alone instead of
        failing the batch it would join. Raise ``InvalidRequest``.
        """
        return inputs

    def collate(self, requests: Sequence[Tensors]) -> Tensors:
        """Join queued requests into one batch (default: along the first axis)."""
        return concatenate(requests)

    def split(self, outputs: Tensors, rows: Sequence[int]) -> list[Outputs]:
        """Cut a batch's outputs back into each request's (default: along the first axis)."""
        return split(outputs, rows)

    def predict(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        """Run once on whole tensors; return the named outputs."""
        raise NotImplementedError(f"{type(self).__name__} implements neither predict nor predict_async")

    async def predict_async(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        """``predict`` on the event loop, for models that wait on I/O (``asynchronous = True``)."""
        return self.predict(inputs, outputs, parameters)

    async def predict_until(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any], deadline: float | None
    ) -> Outputs:
        """``predict_async`` answered by ``deadline`` (``time.monotonic()``; None:
        no limit), else ``TimeoutError``. A model that passes the deadline on
        (a remote set, to its replicas) overrides this."""
        if deadline is None:
            return await self.predict_async(inputs, outputs, parameters)
        return await asyncio.wait_for(self.predict_async(inputs, outputs, parameters), deadline - time.monotonic())

    async def forward(self, body: bytes, header_length: int | None, deadline: float) -> Relayed:
        """A V2 REST request body passed on unread, and the answer as it came
        (models that say ``forwards``: a remote set); by ``deadline``."""
        raise NotImplementedError(f"{type(self).__name__} does not forward requests")

    def start_forward(self, body: bytes, header_length: int | None, deadline: float, done: Forwarded) -> bool:
        """``forward`` driven by callbacks: ``done`` gets the answer. False: not
        now (then ``forward``); raises ``TurnoutError`` when it is refused at once."""
        return False

    async def predict_lone(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        """A lone request, run at once with nothing else queued (for models that
        are ``asynchronous`` or say ``lone_awaits``): the event loop is idle,
        so a model may wait for a quick answer blocking it (``process.py``
        does)."""
        return await self.predict_async(inputs, outputs, parameters)

    def close(self) -> None:  # noqa: B027 - optional hook; most runtimes free on GC
        """Release resources held by this instance."""

    def steps(self) -> list[dict[str, str]]:
        """The parts a composite model runs, in order (a pipeline's steps: name,
        kind, the models it calls), for the dashboard; [] for a plain model."""
        return []

    async def aclose(self) -> None:
        """``close`` for an instance whose resources live on the event loop
        (connections a ``concurrent`` model opened): awaited there."""
        self.close()


class ModelRuntime(abc.ABC):
    #: reported as ``platform`` in model metadata, as Triton does
    platform: ClassVar[str] = "custom"
    #: what each version directory holds: files or directories, relative to it (the
    #: first is the one ``[checksums]`` covers); checked before loading, and their
    #: size is the memory estimate of residency limits
    artifacts: ClassVar[tuple[str, ...]] = ()
    #: whether loading runs code from the version's files (pickle, joblib, torch.load
    #: of whole objects): such models load only when trusted (``loader.check_safe_to_load``);
    #: a runtime whose formats differ file by file overrides ``code_on_load`` instead
    executes_code_on_load: ClassVar[bool] = False
    #: the schema of ``[runtime.options]`` (a pydantic model; forbid unknown fields)
    options: ClassVar[type[BaseModel]] = NoOptions
    #: instances when ``model.toml`` sets no ``[instances] count`` (a pipeline's
    #: instances are batches in flight at once, each awaiting its steps)
    default_instances: ClassVar[int] = 1

    def instances(self, config: ModelConfig) -> int:
        """How many instances a version of this model loads."""
        return config.instances.count if "count" in config.instances.model_fields_set else self.default_instances

    def code_on_load(self, version_dir: Path) -> str | None:
        """What in ``version_dir`` would run code when loaded, said as the start
        of the refusal (``"model.py is Python code"``); None when loading it
        reads data only. Default: ``executes_code_on_load``."""
        if not self.executes_code_on_load:
            return None
        return f"{self.artifacts[0] if self.artifacts else version_dir.name} is loaded by running code from it"

    async def ready_to_load(self, version_dir: Path) -> None:  # noqa: B027 - optional hook
        """Awaited on the event loop before a version of this runtime loads:
        wait here for what loading needs from the server (the models a
        pipeline calls), never inside ``load``, which holds a worker thread
        that those models' own loads may need."""

    def parse_options(self, table: Mapping[str, Any]) -> BaseModel:
        """``[runtime.options]`` checked by this runtime's schema (pydantic's ``ValidationError`` if wrong)."""
        return self.options.model_validate(dict(table))

    @abc.abstractmethod
    def load(self, context: LoadContext) -> LoadedModel:
        """Load one instance; raise with a precise message when the artifact is broken."""
