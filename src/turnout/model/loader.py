"""Loading one model version: instances, signature check, warm-up.

Blocking (file reads, graph optimisation, a first inference): the registry
calls it from a worker thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from turnout.model.integrity import IntegrityError, verify
from turnout.model.repository import ModelSource
from turnout.model.runtimes.base import LoadContext, LoadedModel
from turnout.model.runtimes.catalog import RUNTIME_OF_FILE
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


# Formats whose loading runs code from the file itself (pickle's reduce
# protocol): loading one is running whatever its author wrote.
CODE_ON_LOAD = {
    ".pkl": "a pickle", ".pickle": "a pickle", ".joblib": "a joblib pickle", ".dill": "a dill pickle",
    ".pt": "a torch.save file (a pickle)", ".pth": "a torch.save file (a pickle)",
}  # fmt: skip
SAFER = (
    "convert it to a format that holds data only: ONNX (skl2onnx for scikit-learn, torch.onnx.export for "
    "PyTorch), skops for scikit-learn, a torch.export program (torch.export.save) for PyTorch"
)


def check_safe_to_load(source: ModelSource, version: int, allow_trusted: bool) -> None:
    """Refuse artifacts that run code when loaded, unless the model's
    ``model.toml`` says ``trusted = true`` and the server allows trusted models
    (``--allow-trusted-models``); the message says how to convert instead."""
    version_dir = source.version_dir(version)
    artifacts = [version_dir / name for name in source.runtime.artifacts]
    unsafe = (
        [p for p in sorted(version_dir.iterdir()) if p.suffix.lower() in CODE_ON_LOAD] if version_dir.is_dir() else []
    )
    pickled = [a for a in artifacts if a.suffix.lower() in CODE_ON_LOAD]
    if source.config.trusted and allow_trusted:
        runs_code = None
    elif pickled:
        runs_code = f"{pickled[0].name} is {CODE_ON_LOAD[pickled[0].suffix.lower()]}"
    else:
        try:
            runs_code = source.runtime.code_on_load(version_dir)
        except (OSError, ValueError, RuntimeError) as exc:  # an unreadable file, a framework not installed
            raise LoadFailed(str(exc)) from None
    if runs_code:
        needs = [] if source.config.trusted else ["`trusted = true` in its model.toml"]
        if not allow_trusted:
            needs.append("a server run with --allow-trusted-models")
        raise LoadFailed(f"{runs_code}, which runs code when loaded: refused without {' and '.join(needs)}; "
                         f"safer: {SAFER}")  # fmt: skip
    missing = [a for a in artifacts if not a.exists()]
    if missing and unsafe:
        found = unsafe[0]
        raise LoadFailed(
            f"{missing[0]}: missing; {found.name} is {CODE_ON_LOAD[found.suffix.lower()]}, which runs code when "
            f"loaded and is never loaded by the {source.config.runtime.name!r} runtime: {SAFER}"
        )


def load_version(source: ModelSource, version: int, allow_trusted: bool = False) -> LoadedVersion:
    check_safe_to_load(source, version, allow_trusted)
    version_dir = source.version_dir(version)
    artifacts = [version_dir / name for name in source.runtime.artifacts]
    missing = [a for a in artifacts if not a.exists()]
    if missing:
        raise LoadFailed(f"{missing[0]}: missing{_other_runtime_hint(version_dir, source.config.runtime.name)}")
    if not version_dir.is_dir():
        raise LoadFailed(f"{version_dir}: missing")
    shown = artifacts[0] if artifacts else version_dir
    config = source.config
    if artifacts and artifacts[0].is_file():
        try:
            verify(artifacts[0], config.checksums.get(str(version)))
        except (IntegrityError, OSError) as exc:
            raise LoadFailed(str(exc)) from None
    instances: list[LoadedModel] = []
    try:
        for index in range(source.runtime.instances(config)):
            instances.append(source.runtime.load(LoadContext(version_dir, config, source.options, index)))
        signature = _signature(source, instances[0])
        max_batch_size = _max_batch_size(config.max_batch_size, signature, shown.name)
        for instance in instances:
            instance.serving(signature, max_batch_size)
        too_big = [s for s in config.batching.preferred_batch_sizes if s > max_batch_size]
        if too_big:
            raise LoadFailed(f"preferred_batch_sizes {too_big} exceed the max_batch_size {max_batch_size}")
        if config.warmup and instances[0].warms_up:
            feed = instances[0].prepare(sample_inputs(signature))
            names = [spec.name for spec in signature.outputs]
            for instance in instances:
                try:
                    if instance.asynchronous:  # a worker thread: a loop of its own for the warm-up
                        asyncio.run(instance.predict_async(feed, names))
                    else:
                        instance.predict(feed, names)
                except Exception as exc:
                    raise LoadFailed(f"{shown}: warm-up inference failed: {exc}") from None
    except Exception as exc:
        for instance in instances:
            instance.close()
        if isinstance(exc, LoadFailed):
            raise
        raise LoadFailed(str(exc)) from None
    return LoadedVersion(tuple(instances), signature, max_batch_size)


def _signature(source: ModelSource, instance: LoadedModel) -> Signature:
    """The artifact's signature reconciled with what model.toml declares; or,
    for a runtime whose artifacts say none, the declared one alone."""
    declared = source.config.declared_signature()
    reported = instance.signature
    where = source.directory / "model.toml"
    if reported is None:
        if declared is None or not declared.inputs or not declared.outputs:
            raise LoadFailed(
                f"{where}: the {source.config.runtime.name!r} runtime does not say the model's signature: "
                "declare its [[inputs]] and [[outputs]]"
            )
        return declared
    try:
        return reconcile(declared, reported)
    except ValueError as exc:
        raise LoadFailed(f"{where}: inputs/outputs: {exc}") from None


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


def _other_runtime_hint(version_dir: Path, runtime: str) -> str:
    """Where the version holds the file another built-in runtime reads (a
    ``model.skops`` under the default ``onnx``), the ``model.toml`` line to write."""
    if not version_dir.is_dir():
        return ""
    for path in sorted(version_dir.iterdir()):
        other = RUNTIME_OF_FILE.get(path.name)
        if other is not None and other != runtime:
            return f'; {path.name} is read by the {other!r} runtime: write runtime = "{other}" in model.toml'
    return ""
