"""Loading one model version: instances, signature check, warm-up.

Blocking (file reads, graph optimisation, a first inference): the registry
calls it from a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from turnout.model.repository import ModelSource
from turnout.model.runtime import LoadedModel
from turnout.model.signature import Signature, reconcile
from turnout.model.warmup import sample_inputs

DEFAULT_MAX_BATCH_SIZE = 64


@dataclass(frozen=True, slots=True)
class LoadedVersion:
    instances: tuple[LoadedModel, ...]
    signature: Signature
    max_batch_size: int


class LoadFailed(Exception):
    """A version could not be loaded; the message says why."""


def load_version(source: ModelSource, version: int) -> LoadedVersion:
    version_dir = source.version_dir(version)
    artifact = version_dir / source.runtime.artifact
    if not artifact.is_file():
        raise LoadFailed(f"{artifact}: missing")
    config = source.config
    instances: list[LoadedModel] = []
    try:
        for _ in range(config.instances.count):
            instances.append(source.runtime.load(version_dir, config))
        try:
            signature = reconcile(config.declared_signature(), instances[0].signature)
        except ValueError as exc:
            raise LoadFailed(f"{source.directory / 'model.toml'}: inputs/outputs: {exc}") from None
        max_batch_size = _max_batch_size(config.max_batch_size, signature, artifact.name)
        too_big = [s for s in config.batching.preferred_batch_sizes if s > max_batch_size]
        if too_big:
            raise LoadFailed(f"preferred_batch_sizes {too_big} exceed the max_batch_size {max_batch_size}")
        if config.warmup:
            feed = instances[0].prepare(sample_inputs(signature))
            names = [spec.name for spec in signature.outputs]
            for instance in instances:
                try:
                    instance.predict(feed, names)
                except Exception as exc:
                    raise LoadFailed(f"{artifact}: warm-up inference failed: {exc}") from None
    except Exception as exc:
        for instance in instances:
            instance.close()
        if isinstance(exc, LoadFailed):
            raise
        raise LoadFailed(str(exc)) from None
    return LoadedVersion(tuple(instances), signature, max_batch_size)


def _max_batch_size(configured: int | None, signature: Signature, artifact: str) -> int:
    """The configured value, checked; or, when unset, batching where the graph allows it."""
    fixed = [spec.name for spec in (*signature.inputs, *signature.outputs) if not spec.shape or spec.shape[0] != -1]
    if configured is None:
        return 0 if fixed else DEFAULT_MAX_BATCH_SIZE
    if configured > 0 and fixed:
        raise LoadFailed(
            f"max_batch_size is {configured} but in {artifact} the tensor(s) {fixed} have no variable "
            "first dimension to batch along; set max_batch_size = 0"
        )
    return configured
