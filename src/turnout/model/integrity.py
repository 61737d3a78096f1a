"""Artifact integrity: a version's artifact must have the sha256 its
``model.toml`` (``[checksums]``) or a ``<artifact>.sha256`` file beside it
names, checked before the runtime opens it. Without either, nothing is
checked (the default: a repository the operator controls)."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


class IntegrityError(Exception):
    """The artifact is not the one its checksum names; the message says both."""


def expected_sha256(artifact: Path, configured: str | None) -> str | None:
    """The configured checksum, else the one in ``<artifact>.sha256``
    (``sha256sum``'s format: the hex digest first), else None."""
    if configured is not None:
        return configured.lower()
    beside = artifact.with_name(artifact.name + ".sha256")
    if not beside.is_file():
        return None
    words = beside.read_text(encoding="utf-8", errors="replace").split()
    if not words or len(words[0]) != 64 or any(c not in "0123456789abcdefABCDEF" for c in words[0]):
        raise IntegrityError(f"{beside}: does not start with a sha256 (64 hex digits)")
    return words[0].lower()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(artifact: Path, configured: str | None) -> None:
    """Raise ``IntegrityError`` unless the artifact has its expected checksum (if any)."""
    expected = expected_sha256(artifact, configured)
    if expected is None:
        return
    actual = sha256_of(artifact)
    if actual != expected:
        raise IntegrityError(f"{artifact}: sha256 {actual} does not match the expected {expected}; refused")
