"""The checks a pipeline passes when it loads, and the order it runs in. Pure:
nodes (with their wiring) in, a ``Graph`` or a ``GraphError`` naming the step
and the tensor out.

Refused: a reference to a tensor nothing produces (an unknown pipeline input,
step or step output), a datatype or shape that does not fit the step it
feeds, and a cycle (named step by step). Steps are ordered in levels: a
level's steps depend only on earlier levels, so they run concurrently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from turnout.model.signature import Signature, TensorSpec
from turnout.pipeline.node import Node


class GraphError(ValueError):
    """The pipeline cannot run as written; the message names the step."""


@dataclass(frozen=True, slots=True)
class Graph:
    levels: tuple[tuple[Node, ...], ...]
    wanted: Mapping[str, frozenset[str]]  # by step: the outputs something reads (a model computes only those)
    outputs: Mapping[str, str]  # pipeline output name -> the reference it is taken from
    signature: Signature


def producer(reference: str) -> tuple[str | None, str]:
    """``"scale.output"`` -> ("scale", "output"); ``"text"`` -> (None, "text")."""
    step, dot, tensor = reference.partition(".")
    return (step, tensor) if dot else (None, reference)


def check(inputs: Sequence[TensorSpec], nodes: Sequence[Node], outputs: Sequence[tuple[str, str]]) -> Graph:
    """``outputs``: (pipeline output name, reference) pairs."""
    by_name = {node.name: node for node in nodes}
    given = {spec.name: spec for spec in inputs}

    def resolve(reference: str, where: str) -> TensorSpec:
        step, tensor = producer(reference)
        if step is None:
            spec = given.get(tensor)
            if spec is None:
                raise GraphError(f"{where}: no step produces '{reference}' and it is not a pipeline input "
                                 f"(the inputs are {sorted(given)})")  # fmt: skip
            return spec
        node = by_name.get(step)
        if node is None:
            raise GraphError(f"{where}: no step produces '{reference}': there is no step '{step}'")
        spec = node.wiring.produces.get(tensor)
        if spec is None:
            raise GraphError(f"{where}: no step produces '{reference}': step '{step}' gives "
                             f"{sorted(node.wiring.produces)}")  # fmt: skip
        return spec

    for node in nodes:
        for local, reference in node.wiring.needs.items():
            where = f"step '{node.name}' input '{local}'"
            spec = resolve(reference, where)
            problem = node.wiring.accepts[local].mismatch(spec)
            if problem:
                raise GraphError(f"{where}: '{reference}' {problem}")
    levels = _levels(nodes)
    wanted: dict[str, set[str]] = {node.name: set() for node in nodes}
    returned: dict[str, str] = {}
    specs = []
    for name, reference in outputs:
        if name in returned:
            raise GraphError(f"output '{name}' is given twice")
        spec = resolve(reference, f"output '{name}'")
        returned[name] = reference
        specs.append(TensorSpec(name, spec.datatype, spec.shape))
    for reference in [r for node in nodes for r in node.wiring.needs.values()] + list(returned.values()):
        step, tensor = producer(reference)
        if step is not None:
            wanted[step].add(tensor)
    unused = [node.name for node in nodes if not wanted[node.name]]
    if unused:
        raise GraphError(f"step(s) {unused}: nothing reads their outputs")
    return Graph(
        tuple(levels),
        {name: frozenset(tensors) for name, tensors in wanted.items()},
        returned,
        Signature(tuple(inputs), tuple(specs)),
    )


def _levels(nodes: Sequence[Node]) -> list[tuple[Node, ...]]:
    """Kahn's algorithm, a level at a time; what is left over lies on a cycle."""
    depends = {
        node.name: {step for ref in node.wiring.needs.values() if (step := producer(ref)[0]) is not None}
        for node in nodes
    }
    done: set[str] = set()
    levels: list[tuple[Node, ...]] = []
    left = list(nodes)
    while left:
        ready = tuple(node for node in left if depends[node.name] <= done)
        if not ready:
            raise GraphError(f"the steps form a cycle: {' -> '.join(_cycle(depends, [n.name for n in left]))}")
        levels.append(ready)
        done |= {node.name for node in ready}
        left = [node for node in left if node.name not in done]
    return levels


def _cycle(depends: Mapping[str, set[str]], left: Sequence[str]) -> list[str]:
    """One cycle among ``left`` (each of which waits on another of them), in order."""
    path = [left[0]]
    while True:
        after = next(step for step in sorted(depends[path[-1]]) if step in left)
        if after in path:
            return [*path[path.index(after) :], after]
        path.append(after)
