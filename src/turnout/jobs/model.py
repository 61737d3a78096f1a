"""The model a batch job runs, loaded through the server's own path
(repository -> runtime -> ``load_version``), and one table through it.

Both engines call :meth:`BatchModel.open` (the Ray engine once per actor) and
:func:`predict_table`, so a batch job runs exactly what a server would.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from turnout.errors import ConfigError
from turnout.jobs.columns import BatchError, Gathered, OutputColumns, empty_predictions, predictions, with_predictions
from turnout.model.loader import LoadFailed, load_version
from turnout.model.repository import ModelRepository
from turnout.model.runtimes.base import LoadedModel
from turnout.model.signature import Signature
from turnout.observability.drift import PROFILE_FILE


@dataclass(frozen=True, slots=True)
class BatchModel:
    name: str
    version: int
    instance: LoadedModel
    signature: Signature
    features: dict[str, tuple[str, ...]]  # input -> the feature names its profile.json lists
    identity: str  # digest of the artifact: a resumed run must use the same model

    @classmethod
    def open(cls, repo: Path, name: str, version: int | None) -> BatchModel:
        try:
            source = ModelRepository(repo).read(name)
        except ConfigError as exc:
            raise BatchError(str(exc)) from None
        if not source.on_disk:
            raise BatchError(f"{source.directory}: no version directories")
        chosen = version if version is not None else source.versions[-1] if source.versions else source.on_disk[-1]
        if chosen not in source.on_disk:
            raise BatchError(f"{source.directory}: no version {chosen} (versions on disk: {list(source.on_disk)})")
        try:
            loaded = load_version(source, chosen)
        except LoadFailed as exc:
            raise BatchError(f"{name} version {chosen}: {exc}") from None
        if loaded.max_batch_size == 0:
            raise BatchError(
                f"{name} version {chosen}: max_batch_size is 0 (its tensors have no batch dimension), "
                "so rows cannot be run in batches"
            )
        artifact = source.artifacts(chosen)[0]
        stat = artifact.stat()
        identity = hashlib.sha256(f"{artifact.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
        features = _profile_features(source.version_dir(chosen) / PROFILE_FILE)
        return cls(name, chosen, loaded.instances[0], loaded.signature, features, identity)


def _profile_features(path: Path) -> dict[str, tuple[str, ...]]:
    """The profile's feature names for its input; none if there is no readable profile."""
    try:
        document = json.loads(path.read_text())
        return {str(document["input"]): tuple(str(f) for f in document["features"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def predict_table(
    model: LoadedModel, gathered: Gathered, outputs: Sequence[OutputColumns], batch_size: int
) -> pa.Table:
    """The good rows of a table with the prediction columns after its own,
    predicted ``batch_size`` rows per call."""
    rows = gathered.table.num_rows
    if rows == 0:
        return with_predictions(gathered.table, empty_predictions(outputs))
    names = [plan.spec.name for plan in outputs]
    parts: list[dict[str, np.ndarray[Any, Any]]] = []
    for start in range(0, rows, batch_size):
        feed = model.prepare({name: array[start : start + batch_size] for name, array in gathered.tensors.items()})
        try:
            parts.append(model.predict(feed, names))
        except Exception as exc:  # each runtime raises its own types
            raise BatchError(f"the model failed on a batch of rows: {exc}") from exc
    results = parts[0] if len(parts) == 1 else {n: np.concatenate([p[n] for p in parts]) for n in names}
    return with_predictions(gathered.table, predictions(results, outputs, rows))
