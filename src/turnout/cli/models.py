"""``turnout models``: check a repository without serving it (``validate``),
and a running server's default versions (``cli/lifecycle.py``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from turnout.cli import lifecycle
from turnout.errors import ConfigError, InferenceFailed
from turnout.model.loader import LoadFailed, load_version
from turnout.model.repository import ModelRepository
from turnout.model.runtimes.catalog import BUILT_IN, RuntimeCatalog
from turnout.model.tensors import Outputs
from turnout.pipeline.calls import CalledModel, StepFailed
from turnout.pipeline.runtime import PipelineRuntime
from turnout.routing.remote.runtime import RemoteRuntime


def add_commands(commands: Any) -> None:
    models = commands.add_parser(
        "models", help="inspect a model repository; pin, unpin and roll back a running server's versions"
    ).add_subparsers(title="models commands")
    validate = models.add_parser("validate", help="check every model in a repository and print its signature")
    validate.add_argument("repository", type=Path)
    validate.set_defaults(run=_validate)
    lifecycle.add_commands(models)


def _validate(args: argparse.Namespace) -> int:
    if not args.repository.is_dir():
        print(f"turnout: the model repository {args.repository} does not exist or is not a directory", file=sys.stderr)
        return 2
    calls = RepositoryCalls()
    repository = ModelRepository(
        args.repository,
        RuntimeCatalog(
            {
                **BUILT_IN,
                "pipeline": lambda: PipelineRuntime(calls),
                "remote": lambda: RemoteRuntime(wait_for_replicas=False),  # asked once: are they there now?
            }
        ),
    )
    calls.repository = repository
    names = repository.model_names()
    if not names:
        print(f"{args.repository}: no model directories")
        return 1
    failures = 0
    for name in names:
        try:
            source = repository.read(name)
        except ConfigError as exc:
            print(f"{name}: ERROR {exc}")
            failures += 1
            continue
        for version in source.versions:
            try:
                loaded = load_version(source, version)
            except LoadFailed as exc:
                print(f"{name} version {version}: ERROR {exc}")
                failures += 1
                continue
            for instance in loaded.instances:
                instance.close()
            print(
                f"{name} version {version}: OK ({source.config.runtime.name}, max_batch_size {loaded.max_batch_size})"
            )
            for spec in loaded.signature.inputs:
                print(f"    input  {spec.describe()}")
            for spec in loaded.signature.outputs:
                print(f"    output {spec.describe()}")
    print(f"{len(names)} model(s), {failures} problem(s)")
    return 1 if failures else 0


class RepositoryCalls:
    """What a pipeline's steps call, found in the repository itself (no server
    runs here): a step's model version is loaded to read its signature, so a
    pipeline is checked as a server would check it."""

    def __init__(self) -> None:
        self.repository: ModelRepository | None = None
        self._seen: dict[tuple[str, int | None], CalledModel | str] = {}

    def describe(self, caller: str, model: str, version: int | None) -> CalledModel:
        key = (model, version)
        if key not in self._seen:
            self._seen[key] = self._load(model, version)
        found = self._seen[key]
        if isinstance(found, str):
            raise StepFailed(found)
        return found

    def _load(self, model: str, version: int | None) -> CalledModel | str:
        assert self.repository is not None
        if not self.repository.has(model):
            return f"unknown model '{model}'"
        try:
            source = self.repository.read(model)
        except ConfigError as exc:
            return f"model '{model}' cannot be read: {exc}"
        chosen = max(source.versions) if version is None else version
        if chosen not in source.on_disk:
            return f"model '{model}' has no version '{chosen}'"
        try:
            loaded = load_version(source, chosen)
        except LoadFailed as exc:
            return f"model '{model}' version {chosen} does not load: {exc}"
        for instance in loaded.instances:
            instance.close()
        return CalledModel(loaded.signature, loaded.max_batch_size)

    async def wait_ready(self, caller: str, model: str, version: int | None) -> None:
        pass

    async def infer(self, *args: Any, **kwargs: Any) -> Outputs:
        raise InferenceFailed("a pipeline runs only inside a server")

    def infer_now(self, *args: Any, **kwargs: Any) -> Outputs | None:
        raise InferenceFailed("a pipeline runs only inside a server")

    def step_done(self, pipeline: str, version: int, step: str, seconds: float, status: str) -> None:
        pass
