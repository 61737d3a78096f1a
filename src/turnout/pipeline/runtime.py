"""The ``pipeline`` runtime: a version directory holding ``pipeline.toml``
(and whatever its steps read, a tokenizer file, say) served as one model.

Loading builds each step, asks the server for the signature of each model a
step calls (waiting for that model's first load), and checks the graph
(``graph.py``); any failure leaves the version UNAVAILABLE with the reason,
and the server serves on.

A pipeline's requests are batched at its entrance like any model's, and each
batch runs through the steps as one request per step: under load, what a
step costs (a lookup's round trip, a model request through the data plane)
is paid once for many rows, not once a row (measured: a pipeline that passed
each request through alone reached 21% of its slowest step's throughput at
c=64). Its instances are batches in flight at once (4 unless ``[instances]
count`` says), so one batch's lookup overlaps another's models. At a model
step the batch joins that model's queue with the direct requests. With
``max_batch_size = 0`` each request runs alone, as it comes
(``concurrent``). It is not warmed up with zeros: its steps are models with
warm-ups of their own, and zeros are no entity a feature store knows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from turnout.model.runtimes.base import NO_PARAMETERS, LoadContext, LoadedModel, ModelRuntime, Outputs, Tensors
from turnout.model.signature import Signature
from turnout.pipeline.calls import CalledModel, ModelCalls, StepFailed
from turnout.pipeline.definition import (
    PIPELINE_FILE,
    ArgmaxStep,
    DefinitionError,
    EnsembleStep,
    FeaturesStep,
    Member,
    ModelStep,
    PipelineDefinition,
    PythonStep,
    SwitchStep,
    TokenizeStep,
    python_files,
    read_definition,
)
from turnout.pipeline.executor import Executor
from turnout.pipeline.features import FeaturesNode
from turnout.pipeline.graph import Graph, GraphError, check
from turnout.pipeline.node import Node
from turnout.pipeline.python_steps import PythonNode, load_function
from turnout.pipeline.steps import ArgmaxNode, EnsembleNode, ModelNode, SwitchNode
from turnout.pipeline.tokenize import TokenizeNode


class LoadedPipeline(LoadedModel):
    asynchronous: ClassVar[bool] = True
    concurrent: ClassVar[bool] = True
    warms_up: ClassVar[bool] = False

    def __init__(
        self, graph: Graph, executor: Executor, nodes: Sequence[Node], reads: frozenset[str], largest: int | None
    ) -> None:
        self.parameters = reads  # type: ignore[misc]  # per pipeline: the switches' parameters
        self._largest = largest  # the smallest max_batch_size among the models its steps call
        self.graph = graph
        self._executor = executor
        self._nodes = nodes

    @property
    def signature(self) -> Signature:
        return self.graph.signature

    def serving(self, signature: Signature, max_batch_size: int) -> None:
        if self._largest is not None and max_batch_size > self._largest:
            raise GraphError(f"max_batch_size {max_batch_size} is more than a model its steps call takes "
                             f"({self._largest}): set max_batch_size = {self._largest} in model.toml")  # fmt: skip

    async def predict_async(
        self, inputs: Tensors, outputs: Sequence[str], parameters: Mapping[str, Any] = NO_PARAMETERS
    ) -> Outputs:
        return await self._executor.run(inputs, outputs, parameters)

    def steps(self) -> list[dict[str, str]]:
        """Each step's name and kind, in the order they run (for the dashboard)."""
        return [
            {"name": node.name, "kind": node.kind, "calls": ", ".join(node.calls)}
            for level in self.graph.levels
            for node in level
        ]

    async def aclose(self) -> None:
        for node in self._nodes:
            if isinstance(node, FeaturesNode):
                await node.aclose()


def _called_models(definition: PipelineDefinition) -> list[ModelStep | Member]:
    called: list[ModelStep | Member] = []
    for step in definition.steps:
        if isinstance(step, ModelStep):
            called.append(step)
        elif isinstance(step, EnsembleStep):
            called += step.members
        elif isinstance(step, SwitchStep):
            called += step.branches
    return called


class PipelineRuntime(ModelRuntime):
    platform: ClassVar[str] = "pipeline"
    artifacts: ClassVar[tuple[str, ...]] = (PIPELINE_FILE,)
    default_instances: ClassVar[int] = 4

    def __init__(self, calls: ModelCalls) -> None:
        self._calls = calls

    async def ready_to_load(self, version_dir: Path) -> None:
        """Wait for the models the steps call to finish loading (each up to the load timeout)."""
        try:
            definition = read_definition(version_dir / PIPELINE_FILE)
        except DefinitionError:
            return  # the load says what is wrong with it
        pipeline = version_dir.parent.name
        called = {(c.model, c.version) for c in _called_models(definition) if c.model != pipeline}
        await asyncio.gather(*(self._calls.wait_ready(pipeline, model, version) for model, version in called))

    def code_on_load(self, version_dir: Path) -> str | None:
        """A pipeline with Python steps or combiners runs their files when loaded."""
        try:
            files = python_files(read_definition(version_dir / PIPELINE_FILE))
        except DefinitionError:
            return None  # the load says what is wrong with it
        return f"{PIPELINE_FILE} runs Python from {', '.join(files)}" if files else None

    def load(self, context: LoadContext) -> LoadedModel:
        version_dir = context.version_dir
        name, version = version_dir.parent.name, int(version_dir.name)
        definition = read_definition(version_dir / PIPELINE_FILE)
        batches: list[int] = []  # each called model's max_batch_size (the runtime is shared: no state on it)
        try:
            nodes = [self._node(step, name, version_dir, batches) for step in definition.steps]
            graph = check(
                [tensor.spec() for tensor in definition.inputs],
                nodes,
                [(output.name, output.source) for output in definition.outputs],
            )
        except GraphError as exc:
            raise GraphError(f"{version_dir / PIPELINE_FILE}: {exc}") from None
        reads = frozenset(
            branch.when.parameter
            for step in definition.steps
            if isinstance(step, SwitchStep)
            for branch in step.branches
            if branch.when is not None and branch.when.parameter is not None
        )
        largest = min((size for size in batches if size > 0), default=None)
        return LoadedPipeline(graph, Executor(graph, self._calls, name, version), nodes, reads, largest)

    def _node(self, step: Any, pipeline: str, version_dir: Path, batches: list[int]) -> Node:
        if isinstance(step, ModelStep):
            return ModelNode(step, self._describe(step.name, pipeline, step, batches), self._calls)
        if isinstance(step, EnsembleStep):
            members = [self._describe(step.name, pipeline, m, batches) for m in step.members]
            return EnsembleNode(step, members, self._calls, lambda how: load_function(version_dir, how, step.name))
        if isinstance(step, SwitchStep):
            return SwitchNode(
                step, [self._describe(step.name, pipeline, b, batches) for b in step.branches], self._calls
            )
        if isinstance(step, ArgmaxStep):
            return ArgmaxNode(step)
        if isinstance(step, FeaturesStep):
            return FeaturesNode(step)
        if isinstance(step, PythonStep):
            return PythonNode(step, version_dir)
        assert isinstance(step, TokenizeStep)
        return TokenizeNode(step, version_dir)

    def _describe(self, step: str, pipeline: str, called: ModelStep | Member, batches: list[int]) -> CalledModel:
        if called.model == pipeline:
            raise GraphError(f"step '{step}': a pipeline cannot call itself ('{pipeline}')")
        try:
            found = self._calls.describe(pipeline, called.model, called.version)
        except StepFailed as exc:
            raise GraphError(f"step '{step}': {exc}") from None
        batches.append(found.max_batch_size)
        return found
