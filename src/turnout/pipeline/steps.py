"""The steps that call models: one model, an ensemble of several, a switch
between them; and ``argmax``, the post-processing a classifier ensemble
needs. Each model call is a request through the data plane (``calls.py``),
answered by that model's own batcher."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from turnout.errors import InferenceFailed, InvalidRequest
from turnout.model.signature import Signature, TensorSpec
from turnout.model.tensors import Outputs
from turnout.pipeline.calls import CalledModel, ModelCalls
from turnout.pipeline.definition import ArgmaxStep, Condition, EnsembleStep, Member, ModelStep, SwitchStep
from turnout.pipeline.graph import GraphError
from turnout.pipeline.node import Accepts, Wiring
from turnout.pipeline.together import together

NUMERIC = frozenset({"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
FLOATS = frozenset({"FP16", "FP32", "FP64"})


def _short(model: str, version: int | None) -> str:
    return model if version is None else f"{model} v{version}"


def _called(model: str, version: int | None) -> str:
    return f"model '{model}'" + ("" if version is None else f" version {version}")


def _wiring_for(step: str, called: str, signature: Signature, inputs: Mapping[str, str]) -> Wiring:
    """A model's inputs, each wired; its outputs, all available."""
    missing = [name for name in signature.input_names if name not in inputs]
    unknown = [name for name in inputs if signature.input(name) is None]
    if missing or unknown:
        wrong = f"has no input(s) {unknown}" if unknown else f"also takes {missing}"
        raise GraphError(f"step '{step}': {called} {wrong}; its inputs are {list(signature.input_names)}")
    accepts = {}
    for name in inputs:
        spec = signature.input(name)
        assert spec is not None
        accepts[name] = Accepts.spec(spec)
    return Wiring(dict(inputs), accepts, {spec.name: spec for spec in signature.outputs})


class _Caller:
    """Feeds one model from a step's feed, which the graph checked against ``signature``."""

    def __init__(self, calls: ModelCalls, model: str, version: int | None, signature: Signature) -> None:
        self.calls, self.model, self.version = calls, model, version
        self._signature = signature

    async def __call__(
        self, feed: Mapping[str, np.ndarray[Any, Any]], wanted: Sequence[str], parameters: Mapping[str, Any]
    ) -> Outputs:
        return await self.calls.infer(self.model, self.version, feed, wanted, parameters, self._signature)

    def now(
        self, feed: Mapping[str, np.ndarray[Any, Any]], wanted: Sequence[str], parameters: Mapping[str, Any]
    ) -> Outputs | None:
        """The answer at once when the model gives it without waiting; else None (then call)."""
        return self.calls.infer_now(self.model, self.version, feed, wanted, parameters, self._signature)


class ModelNode:
    kind = "model"

    def __init__(self, step: ModelStep, called: CalledModel, calls: ModelCalls) -> None:
        self.name = step.name
        self.wiring = _wiring_for(step.name, _called(step.model, step.version), called.signature, step.inputs)
        self.calls: tuple[str, ...] = (_short(step.model, step.version),)
        self._call = _Caller(calls, step.model, step.version, called.signature)

    async def run(
        self, feed: Mapping[str, np.ndarray[Any, Any]], wanted: frozenset[str], parameters: Mapping[str, Any]
    ) -> Outputs:
        return await self._call(feed, tuple(wanted), parameters)


def _same_outputs(step: str, members: Sequence[Member], called: Sequence[CalledModel], names: Sequence[str]) -> None:
    """Every member gives each of ``names`` alike (datatype and shape) and takes the same inputs."""
    first = called[0].signature
    for member, model in zip(members[1:], called[1:], strict=True):
        if list(model.signature.input_names) != list(first.input_names):
            raise GraphError(f"step '{step}': {_called(member.model, member.version)} takes inputs "
                             f"{list(model.signature.input_names)}, the first {list(first.input_names)}")  # fmt: skip
        for name in names:
            mine, theirs = first.output(name), model.signature.output(name)
            if theirs is None:
                raise GraphError(f"step '{step}': {_called(member.model, member.version)} has no output '{name}'")
            if mine is not None and (mine.datatype, mine.shape) != (theirs.datatype, theirs.shape):
                where = _called(member.model, member.version)
                raise GraphError(f"step '{step}': output '{name}' is {theirs.describe()} in {where} "
                                 f"but {mine.describe()} in the first")  # fmt: skip


class EnsembleNode:
    kind = "ensemble"

    def __init__(
        self,
        step: EnsembleStep,
        called: Sequence[CalledModel],
        calls: ModelCalls,
        functions: Callable[[str], Callable[..., Any]],
    ) -> None:
        self.name = step.name
        first = step.members[0]
        wiring = _wiring_for(step.name, _called(first.model, first.version), called[0].signature, step.inputs)
        _same_outputs(step.name, step.members, called, list(step.combine))
        produces: dict[str, TensorSpec] = {}
        for name, how in step.combine.items():
            spec = wiring.produces.get(name)
            if spec is None:
                raise GraphError(f"step '{step.name}': cannot combine '{name}': the members give "
                                 f"{sorted(wiring.produces)}")  # fmt: skip
            if how in ("average", "weighted") and spec.datatype not in FLOATS:
                raise GraphError(f"step '{step.name}': '{name}' is {spec.datatype}: average it only when it "
                                 "is floating point; combine labels with \"vote\"")  # fmt: skip
            if how == "vote" and len(spec.shape) != 1:
                raise GraphError(f"step '{step.name}': a vote takes one label per row; '{name}' is {spec.describe()}")
            produces[name] = spec
        self.wiring = Wiring(wiring.needs, wiring.accepts, produces)
        self._combine = dict(step.combine)
        self.calls = tuple(_short(m.model, m.version) for m in step.members)
        self._functions = {how: functions(how) for how in step.combine.values() if ":" in how}
        self._weights = np.array([member.weight for member in step.members], dtype=np.float64)
        pairs = zip(step.members, called, strict=True)
        self._calls = [_Caller(calls, m.model, m.version, c.signature) for m, c in pairs]

    async def run(
        self, feed: Mapping[str, np.ndarray[Any, Any]], wanted: frozenset[str], parameters: Mapping[str, Any]
    ) -> Outputs:
        names = tuple(self._combine)
        # members answered at once first (a lone request to a cheap model), then the rest
        # together: a task for each of those only, and none when all answer at once
        answered = [call.now(feed, names, parameters) for call in self._calls]
        waiting = [i for i, answer in enumerate(answered) if answer is None]
        if waiting:
            waited = await together([self._calls[i](feed, names, parameters) for i in waiting])
            for i, answer in zip(waiting, waited, strict=True):
                answered[i] = answer
        answers = [answer for answer in answered if answer is not None]  # all of them, by now
        combined: Outputs = {}
        for name, how in self._combine.items():
            values = [answer[name] for answer in answers]
            function = self._functions.get(how)
            if function is None:
                combined[name] = combine(how, values, self._weights)
                continue
            result = np.asarray(function(values, self._weights))
            if result.dtype != values[0].dtype or result.shape != values[0].shape:
                raise InferenceFailed(f"{how} made '{name}' {result.dtype} {list(result.shape)} of members' "
                                      f"{values[0].dtype} {list(values[0].shape)}")  # fmt: skip
            combined[name] = result
        return combined


def combine(how: str, values: Sequence[np.ndarray[Any, Any]], weights: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The members' values of one output made one. ``vote``: per row, the
    value with the largest total weight among the members that gave it (a
    tie goes to the member listed first)."""
    if how in ("average", "weighted"):  # sums, not np.stack and np.average: ~10 µs less a row for two members
        dtype = values[0].dtype
        if how == "average":  # in the members' datatype, as np.mean of floats
            total = values[0].copy()
            for value in values[1:]:
                total += value
            total /= len(values)
        else:
            total = values[0] * weights[0]
            for value, weight in zip(values[1:], weights[1:], strict=True):
                total += value * weight
            total /= weights.sum()
        return total.astype(dtype, copy=False)
    stacked = np.stack(values)
    agree = stacked[:, None, :] == stacked[None, :, :]  # [member, other, row]
    support = (agree * weights[None, :, None]).sum(axis=1)  # [member, row]
    chosen = support.argmax(axis=0)
    voted: np.ndarray[Any, Any] = stacked[chosen, np.arange(stacked.shape[1])]
    return voted


class SwitchNode:
    kind = "switch"

    def __init__(self, step: SwitchStep, called: Sequence[CalledModel], calls: ModelCalls) -> None:
        self.name = step.name
        first = step.branches[0]
        wiring = _wiring_for(step.name, _called(first.model, first.version), called[0].signature, step.inputs)
        _same_outputs(step.name, step.branches, called, list(wiring.produces))
        for branch, model in zip(step.branches[1:], called[1:], strict=True):
            extra = set(model.signature.output_names) - set(wiring.produces)
            if extra:
                raise GraphError(f"step '{step.name}': {_called(branch.model, branch.version)} gives output(s) "
                                 f"{sorted(extra)} the first branch does not")  # fmt: skip
        needs, accepts = dict(wiring.needs), dict(wiring.accepts)
        self._conditions: list[Condition | None] = []
        for index, branch in enumerate(step.branches):
            condition = branch.when
            self._conditions.append(condition)
            if condition is not None and condition.tensor is not None:
                needs[f"when[{index}]"] = condition.tensor
                accepts[f"when[{index}]"] = Accepts(NUMERIC, None)
        self.wiring = Wiring(needs, accepts, wiring.produces)
        self.calls = tuple(_short(b.model, b.version) for b in step.branches)
        self._inputs = tuple(wiring.needs)
        pairs = zip(step.branches, called, strict=True)
        self._calls = [_Caller(calls, b.model, b.version, c.signature) for b, c in pairs]

    async def run(
        self, feed: Mapping[str, np.ndarray[Any, Any]], wanted: frozenset[str], parameters: Mapping[str, Any]
    ) -> Outputs:
        names = tuple(wanted)
        inputs = {name: feed[name] for name in self._inputs}
        rows = len(next(iter(inputs.values())))
        taken = np.zeros(rows, dtype=bool)
        parts: list[tuple[int, np.ndarray[Any, Any]]] = []
        for index, condition in enumerate(self._conditions):
            if condition is None:
                chosen = ~taken
            elif condition.parameter is not None:
                hit = parameters.get(condition.parameter) == condition.equals
                chosen = ~taken if hit else np.zeros(rows, dtype=bool)
            else:
                chosen = ~taken & _holds(condition, feed[f"when[{index}]"])
            if chosen.any():
                parts.append((index, np.flatnonzero(chosen)))
                taken |= chosen
        if not taken.all():
            first = int(np.flatnonzero(~taken)[0])
            raise InvalidRequest(f"step '{self.name}': row {first} matches no branch, and there is no default")
        if len(parts) == 1 and len(parts[0][1]) == rows:  # the whole request one way: no copies
            return await self._calls[parts[0][0]](inputs, names, parameters)
        answers = await together(
            [self._calls[i]({n: a[rows_] for n, a in inputs.items()}, names, parameters) for i, rows_ in parts]
        )
        joined: Outputs = {}
        for name in names:
            sample = answers[0][name]
            joined[name] = out = np.empty((rows, *sample.shape[1:]), dtype=sample.dtype)
            for (_, rows_), answer in zip(parts, answers, strict=True):
                out[rows_] = answer[name]
        return joined


def _holds(condition: Condition, tensor: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Per row: whether ``condition`` holds for its ``column`` (the value itself for a 1-D tensor)."""
    values = tensor if tensor.ndim == 1 else tensor.reshape(len(tensor), -1)[:, condition.column]
    holds = np.ones(len(values), dtype=bool)
    if condition.equals is not None:
        holds &= values == condition.equals
    if condition.above is not None:
        holds &= values > condition.above
    if condition.below is not None:
        holds &= values < condition.below
    return holds


class ArgmaxNode:
    kind = "argmax"
    calls: tuple[str, ...] = ()

    def __init__(self, step: ArgmaxStep) -> None:
        self.name = step.name
        self._output = step.output
        self.wiring = Wiring(
            {"input": step.input},
            {"input": Accepts(NUMERIC, (-1, -1))},
            {step.output: TensorSpec(step.output, "INT64", (-1,))},
        )

    async def run(
        self, feed: Mapping[str, np.ndarray[Any, Any]], wanted: frozenset[str], parameters: Mapping[str, Any]
    ) -> Outputs:
        return {self._output: feed["input"].argmax(axis=-1).astype(np.int64, copy=False)}
