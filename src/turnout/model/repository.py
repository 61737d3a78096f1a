"""The model repository on disk: ``<root>/<model>/model.toml`` and
``<root>/<model>/<version>/<artifact>``.

Reading is separate from loading: this module only says what is there and
what is wrong with it, so ``turnout models validate`` can use it without
loading anything.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from turnout.errors import ConfigError
from turnout.model.config import CONFIG_FILE, ModelConfig, field_path, load_config, reason
from turnout.model.runtimes.base import ModelRuntime
from turnout.model.runtimes.catalog import RuntimeCatalog, RuntimeNotFound

# Names clients can put in a URL path and that cannot leave the repository.
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
# Versions are positive integers written plainly ("2", not "02" or "²").
_VERSION = re.compile(r"[1-9][0-9]{0,17}")


def is_model_name(name: str) -> bool:
    return _MODEL_NAME.fullmatch(name) is not None


def parse_version(text: str) -> int | None:
    """The version number ``text`` names, or None if it names none."""
    return int(text) if _VERSION.fullmatch(text) else None


@dataclass(frozen=True, slots=True)
class ModelSource:
    """One model directory as read from disk, before anything is loaded."""

    name: str
    directory: Path
    config: ModelConfig
    runtime: ModelRuntime
    versions: tuple[int, ...]  # the versions the policy selects, ascending
    on_disk: tuple[int, ...] = ()  # every version directory, ascending
    options: Any = None  # [runtime.options], checked by the runtime's own schema

    def version_dir(self, version: int) -> Path:
        return self.directory / str(version)

    def artifacts(self, version: int) -> list[Path]:
        """The files or directories the runtime loads this version from
        (the version directory itself for a runtime that names none)."""
        version_dir = self.version_dir(version)
        return [version_dir / name for name in self.runtime.artifacts] or [version_dir]

    def size_on_disk(self, version: int) -> int:
        """The artifacts' bytes (a directory's files summed); what cannot be read counts 0."""
        total = 0
        for artifact in self.artifacts(version):
            files = artifact.rglob("*") if artifact.is_dir() else [artifact]
            for path in files:
                with contextlib.suppress(OSError):
                    total += path.stat().st_size if path.is_file() else 0
        return total


class ModelRepository:
    def __init__(self, root: Path, runtimes: RuntimeCatalog | None = None) -> None:
        self.root = root
        self._runtimes = runtimes or RuntimeCatalog()

    def model_names(self) -> list[str]:
        """Every directory under the root that is not hidden, sorted."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def has(self, name: str) -> bool:
        return is_model_name(name) and (self.root / name).is_dir()

    def read(self, name: str) -> ModelSource:
        """Read and check one model directory; ``ConfigError`` says what is wrong."""
        directory = self.root / name
        if not is_model_name(name):
            raise ConfigError(str(directory), "not a valid model name (letters, digits, '_', '.', '-')")
        try:
            return self._read(name, directory)
        except OSError as exc:
            raise ConfigError(str(directory), f"cannot be read: {exc.strerror or exc}") from None

    def _read(self, name: str, directory: Path) -> ModelSource:
        if not directory.is_dir():
            raise ConfigError(str(directory), "no such model directory")
        config = load_config(directory)
        path = str(directory / CONFIG_FILE)
        try:
            runtime = self._runtimes.find(config.runtime.name, config.trusted)
        except RuntimeNotFound as exc:
            raise ConfigError(path, str(exc), "runtime") from None
        try:
            options = runtime.parse_options(config.runtime.options)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(path, reason(first), field_path(("runtime", "options", *first["loc"]))) from None
        on_disk = sorted(
            version for p in directory.iterdir() if p.is_dir() and (version := parse_version(p.name)) is not None
        )
        if not on_disk:
            raise ConfigError(str(directory), "no version directories (expected e.g. 1/model.onnx)")
        selected = config.version_policy.select(on_disk)
        if not selected:
            raise ConfigError(
                str(directory / "model.toml"),
                f"the policy selects none of the versions on disk {on_disk}",
                "version_policy",
            )
        return ModelSource(name, directory, config, runtime, tuple(selected), tuple(on_disk), options)
