"""What a model directory holds, as short digests: a change of one means its
files changed. Names, sizes and modification times, not contents, so a scan
of a large repository stays cheap; ``model.toml`` is read (it is small, and an
edit within the same second must still count)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from turnout.model.config import CONFIG_FILE
from turnout.model.repository import ModelSource


def config_digest(model_dir: Path) -> str:
    try:
        return hashlib.sha256((model_dir / CONFIG_FILE).read_bytes()).hexdigest()[:16]
    except FileNotFoundError:
        return "-"


def version_digest(version_dir: Path, config: str) -> str:
    """The version's files (recursively) and the model's configuration."""
    digest = hashlib.sha256(config.encode())
    if version_dir.is_dir():
        for path in sorted(version_dir.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(version_dir)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def model_digest(model_dir: Path) -> str:
    """Everything the model directory holds: its configuration and every version directory."""
    config = config_digest(model_dir)
    digest = hashlib.sha256(config.encode())
    for entry in sorted(model_dir.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            digest.update(f"{entry.name}\0{version_digest(entry, '')}\n".encode())
    return digest.hexdigest()[:16]


def scan(root: Path, previous: dict[str, str] | None = None) -> dict[str, str]:
    """Every model directory under ``root`` (not hidden) and its digest. One
    that cannot be read this time (permissions, a file vanishing mid-scan)
    keeps its ``previous`` digest: an unreadable moment is not a removal."""
    found = {}
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            try:
                found[entry.name] = model_digest(entry)
            except OSError:
                if previous is not None and entry.name in previous:
                    found[entry.name] = previous[entry.name]
    return found


def digests_and_size(source: ModelSource, versions: list[int]) -> tuple[dict[int, str], int]:
    """Each version's digest, and the memory the versions will take (estimated:
    their artifacts' size on disk times the instances)."""
    config = config_digest(source.directory)
    digests = {v: version_digest(source.version_dir(v), config) for v in versions}
    size = sum(source.size_on_disk(version) for version in versions)
    return digests, size * source.runtime.instances(source.config)
