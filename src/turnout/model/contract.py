"""The signature contract: what clients of a model rely on (the serving
default version's signature), and the check that a new version keeps it
unless ``model.toml`` declares a signature on purpose."""

from __future__ import annotations

from dataclasses import dataclass

from turnout.model.loader import LoadedVersion, LoadFailed
from turnout.model.repository import ModelSource
from turnout.model.signature import Signature, incompatibility


@dataclass(frozen=True, slots=True)
class Contract:
    """The signature clients rely on: the serving default version's."""

    version: int
    signature: Signature
    max_batch_size: int


def keeps_the_contract(source: ModelSource, version: int, loaded: LoadedVersion, serving: Contract | None) -> None:
    """A new version may not change the signature clients rely on by accident:
    without a signature declared in model.toml, it must accept what the
    serving default accepts and answer in the same shapes."""
    if serving is None or source.config.declared_signature() is not None:
        return
    # max_batch_size written in model.toml is a change made on purpose, as a declared signature is
    reference_batch = loaded.max_batch_size if source.config.max_batch_size is not None else serving.max_batch_size
    problem = incompatibility(serving.signature, loaded.signature, reference_batch, loaded.max_batch_size)
    if problem:
        for instance in loaded.instances:
            instance.close()
        raise LoadFailed(
            f"its signature differs from version {serving.version}'s, which clients call ({problem}); to change "
            "the signature on purpose, declare [[inputs]] and [[outputs]] in model.toml (for max_batch_size "
            "alone, set it there)"
        )
