"""A model's inputs and outputs: names, V2 datatypes and shapes (-1 = any size)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from turnout.protocol.shapes import format_shape


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.name} {self.datatype} {format_shape(self.shape)}"

    def as_metadata(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    _inputs_by_name: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)
    _outputs_by_name: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_inputs_by_name", {t.name: t for t in self.inputs})
        object.__setattr__(self, "_outputs_by_name", {t.name: t for t in self.outputs})

    def input(self, name: str) -> TensorSpec | None:
        return self._inputs_by_name.get(name)

    def output(self, name: str) -> TensorSpec | None:
        return self._outputs_by_name.get(name)

    @property
    def input_names(self) -> Iterable[str]:
        return self._inputs_by_name.keys()

    @property
    def output_names(self) -> Iterable[str]:
        return self._outputs_by_name.keys()


def reconcile(declared: Signature | None, found: Signature) -> Signature:
    """Check a declared signature against the one the artifact reports.

    Declared inputs may narrow a -1 to a fixed size (requests are checked
    against it); outputs must match exactly. Names, datatypes and ranks must
    agree. An empty declared side (only outputs declared, say)
    takes the artifact's. Returns the signature to serve with; raises
    ``ValueError`` naming the first disagreement.
    """
    if declared is None:
        return found
    if not declared.inputs:
        declared = Signature(found.inputs, declared.outputs)
    for kind, mine, theirs in (
        ("input", declared.inputs, found.inputs),
        ("output", declared.outputs, found.outputs),
    ):
        names = {t.name for t in theirs}
        for spec in mine:
            if spec.name not in names:
                raise ValueError(f"declared {kind} '{spec.name}' is not in the model (it has {sorted(names)})")
        missing = names - {t.name for t in mine}
        if kind == "input" and missing:
            raise ValueError(f"model input(s) {sorted(missing)} are not declared")
        by_name = {t.name: t for t in theirs}
        for spec in mine:
            actual = by_name[spec.name]
            if spec.datatype != actual.datatype:
                raise ValueError(
                    f"{kind} '{spec.name}' is declared {spec.datatype} but the model has {actual.datatype}"
                )
            if len(spec.shape) != len(actual.shape) or any(
                a != -1 and d != a for d, a in zip(spec.shape, actual.shape, strict=True)
            ):
                raise ValueError(
                    f"{kind} '{spec.name}' is declared {format_shape(spec.shape)} "
                    f"but the model has {format_shape(actual.shape)}"
                )
            if kind == "output" and spec.shape != actual.shape:
                # inputs are checked against a narrowed shape; nothing would hold outputs to one
                raise ValueError(
                    f"output '{spec.name}' is declared {format_shape(spec.shape)} but the model only "
                    f"promises {format_shape(actual.shape)}; outputs cannot narrow a variable dimension"
                )
    # Outputs not declared are still served: a declaration may list only some.
    declared_outputs = {t.name for t in declared.outputs}
    extra = tuple(t for t in found.outputs if t.name not in declared_outputs)
    return Signature(declared.inputs, declared.outputs + extra)


def incompatibility(
    reference: Signature, candidate: Signature, reference_batch: int = 0, candidate_batch: int = 0
) -> str | None:
    """Why ``candidate`` cannot serve requests meant for ``reference``; None if it can.

    It must accept every input the reference accepts (where the reference
    takes any size, so must it) and give outputs the reference's shapes
    allow; and take batches as large (``*_batch``: max batch sizes).
    """
    for kind, ours, theirs in (
        ("inputs", reference.inputs, candidate.inputs),
        ("outputs", reference.outputs, candidate.outputs),
    ):
        mine, other = {t.name: t for t in ours}, {t.name: t for t in theirs}
        if mine.keys() != other.keys():
            return f"{kind} differ: {sorted(mine)} against {sorted(other)}"
        for name, spec in mine.items():
            # inputs: what the reference accepts, the candidate must; outputs: the other way round
            wide, narrow = (other[name], spec) if kind == "inputs" else (spec, other[name])
            problem = _tensor_mismatch(spec, other[name], wide, narrow)
            if problem:
                return f"{kind[:-1]} '{name}': {problem}"
    if (candidate_batch == 0) != (reference_batch == 0):  # 0: no batch axis, the tensors as they come
        return f"max_batch_size {candidate_batch} against {reference_batch}: one batches requests, the other does not"
    if candidate_batch < reference_batch:
        return f"max_batch_size {candidate_batch} against {reference_batch}: larger requests would fail"
    return None


def _tensor_mismatch(a: TensorSpec, b: TensorSpec, wide: TensorSpec, narrow: TensorSpec) -> str | None:
    if a.datatype != b.datatype:
        return f"{a.datatype} against {b.datatype}"
    fits = len(a.shape) == len(b.shape) and all(
        w == -1 or w == n for w, n in zip(wide.shape, narrow.shape, strict=False)
    )
    if not fits:
        return f"shape {format_shape(a.shape)} against {format_shape(b.shape)}"
    return None
