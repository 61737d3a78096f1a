"""What a variant name means, and whether a variant can stand in for another.

A variant is named by a version of the endpoint's own model ("2"), another
model ("fraud_v2", its default version) or another model's version
("fraud_v2:3"). Pure: the caller looks the target up in the registry.

A variant can take an endpoint's traffic when clients need not change: the
same input names and datatypes with shapes that accept the same requests,
and the same outputs. A -1 dimension matches any size.
"""

from __future__ import annotations

from dataclasses import dataclass

from turnout.model.signature import Signature, TensorSpec
from turnout.protocol.shapes import format_shape
from turnout.routing.policy import PolicyError


@dataclass(frozen=True, slots=True)
class Target:
    model: str
    version: str | None  # None: that model's default version


def target(endpoint: str, variant: str) -> Target:
    if variant.isdigit():
        return Target(endpoint, variant)
    model, colon, version = variant.partition(":")
    if not model or (colon and not version.isdigit()):
        raise PolicyError(f"variant {variant!r} is neither a version ('2'), a model ('other') nor 'model:version'")
    return Target(model, version or None)


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
