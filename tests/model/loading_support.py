"""Loading one version of a model from a repository on disk, as the server
would, and closing its instances after (a Python model's are processes)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from turnout.model.loader import LoadedVersion, load_version
from turnout.model.repository import ModelRepository
from turnout.model.runtimes.catalog import RuntimeCatalog


@contextmanager
def loaded(root: Path, name: str, allow_trusted: bool = False) -> Iterator[LoadedVersion]:
    repo = ModelRepository(root, RuntimeCatalog(allow_trusted_models=allow_trusted))
    version = load_version(repo.read(name), 1, allow_trusted)
    try:
        yield version
    finally:
        for instance in version.instances:
            instance.close()
